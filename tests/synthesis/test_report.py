"""synthesis/report.py: quality options, per-batch figures, the gallery and the run readers."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.data.phantoms import make_phantoms
from activesynth.errors import ConfigError, DataError
from activesynth.synthesis.classic import ClassicAugmentation
from activesynth.synthesis.report import (
    QUALITY_DEFAULTS,
    batch_quality,
    collect_synthesis,
    normalise_quality,
    quality_table,
    write_gallery,
)


def test_quality_options() -> None:
    assert normalise_quality(None) == QUALITY_DEFAULTS == normalise_quality(True)
    assert normalise_quality(False)["enabled"] is False
    assert normalise_quality({"max_items": 10})["max_items"] == 10
    for bad, msg in (
        ({"max_items": 2}, "max_items must be an integer >= 5"),
        ({"galery": 2}, "Did you mean 'gallery'"),
        ({"reference": 3}, "checkpoint path"),
        ("yes", "must be a mapping"),
    ):
        with pytest.raises(ConfigError, match=msg):
            normalise_quality(bad)


def test_batch_quality_without_a_model_and_the_gallery(tmp_path) -> None:
    data = make_phantoms(20, size=32, seed=0)
    gen = ClassicAugmentation()
    src = data.subset(np.arange(4))
    cands = gen.propose(src, 3, rng=np.random.default_rng(0))
    figs, per_item = batch_quality(
        cands,
        pool_data=data,
        fitted_on=np.arange(4),
        holdout=np.arange(4, 20),
        task="seg",
        model=None,
        model_name="none",
        rng=np.random.default_rng(1),
        max_items=8,
        max_real=10,
    )
    assert figs["n_measured"] == 8 and figs["n_real"] == 10 and figs["n_holdout"] == 10
    assert 0 <= figs["realism_auc"] <= 1 and figs["features"] == "raw pixels"
    assert "label fidelity needs a reference model" in figs["skipped"]
    assert figs["memorisation"]["ratio"] > 0 and np.isnan(per_item).all()
    again, _ = batch_quality(
        cands,
        pool_data=data,
        fitted_on=np.arange(4),
        holdout=np.arange(4, 20),
        task="seg",
        model=None,
        model_name="none",
        rng=np.random.default_rng(1),
        max_items=8,
        max_real=10,
    )
    assert again == figs  # seeded subsamples: same rng, same figures
    with pytest.raises(DataError, match="not in phantom"):
        batch_quality(
            cands,
            pool_data=data.subset(np.arange(2, 20)),
            fitted_on=np.arange(2),
            holdout=np.arange(0),
            task="seg",
            model=None,
            model_name="none",
            rng=np.random.default_rng(1),
        )
    png = write_gallery(
        tmp_path / "g.png",
        data.images[:3],
        cands.masks[:3],
        cands.images[:3],
        scores=[0.3, 0.2, 0.1],
        fidelity=[np.nan, 0.5, 1.0],
        title="t",
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left behind
    with pytest.raises(DataError, match="as many sources"):
        write_gallery(tmp_path / "h.png", data.images[:2], None, cands.images[:3])


def test_readers_refuse_a_folder_without_history_and_format_missing_figures(tmp_path) -> None:
    with pytest.raises(DataError, match=r"no history\.json"):
        collect_synthesis(tmp_path)
    row = {"round": 1, "n_expert_labels": 5, "generator": "classic", "added": 2, "generated": 9}
    table = quality_table([row])
    assert "| 1 | 5 | classic | 2 / 9 | - | - |" in table


def test_synthetic_items_note_names_each_arms_own_sources_protocol() -> None:
    """An arm that read unbudgeted labels is described by the protocol it used: the nodule
    arms' ``labelled-dataset-masks`` is not Mahapatra's ``pool-masks``."""
    from activesynth.bench.report import synthetic_items_markdown

    def rounds(sources: str, unbudgeted: bool) -> dict:
        row = {"seed": 0, "round": 1, "generator": "cgan", "sources": sources}
        row |= {"generated": 8, "rejected": 0, "added": 4, "n_synthetic": 4}
        return {"rounds": [{**row, "reads_unbudgeted_labels": unbudgeted}], "min": 4, "max": 4}

    group = {
        "dataset": "jsrt",
        "schedule": "s",
        "strategies": ["mahapatra", "nodule", "honest"],
        "synthetic": {
            "mahapatra": rounds("pool-masks", True),
            "nodule": rounds("labelled-dataset-masks", True),
            "honest": rounds("labelled", False),
        },
    }
    md = synthetic_items_markdown({"groups": [group]})
    note = next(line for line in md.splitlines() if line.startswith("_Note_"))
    assert "mahapatra (`pool-masks`: every pool item's manual mask, Mahapatra" in note
    assert "nodule (`labelled-dataset-masks`: the expert-labelled items with the dataset" in note
    assert note.count("Mahapatra") == 1 and "honest" not in note


def test_synthetic_items_table_says_when_a_gate_kept_a_batch_out() -> None:
    from activesynth.bench.report import synthetic_items_markdown

    row = {"seed": 0, "generator": "cgan", "sources": "labelled", "generated": 800}
    row |= {"rejected": 0, "reads_unbudgeted_labels": False}
    gated = {"passed": False, "reasons": ["fidelity 0.210 < 0.5"]}
    rounds = [
        {**row, "round": 1, "added": 0, "n_synthetic": 0, "gate": gated},
        {**row, "round": 2, "added": 16, "n_synthetic": 16, "gate": {"passed": True}},
    ]
    group = {
        "dataset": "jsrt",
        "schedule": "s",
        "strategies": ["gated"],
        "synthetic": {"gated": {"rounds": rounds, "min": 16, "max": 16}},
    }
    md = synthetic_items_markdown({"groups": [group]})
    assert (
        "| gated | 0 | 1 | cgan | labelled | 800 | 0 | 0 (gated: fidelity 0.210 < 0.5) | 0 |" in md
    )
    assert "| gated | 0 | 2 | cgan | labelled | 800 | 0 | 16 | 16 |" in md
