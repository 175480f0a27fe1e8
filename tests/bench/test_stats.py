"""Statistics on hand-made curves and constructed groups whose answers are known: AULC,
labels-to-reach, seed-paired tests, Holm, the hierarchical bootstrap, curves and tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from activesynth.bench import stats


def test_aulc_of_constant_and_linear_curves() -> None:
    f = np.array([0.1, 0.2, 0.35, 0.5])
    assert stats.aulc(f, np.full(4, 0.7)) == pytest.approx(0.7)
    assert stats.aulc(f, f) == pytest.approx(0.3)  # mean of y = x over [0.1, 0.5]
    assert stats.aulc(f[:1], np.array([0.4])) == pytest.approx(0.4)
    assert stats.aulc(f, np.array([0.2, np.nan, 0.2, 0.2])) == pytest.approx(0.2)
    assert math.isnan(stats.aulc(f, np.full(4, np.nan)))


def test_labels_to_reach_interpolates_between_rounds() -> None:
    f = np.array([0.1, 0.2, 0.3])
    n = np.array([10, 20, 30])
    v = np.array([0.5, 0.7, 0.9])
    assert stats.labels_to_reach(f, n, v, 0.8) == pytest.approx((0.25, 25.0))
    assert stats.labels_to_reach(f, n, v, 0.4) == pytest.approx((0.1, 10.0))  # first round
    assert stats.labels_to_reach(f, n, v, 0.95) is None  # not reached
    # the first crossing counts, even if the curve dips afterwards
    assert stats.labels_to_reach(f, n, np.array([0.5, 0.9, 0.6]), 0.7) == pytest.approx(
        (0.15, 15.0)
    )
    # lower is better (HD95): reach = value <= target
    hd = np.array([20.0, 10.0, 5.0])
    assert stats.labels_to_reach(f, n, hd, 15.0, higher=False) == pytest.approx((0.15, 15.0))
    assert stats.reach_target(10.0, 0.9, higher=False) == pytest.approx(10.0 / 0.9)
    assert stats.reach_target(0.8, 0.9, higher=True) == pytest.approx(0.72)


def test_wilcoxon_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.7, 0.05, 12)
    b = a - rng.normal(0.03, 0.02, 12)
    res = stats.wilcoxon_test(a, b)
    ref = sps.wilcoxon(a, b)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["statistic"] == pytest.approx(ref.statistic)
    assert res["n"] == 12
    five = stats.wilcoxon_test([1, 2, 3, 4, 5], [0, 1, 2, 3, 4])
    assert five["p"] == pytest.approx(0.0625)  # the smallest two-sided p with 5 pairs
    # identical samples: no evidence of any difference, p = 1 (not "undefined")
    assert stats.wilcoxon_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["p"] == 1.0
    assert stats.wilcoxon_test([1.0], [0.0])["note"] == "fewer than 2 pairs"


def test_interpolate_at_stays_inside_the_run() -> None:
    f, v = np.array([0.1, 0.3]), np.array([0.2, 0.6])
    assert stats.interpolate_at(f, v, 0.2) == pytest.approx(0.4)
    assert stats.interpolate_at(f, v, 0.305) == pytest.approx(0.6)  # within tolerance
    assert math.isnan(stats.interpolate_at(f, v, 0.5))


def test_interpolate_at_a_fraction_next_to_a_round_takes_that_round() -> None:
    # 2 % asked, the round has 49 / 2463 = 1.99 %: the round's value, not a sliver of the next
    f, v = np.array([49, 98, 147]) / 2463, np.array([0.4, 0.6, 0.7])
    assert stats.interpolate_at(f, v, 0.02) == 0.4
    assert stats.interpolate_at(f, v, 0.04) == 0.6
    assert stats.interpolate_at(f, v, 0.03) == pytest.approx(
        0.4 + 0.2 * (0.03 - f[0]) / (f[1] - f[0])
    )
    assert stats.interpolate_at(np.array([0.1]), np.array([0.5]), 0.105) == 0.5


def _rows() -> list[dict[str, Any]]:
    """Two strategies x 3 seeds x 3 rounds, 'good' = 'random' + 0.1, pool of 100."""
    rows = []
    for s, bonus in (("random", 0.0), ("good", 0.1)):
        for seed in range(3):
            for r, f in enumerate((0.1, 0.2, 0.3)):
                dice = 0.4 + f + bonus + 0.01 * seed
                rows.append(
                    {
                        "run_id": f"{s}-{seed}",
                        "dataset": "toy",
                        "strategy": s,
                        "seed": seed,
                        "schedule": "a",
                        "task": "seg",
                        "round": r,
                        "n_labelled": int(f * 100),
                        "fraction": f,
                        "val_score": dice,
                        "collapsed": False,
                        "dice_patient_tumour": dice,
                        "hd95_px_patient_tumour": 10 - 10 * dice,
                    }
                )
    return rows


def test_table_bolds_every_mean_that_prints_like_the_best() -> None:
    g = stats.summarise_group(_rows(), full_data=None, order=["random", "good"])
    cells = g["table"]["cells"]
    # make random 0.0001 below good in the first column: printed with 3 digits they tie
    first = cells["good"]["dice_patient_tumour"][0]
    cells["random"]["dice_patient_tumour"][0] = dict(first, mean=first["mean"] - 1e-4)
    rows = stats.markdown_table(g).splitlines()
    good, rand = (next(r for r in rows if r.startswith(f"| {s} |")) for s in ("good", "random"))
    assert good.split(" | ")[1].startswith("**") and rand.split(" | ")[1].startswith("**")
    # the other columns are not ties: only the best is bold
    assert good.split(" | ")[2].startswith("**") and not rand.split(" | ")[2].startswith("**")


def test_curves_tables_and_ranking() -> None:
    g = stats.summarise_group(_rows(), full_data=lambda m: 0.8, order=["random", "good"])
    assert g["metric"] == "dice_patient_tumour"
    assert g["strategies"] == ["random", "good"]
    assert g["ranking"] == ["good", "random"]
    c = g["curves"]["dice_patient_tumour"]["good"]
    assert c["mean"] == pytest.approx([0.61, 0.71, 0.81])
    assert c["sd"] == pytest.approx([0.01] * 3)
    assert c["n"] == [3, 3, 3]
    assert g["aulc"]["good"]["mean"] == pytest.approx(0.71)
    assert g["aulc"]["random"]["per_seed"][0] == pytest.approx(0.6)
    # 90% of 0.8 = 0.72: good seed s has 0.7 + 0.01 s at 20%, 0.8 + 0.01 s at 30%
    r90 = g["labels_to_reach"]["good"]["90"]
    assert r90["reached"] == 3
    assert r90["fraction_mean"] == pytest.approx(np.mean([0.22, 0.21, 0.20]))
    assert g["labels_to_reach"]["random"]["99"]["reached"] == 0
    assert g["full_data"]["kind"] == "external"  # no `full` runs: the grid's figure, labelled
    assert "external, unmatched reference" in stats.reference_text(g)
    assert g["table"]["metrics"] == ["dice_patient_tumour", "hd95_px_patient_tumour"]
    assert g["table"]["best"]["dice_patient_tumour"] == [["good"]] * 3
    assert g["table"]["best"]["hd95_px_patient_tumour"] == [["good"]] * 3  # lower is better
    md = stats.markdown_table(g)
    assert "| good | **0.610 ± 0.010** |" in md
    assert "AULC 10%–30%" in md
    assert "0/3 reached (all beyond their budgets, 30 images)" in stats.markdown_reach(g)
    w = g["wilcoxon"]
    assert (w["a"], w["b"]) == ("good", "random")
    assert w["aulc"]["n"] == 3
    assert w["aulc"]["wilcoxon"]["p"] == pytest.approx(
        sps.wilcoxon([0.71, 0.72, 0.73], [0.61, 0.62, 0.63]).pvalue
    )
    assert "Post hoc" in stats.markdown_wilcoxon(g)


def test_unknown_metric_is_a_clear_error() -> None:
    from activesynth.errors import DataError

    with pytest.raises(DataError, match="Did you mean 'dice_patient_tumour'"):
        stats.summarise_group(_rows(), metric="dice_patient_tumor")


def test_comparisons_say_what_they_pair() -> None:
    # no per-patient values (as for classification): the label-percentage tests pair seeds
    g = stats.summarise_group(_rows(), full_data=None, reference="random")
    md = stats.markdown_comparisons(g)
    assert "| good vs random |" in md
    assert (
        "Paired by seed (n = 3 seeds" in md
        and "(seeds only: this metric has no per-patient values)" in md
    )
    assert "Tests pair the runs of two strategies by seed (n = 3 seeds" in stats.pairing_text(g)
    assert "nothing within seeds (this metric has no per-patient values)" in stats.pairing_text(g)
    assert "| good vs random | at 20% | 3 | +0.1000 | [0.1000, 0.1000] |" in md


# ---------------------------------------------------------------- building blocks, known answers
def test_paired_t_test_matches_scipy_and_handles_degenerate_cases() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.7, 0.05, 6)
    b = a - rng.normal(0.02, 0.02, 6)
    res = stats.paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["statistic"] == pytest.approx(ref.statistic)
    assert res["df"] == 5
    assert stats.paired_t_test(a, a)["p"] == 1.0
    const = stats.paired_t_test(a + 0.1, a)
    assert math.isnan(const["p"]) and "no variance" in const["note"]


def test_holm_adjusts_in_sorted_order_and_keeps_nan() -> None:
    adj = stats.holm([0.01, 0.04, np.nan, 0.03])
    # m = 3 finite: 0.01 * 3, max(0.03, 0.03 * 2), max(0.06, 0.04 * 1)
    assert adj[[0, 3, 1]] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adj[2])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_weights_reproduce_interpolation_and_trapezoid() -> None:
    f = np.array([0.1, 0.2, 0.35, 0.5])
    v = np.array([0.3, 0.5, 0.55, 0.7])
    w = stats.interp_weights(f, 0.3)
    assert w is not None and w.sum() == pytest.approx(1.0)
    assert w @ v == pytest.approx(np.interp(0.3, f, v))
    assert stats.interp_weights(f, 0.6) is None
    # AULC over a common range: the interpolated ends plus the inner rounds, by trapezoid
    wa = stats.aulc_weights(f, 0.15, 0.4)
    assert wa is not None
    knots = np.array([0.15, 0.2, 0.35, 0.4])
    assert wa @ v == pytest.approx(np.trapezoid(np.interp(knots, f, v), knots) / 0.25)
    assert stats.aulc(f, f, 0.2, 0.4) == pytest.approx(0.3)  # mean of y = x over [0.2, 0.4]
    assert math.isnan(stats.aulc(f, v, 0.2, 0.7))  # the run does not cover the range
    # a NaN round with zero weight does not spoil a snapped value
    assert stats.interpolate_at(f, np.array([0.3, np.nan, 0.55, 0.7]), 0.1) == 0.3


def test_bootstrap_identical_and_constant_shift_give_exact_intervals() -> None:
    zeros = [np.zeros(7) for _ in range(5)]
    assert stats.hierarchical_bootstrap(zeros, n_boot=200) == (0.0, 0.0)
    lo, hi = stats.hierarchical_bootstrap([np.full(7, 0.05) for _ in range(5)], n_boot=200)
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
    x = [np.random.default_rng(k).normal(k * 0.01, 0.05, 9) for k in range(4)]
    assert stats.hierarchical_bootstrap(x, seed=3) == stats.hierarchical_bootstrap(x, seed=3)
    assert stats.hierarchical_bootstrap(x, seed=3) != stats.hierarchical_bootstrap(x, seed=4)


def test_bootstrap_widens_with_seed_variance_when_patients_stay_fixed() -> None:
    rng = np.random.default_rng(0)
    patients = [rng.normal(0, 0.05, 40) for _ in range(6)]
    seed_dirs = np.array([1.0, -1.0, 0.5, -0.5, 0.8, -0.8])
    widths = []
    for scale in (0.0, 0.02, 0.1):
        per_seed = [p + scale * d for p, d in zip(patients, seed_dirs, strict=True)]
        lo, hi = stats.hierarchical_bootstrap(per_seed, n_boot=2000, seed=0)
        assert lo < np.mean([x.mean() for x in per_seed]) < hi
        widths.append(hi - lo)
    assert widths[0] < widths[1] < widths[2]
    assert widths[2] > 2 * widths[0]
    # the nested bootstrap is wider than one that resamples only seeds when patients vary
    seed_only = stats.hierarchical_bootstrap([np.array([p.mean()]) for p in patients])
    lo, hi = stats.hierarchical_bootstrap(patients)
    assert hi - lo > seed_only[1] - seed_only[0]


# ------------------------------------------------------------- constructed groups, known answers
FR = (0.1, 0.2, 0.3, 0.4)
PATIENTS = [f"p{i}" for i in range(6)]


def _group(
    effects: dict[str, float | np.ndarray],
    *,
    seeds: Sequence[int] = range(5),
    fractions: dict[str, Sequence[float]] | None = None,
    full: dict[int, float] | None = None,
    schema: dict[str, int] | None = None,
) -> tuple[list[dict[str, Any]], Any]:
    """Rows and a patient_values reader. Per-patient Dice = 0.4 + f + seed effect + patient
    effect (zero mean within a seed) + strategy effect (a number, or one per seed); a run's row
    value is its patients' mean. ``full``: seed -> that seed's full-data Dice (a `full` run)."""
    rng = np.random.default_rng(0)
    seed_eff = rng.normal(0, 0.02, 100)
    pat = rng.normal(0, 0.05, (100, len(PATIENTS)))
    pat -= pat.mean(axis=1, keepdims=True)
    rows: list[dict[str, Any]] = []
    pv: dict[tuple[str, int], dict[str, float]] = {}

    def add(rid: str, s: str, k: int, r: int, f: float, per: dict[str, float]) -> None:
        pv[(rid, r)] = per
        rows.append(
            {
                "run_id": rid,
                "dataset": "toy",
                "strategy": s,
                "seed": k,
                "schedule": "a",
                "task": "seg",
                "round": r,
                "n_labelled": round(f * 100),
                "fraction": f,
                "val_score": 0.0,
                "collapsed": False,
                "metrics_schema": (schema or {}).get(rid, 2),
                "dice_patient_tumour": float(np.mean(list(per.values()))),
            }
        )

    for s, eff in effects.items():
        for k in seeds:
            e = float(eff if np.isscalar(eff) else eff[k])
            for r, f in enumerate((fractions or {}).get(s, FR)):
                base = 0.4 + f + seed_eff[k] + e
                add(f"{s}-{k}", s, k, r, f, {p: base + pat[k, i] for i, p in enumerate(PATIENTS)})
    for k, v in (full or {}).items():
        add(f"full-{k}", stats.FULL, k, 0, 1.0, {p: v + pat[k, i] for i, p in enumerate(PATIENTS)})

    def patient_values(run_id: str, round_: int, measure: str, cls: str) -> dict[str, float]:
        return pv.get((run_id, round_), {}) if measure == "dice" else {}

    return rows, patient_values


def _summary(rows: list[dict[str, Any]], pv: Any, **kw: Any) -> dict[str, Any]:
    return stats.summarise_group(rows, patient_values=pv, reference="ref", n_boot=500, **kw)


def test_a_copy_of_the_reference_has_p_one_and_cis_covering_zero() -> None:
    rows, pv = _group({"ref": 0.0, "same": 0.0, "better": 0.05})
    g = _summary(rows, pv)
    same = next(c for c in g["comparisons"] if c["a"] == "same")
    for q in [same["aulc"], *same["at_fraction"]]:
        assert q["n"] == 5 and q["delta"] == 0.0
        assert q["ci"][0] <= 0.0 <= q["ci"][1]
        assert q["wilcoxon"]["p"] == 1.0 and q["ttest"]["p"] == 1.0
        assert q["wilcoxon"]["p_holm"] == 1.0
        assert q["resampled"] == "seeds, then patients within seeds"
        assert q["n_patients"] == 5 * len(PATIENTS)


def test_a_fixed_gain_on_every_seed_gives_that_delta_and_the_smallest_p() -> None:
    rows, pv = _group({"ref": 0.0, "same": 0.0, "better": 0.05})
    g = _summary(rows, pv)
    better = next(c for c in g["comparisons"] if c["a"] == "better")
    assert better["aulc_diff"] == pytest.approx(0.05)
    for q in [better["aulc"], *better["at_fraction"]]:
        assert q["delta"] == pytest.approx(0.05)
        assert q["ci"] == pytest.approx([0.05, 0.05])
        assert q["wilcoxon"]["p"] == pytest.approx(0.0625)  # 5 seeds, all ahead
        # Holm over the two strategies compared with ref: 0.0625 * 2
        assert q["wilcoxon"]["p_holm"] == pytest.approx(0.125)
    # the cell and its test describe the same fraction: the delta is the cells' difference
    cells = g["table"]["cells"]
    for j, q in enumerate(better["at_fraction"]):
        diff = cells["better"]["dice_patient_tumour"][j]["mean"]
        diff -= cells["ref"]["dice_patient_tumour"][j]["mean"]
        assert q["delta"] == pytest.approx(diff, abs=1e-12)
    md = stats.markdown_comparisons(g)
    assert "| better vs ref | AULC 10%–40% | 5 (30 pt) | +0.0500 | [0.0500, 0.0500] |" in md
    assert "0.062 (p_holm = 0.12)" in md  # the Wilcoxon column: p_holm only, no verdict
    assert "Holm: across the 2 strategies compared with ref" in md
    # the t-test of an identical gain on every seed has no variance: only the Wilcoxon is
    # tested, and nothing is significant, which the table says in words
    assert "**No significant difference**: no comparison is significant after Holm" in md
    # ... and says why the paired t gave no verdict, naming the constant gain
    assert "(AULC or a label %) differ by the same amount on every seed, where the paired t" in md
    assert "better vs ref AULC 10%–40% (Δ +0.0500 on every seed)" in md


def test_holm_verdicts_and_the_smallest_possible_p_in_words() -> None:
    assert stats.holm_verdict({"p": 0.31, "p_holm": 0.62}) == (
        "no significant difference (p_holm = 0.62)"
    )
    assert stats.holm_verdict({"p": 0.005, "p_holm": 0.01}) == "significant (p_holm = 0.01 < 0.05)"
    assert stats.holm_verdict({"p": 0.3}) == "" and stats.holm_verdict({"p_holm": math.nan}) == ""
    assert stats.smallest_p(5) == 0.0625 and stats.smallest_p(6) == 0.03125
    assert "no Wilcoxon test can be significant" in stats.smallest_p_text(4)
    assert stats.smallest_p_text(6) == "With 6 seeds the smallest possible Wilcoxon p is 0.0312."
    assert "normal approximation" in stats.smallest_p_text(60)


def test_significance_text_names_the_significant_comparisons() -> None:
    rows, pv = _group({"ref": 0.0, "noisy": 0.05 + 0.01 * np.array([1.0, -1.0, 0.5, -0.2, 0.7])})
    g = _summary(rows, pv)
    text = stats.significance_text(g)
    t = g["comparisons"][0]["aulc"]["ttest"]
    assert t["p_holm"] < stats.ALPHA  # a 0.05 gain with SD 0.008 over 5 seeds
    assert text.startswith(
        "Significant after Holm correction (α = 0.05; the verdict is the paired t"
    )
    assert "noisy vs ref AULC" in text and "Every other comparison" in text
    assert "paired t p_holm = " in text and "Wilcoxon p_holm = 0.062" in text
    assert "cannot go below p = 0.0625 with 5 seeds" in text
    assert "significant (p_holm = " in stats.markdown_comparisons(g)


def test_the_verdict_is_the_primary_tests_not_either_test() -> None:
    # 6 seeds all ahead (Wilcoxon's smallest p, 0.031) but one huge seed makes the t-test's p
    # large: "either test" would call it significant, the primary (paired t) does not
    gain = np.array([0.001, 0.001, 0.001, 0.001, 0.001, 0.3])
    rows, pv = _group({"ref": 0.0, "odd": gain}, seeds=range(6))
    g = _summary(rows, pv)
    q = g["comparisons"][0]["aulc"]
    assert q["wilcoxon"]["p_holm"] < stats.ALPHA <= q["ttest"]["p_holm"]
    assert stats.PRIMARY_TEST == "ttest"
    assert stats.significance_text(g).startswith("**No significant difference**")


def test_definitions_cover_every_statistic_with_the_reports_parameters() -> None:
    defs = stats.definitions(n_boot=321, boot_seed=7)
    terms = [d["term"] for d in defs]
    for t in ("AULC", "Δ (a − b)", "95% CI", "Wilcoxon p", "paired t p", "Holm"):
        assert t in terms
    assert "Labels to reach p% of full data" in terms and "Labels (x-axis)" in terms
    ci = next(d["text"] for d in defs if d["term"] == "95% CI")
    assert "321 resamples (seed 7)" in ci and "t × SE" in ci


def test_interval_is_the_t_interval_over_seeds_and_covers_with_few_seeds() -> None:
    from activesynth.errors import DataError

    assert stats.t_scale(5) == pytest.approx(sps.t.ppf(0.975, 4) * np.sqrt(5 / 4))
    with pytest.raises(DataError, match="at least 2 seeds"):
        stats.t_scale(1)
    # one value per seed: the paired t interval over seeds (up to bootstrap noise)
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.05])
    per = [np.array([x]) for x in d]
    lo, hi = stats.hierarchical_bootstrap(per, n_boot=20000)
    half_t = sps.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert lo == pytest.approx(d.mean() - half_t, rel=0.03)
    assert hi == pytest.approx(d.mean() + half_t, rel=0.03)
    # with 3 seeds a percentile interval cannot leave the seeds' range; this one does
    d3 = [np.array([x]) for x in (0.1, 0.5, 0.3)]
    p_lo, p_hi = stats.hierarchical_bootstrap(d3, n_boot=4000, method="percentile")
    t_lo, t_hi = stats.hierarchical_bootstrap(d3, n_boot=4000)
    assert p_lo >= 0.1 - 1e-12 and p_hi <= 0.5 + 1e-12
    assert t_lo < -0.1 and t_hi > 0.7  # t interval: 0.3 -+ 4.30 * 0.2 / sqrt(3) = (-0.20, 0.80)
    # coverage with 4 seeds of normal data, nominal 95 % (60 replications: loose bounds)
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(60):
        x = rng.normal(0.0, 1.0, 4)
        lo, hi = stats.hierarchical_bootstrap([np.array([v]) for v in x], n_boot=400)
        hits += lo <= 0.0 <= hi
    assert hits >= 52  # a percentile interval covers about 80 % (48 of 60)
    with pytest.raises(DataError, match="method"):
        stats.hierarchical_bootstrap(per, method="bca")


def test_cis_widen_with_seed_variance_of_the_gain() -> None:
    dirs = np.array([1.0, -1.0, 0.5, -0.2, 0.7])
    widths = []
    for scale in (0.005, 0.05):
        rows, pv = _group({"ref": 0.0, "noisy": 0.02 + scale * dirs})
        q = _summary(rows, pv)["comparisons"][0]["aulc"]
        assert q["ci"][0] <= q["delta"] <= q["ci"][1]
        widths.append(q["ci"][1] - q["ci"][0])
    assert widths[1] > 3 * widths[0]


def test_fewer_than_three_seeds_says_no_test_rather_than_p_one() -> None:
    rows, pv = _group({"ref": 0.0, "same": 0.0}, seeds=range(2))
    g = _summary(rows, pv)
    q = g["comparisons"][0]["aulc"]
    assert math.isnan(q["wilcoxon"]["p"]) and math.isnan(q["ttest"]["p"])
    assert all(math.isnan(x) for x in q["ci"])  # no interval from 2 seeds either
    md = stats.markdown_comparisons(g)
    assert "no test possible: 2 paired seeds (at least 3)" in md
    assert "With fewer than 3 seeds no test is possible." in stats.pairing_text(g)
    assert "| 1 " not in md.split("\n", 3)[-1]  # no p printed as 1


def test_labels_to_reach_uses_each_seeds_own_full_run_and_counts_failures() -> None:
    full = {k: 0.8 for k in range(5)}
    full[0] = 2.0  # seed 0's full run is out of reach
    del full[4]  # and seed 4 has none
    rows, pv = _group({"ref": 0.0, "better": 0.05}, full=full)
    g = _summary(rows, pv)
    assert g["full_data"]["kind"] == "matched"
    assert g["full_data"]["missing_seeds"] == [4]
    assert "full" not in g["strategies"] and "full" not in g["ranking"]
    r90 = g["labels_to_reach"]["better"]["90"]
    # target 0.72: 0.45 + f + seed effect >= 0.72 for seeds 1-3; seed 0 never; seed 4 unknown
    assert (r90["reached"], r90["runs"], r90["no_full_seeds"]) == (3, 4, [4])
    assert r90["per_seed"][0] is None
    assert math.isnan(r90["n_labelled_mean"])  # never a mean over the successful seeds alone
    cell = stats.markdown_reach(g)
    assert "3/4 reached; median" in cell and "1 run beyond its budget, 40 images" in cell
    assert "no full run for seed 4" in cell
    assert "| full data |" in cell
    assert "no full run for seed 4" in stats.reference_text(g)
    pct = g["pct_of_full"]["ref"]
    assert pct["n"] == 4 and pct["at"] == pytest.approx(0.4)


def test_no_full_run_and_no_figure_is_said() -> None:
    rows, pv = _group({"ref": 0.0, "better": 0.05})
    g = _summary(rows, pv)
    assert g["full_data"]["kind"] == "none"
    assert 'set `"full": true` in the grid' in stats.reference_text(g)
    # said once: the report prints reference_text above the (empty) reach table
    assert "full" not in stats.markdown_reach(g).replace("full-data", "")


def test_aulc_uses_one_common_range_and_states_it() -> None:
    rows, pv = _group({"ref": 0.0, "short": 0.0}, fractions={"short": (0.1, 0.2, 0.3)})
    g = _summary(rows, pv)
    span = g["aulc_range"]
    assert (span["lo"], span["hi"]) == pytest.approx((0.1, 0.3))
    assert "ref 10.0–40.0%" in span["note"]
    # same curve over the same range: equal AULC although ref ran further
    assert g["aulc"]["ref"]["mean"] == pytest.approx(g["aulc"]["short"]["mean"])
    assert "AULC 10%–30%" in stats.markdown_table(g)
    assert "different label-fraction ranges" in stats.table_caption(g, g["metric"])


def test_a_run_whose_x_never_advances_is_left_out_of_the_aulc_range() -> None:
    # e.g. a synthesis arm on the physics-call axis that never found a candidate to pay for
    rows, pv = _group({"ref": 0.0, "stuck": 0.0}, fractions={"stuck": (0.1, 0.1, 0.1)})
    g = _summary(rows, pv)
    span = g["aulc_range"]
    assert (span["lo"], span["hi"]) == pytest.approx((0.1, 0.4))  # not collapsed to 0.1
    assert len(span["stalled"]) == 5 and all(s.startswith("stuck/") for s in span["stalled"])
    assert "x never advances" in span["note"]
    assert math.isnan(g["aulc"]["stuck"]["mean"]) and g["aulc"]["stuck"]["n"] == 0
    assert g["aulc"]["ref"]["n"] == 5


def test_aulc_is_refused_when_runs_share_no_range() -> None:
    rows, pv = _group({"ref": 0.0, "late": 0.0}, fractions={"late": (0.6, 0.7)})
    g = _summary(rows, pv)
    assert "share no label-fraction range" in g["aulc_range"]["refused"]
    assert all(math.isnan(g["aulc"][s]["mean"]) for s in g["strategies"])
    assert "AULC (none: see note)" in stats.markdown_table(g)
    assert "not computed" in stats.table_caption(g, g["metric"])


def test_cells_with_fewer_runs_or_patients_show_their_n() -> None:
    rows, pv = _group({"ref": 0.0, "better": 0.05})
    rows = [r for r in rows if r["run_id"] != "better-4"]

    def fewer_patients(run_id: str, round_: int, measure: str, cls: str) -> dict[str, float]:
        vals = dict(pv(run_id, round_, measure, cls))
        if run_id == "ref-0" and round_ == 1:
            vals.pop("p0")
        return vals

    g = _summary(rows, fewer_patients, fractions=[0.1, 0.2])
    md = stats.markdown_table(g)
    better = next(r for r in md.splitlines() if r.startswith("| better |"))
    ref = next(r for r in md.splitlines() if r.startswith("| ref |"))
    assert better.count("(n=4 runs)") == 3  # both columns and AULC
    assert "(n=29 patients)" in ref.split(" | ")[2]  # 20 %: one patient missing in one run
    assert "(n=" not in ref.split(" | ")[1]
    assert "n = 5 runs (seeds) per cell" in stats.table_caption(g, g["metric"])


def test_mixed_metric_schemas_are_refused_naming_the_runs() -> None:
    from activesynth.errors import DataError

    rows, pv = _group({"ref": 0.0, "better": 0.05}, schema={"ref-3": 1})
    with pytest.raises(DataError) as err:
        _summary(rows, pv)
    msg = str(err.value)
    assert "metrics_schema 1 (1 runs), metrics_schema 2 (9 runs)" in msg
    assert "runs/ref-3" in msg and "rerun `activesynth bench` with the same config" in msg


def test_bold_and_ranking_compare_strategies_on_the_seeds_all_finished() -> None:
    # "late" finished only seeds 0-2, which happen to be its good ones; on seeds 0-2 "ref" is
    # better. Own-seed means would bold and rank "late" first: that compares seed sets.
    rows, pv = _group({"ref": np.array([0.10, 0.10, 0.10, -0.2, -0.2]), "late": 0.05})
    rows = [r for r in rows if not (r["strategy"] == "late" and r["seed"] >= 3)]
    g = _summary(rows, pv)
    assert g["aulc"]["late"]["mean"] > g["aulc"]["ref"]["mean"]  # own seeds
    assert g["ranking"][0] == "ref" and g["ranking_seeds"] == [0, 1, 2]
    assert all(b == [] for b in g["table"]["best"][g["metric"]])
    table = stats.markdown_table(g)
    assert "**" not in table
    assert "average different seeds (no bold there" in stats.table_caption(g, g["metric"])
    assert (
        "over the 3 seeds every strategy with an AULC finished (seeds 0, 1, 2)"
        in stats.markdown_wilcoxon(g)
    )
    # complete grids: plain means, bold as before
    rows, pv = _group({"ref": 0.0, "better": 0.05})
    g = _summary(rows, pv)
    assert g["ranking_seeds"] is None and g["ranking"][0] == "better"
    assert "**" in stats.markdown_table(g)


def test_censored_median_is_exact_or_a_labelled_lower_bound() -> None:
    cm = stats.censored_median
    # the reviewer's case: reached at 88 and 204.7, censored at budgets 247 and 241: the
    # median of 4 falls between 204.7 and a censored run, so it is a lower bound
    got = cm([(88.0, 0.036, False), (204.7, 0.083, False), (247, 0.10, True), (241, 0.10, True)])
    assert got["censored"] and got["n"] == pytest.approx((204.7 + 241) / 2)
    # odd count, the middle run reached and every censored run above it: exact
    got = cm([(50.0, 0.02, False), (60.0, 0.025, False), (247, 0.1, True)])
    assert not got["censored"] and got["n"] == 60.0 and got["fraction"] == 0.025
    # a censored budget below a reached value: the ordering at budgets still bounds from below
    got = cm([(230, 0.09, True), (240.0, 0.097, False), (100.0, 0.04, False)])
    assert got["censored"] and got["n"] == 230
    # all reached: the plain median
    assert cm([(1.0, 0.1, False), (3.0, 0.3, False)]) == {
        "n": 2.0,
        "fraction": 0.2,
        "censored": False,
    }


def test_a_run_that_ends_short_of_its_strategys_runs_does_not_shrink_the_range() -> None:
    # e.g. seed 3 of a synthesis arm found almost no valid candidate: 50 -> 54 calls while its
    # other seeds and every other arm reach 110. It used to cut every run's AULC to 50-54.
    rows, pv = _group({"ref": 0.0, "arm": 0.0})
    rows = [r for r in rows if not (r["strategy"] == "arm" and r["seed"] == 3 and r["round"] >= 2)]
    for r in rows:
        if r["strategy"] == "arm" and r["seed"] == 3 and r["round"] == 1:
            r["fraction"] = 0.12  # advanced a little, then nothing more to pay for
    g = _summary(rows, pv)
    span = g["aulc_range"]
    assert (span["lo"], span["hi"]) == pytest.approx((0.1, 0.4))
    assert [s.split("/")[0] for s in span["short"]] == ["arm"] and not span["stalled"]
    assert "budget unspent" in span["note"]
    assert math.isnan(g["aulc"]["arm"]["per_seed"][3]) and g["aulc"]["arm"]["n"] == 4
    # a whole strategy on a shorter schedule still shrinks the range (previous test's rule)
    rows, pv = _group({"ref": 0.0, "short": 0.0}, fractions={"short": (0.1, 0.2, 0.3)})
    assert stats.summarise_group(rows, patient_values=pv, n_boot=50)["aulc_range"]["short"] == []


def test_a_short_run_that_still_covers_the_shared_range_is_kept() -> None:
    # "arm": 4 runs to 40 %, seed 3 to 30 %; "late" ends at 30 % on every seed: the range is
    # 10-30 %, which seed 3 of "arm" covers, so it is not left out
    rows, pv = _group({"ref": 0.0, "arm": 0.0}, fractions={"ref": (0.1, 0.2, 0.3)})
    rows = [
        r for r in rows if not (r["strategy"] == "arm" and r["seed"] == 3 and r["fraction"] > 0.3)
    ]
    g = _summary(rows, pv)
    assert g["aulc_range"]["short"] == [] and g["aulc"]["arm"]["n"] == 5
    assert (g["aulc_range"]["lo"], g["aulc_range"]["hi"]) == pytest.approx((0.1, 0.3))


def test_censoring_uses_the_last_evaluated_round() -> None:
    got = stats.censored_median([(10.0, 0.1, False), (20.0, 0.2, True), (30.0, 0.3, False)])
    assert got["censored"] and got["n"] == 20.0
    full = {k: 2.0 for k in range(5)}  # out of reach: every run censored
    rows, pv = _group({"ref": 0.0}, full=full)
    for r in rows:
        if r["strategy"] == "ref" and r["seed"] == 0 and r["round"] >= 2:
            r["dice_patient_tumour"] = math.nan
    g = _summary(rows, pv)
    r90 = g["labels_to_reach"]["ref"]["90"]
    # seed 0 was planned to 40 labels but evaluated only to 20: censored at 20, not 40
    assert r90["reached"] == 0 and r90["censored_budget_n"][0] == pytest.approx(20.0)


def test_no_common_seed_gives_no_top_two() -> None:
    rows, pv = _group({"ref": 0.0, "other": 0.05})
    rows = [
        r
        for r in rows
        if not (
            (r["strategy"] == "ref" and r["seed"] >= 2)
            or (r["strategy"] == "other" and r["seed"] < 2)
        )
    ]
    g = _summary(rows, pv)
    assert g["ranking_seeds"] == [] and g["wilcoxon"] == {}
    assert "No seed is common to all strategies" in stats.markdown_wilcoxon(g)


def test_arms_trained_with_another_recipe_are_named() -> None:
    g = {
        "strategies": ["ref", "learning-loss"],
        "arm_overrides": {"learning-loss": {"aleatoric": False}, "absent": {"lr": 1}},
    }
    text = stats.overrides_text(g)
    assert "learning-loss (`aleatoric` = false)" in text and "absent" not in text
    assert "mix the strategy with that change" in text
    assert stats.overrides_text({"strategies": ["ref"], "arm_overrides": {}}) == ""
    assert stats.overrides_text({"strategies": ["ref"]}) == ""
