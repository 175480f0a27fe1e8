"""The AISEL section's failure counts: distinct failed masks and refused requests."""

from __future__ import annotations

from activesynth.synthesis.aisel_report import failed_cell, refused_of


def test_refused_requests_count_cached_failures_and_read_old_rounds() -> None:
    # a round that picked one failed mask twice more from the cache: 1 distinct, 3 requests
    s = {"failed": 1, "refused": 3, "failures": [{"candidate": i} for i in range(3)]}
    assert refused_of(s) == 3
    # rounds recorded before "refused" was kept: one failure record per refused pick
    assert refused_of({"failed": 1, "failures": [{}, {}]}) == 2
    assert refused_of({"failed": 0}) == 0
    assert failed_cell(1, 3) == "1 distinct failed mask, 3 requests"
    assert failed_cell(2, 1 + 1) == "2 distinct failed masks, 2 requests"
