"""Statistics on hand-made curves: AULC, labels-to-reach, Wilcoxon, curves and tables."""

from __future__ import annotations

import math
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
    assert math.isnan(stats.wilcoxon_test([1.0, 2.0], [1.0, 2.0])["p"])
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
    assert g["table"]["metrics"] == ["dice_patient_tumour", "hd95_px_patient_tumour"]
    assert g["table"]["best"]["dice_patient_tumour"] == [["good"]] * 3
    assert g["table"]["best"]["hd95_px_patient_tumour"] == [["good"]] * 3  # lower is better
    md = stats.markdown_table(g)
    assert "| good | **0.610 ± 0.010** |" in md
    assert "not reached" in stats.markdown_reach(g)
    w = g["wilcoxon"]
    assert (w["a"], w["b"]) == ("good", "random")
    assert w["by_seed_aulc"]["n"] == 3
    assert w["by_seed_aulc"]["p"] == pytest.approx(
        sps.wilcoxon([0.71, 0.72, 0.73], [0.61, 0.62, 0.63]).pvalue
    )
    assert "good" in stats.markdown_wilcoxon(g)


def test_unknown_metric_is_a_clear_error() -> None:
    from activesynth.errors import DataError

    with pytest.raises(DataError, match="Did you mean 'dice_patient_tumour'"):
        stats.summarise_group(_rows(), metric="dice_patient_tumor")


def test_comparisons_say_what_they_pair() -> None:
    # no per-patient values (as for classification): the label-percentage tests pair seeds
    g = stats.summarise_group(_rows(), full_data=None, reference="random")
    md = stats.markdown_comparisons(g)
    assert "| good vs random |" in md
    assert "the pairs are seeds (no per-patient values for this metric)" in md
    assert "test patients" not in md
