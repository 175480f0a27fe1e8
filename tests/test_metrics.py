"""Numbers the metrics must produce, on small hand-built masks and scores."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

from activesynth.errors import ConfigError, DataError
from activesynth.metrics import (
    ClassificationMetric,
    RegressionMetric,
    SegmentationMetric,
    _rank_auc,
    auc_bootstrap_ci,
    classification_report,
    dice_per_class,
    dice_per_patient,
    hd95_per_class,
    hd95_per_patient,
    mean_sd,
    pooled_dice,
    regression_report,
    segmentation_report,
    to_jsonable,
    write_metrics,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _empty(n: int = 1, h: int = 12, w: int = 12) -> np.ndarray:
    return np.zeros((n, h, w), dtype=np.int64)


def _partial_pair() -> tuple[np.ndarray, np.ndarray]:
    """pred: rows 0-1 x cols 0-2 (6 px); target: rows 0-1 x cols 1-3 (6 px); overlap 4."""
    pred, target = _empty(), _empty()
    pred[0, 0:2, 0:3] = 1
    target[0, 0:2, 1:4] = 1
    return pred, target


def _strict_loads(text: str) -> object:
    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


# --------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------


def test_dice_identical_masks_is_one() -> None:
    m = _empty(2)
    m[0, 2:6, 3:8] = 1
    m[1, 5:9, 1:4] = 1
    np.testing.assert_allclose(dice_per_class(m, m.copy(), 2), [[1.0], [1.0]])


def test_dice_disjoint_masks_is_zero() -> None:
    pred, target = _empty(), _empty()
    pred[0, 0:3, 0:3] = 1
    target[0, 6:9, 6:9] = 1
    assert dice_per_class(pred, target, 2)[0, 0] == 0.0


def test_dice_partial_overlap_hand_value() -> None:
    pred, target = _partial_pair()
    d = dice_per_class(pred, target, 2)
    assert d.shape == (1, 1) and d.dtype == np.float64
    assert d[0, 0] == pytest.approx(2 * 4 / (6 + 6), abs=1e-6)


def test_dice_multiclass_and_background_columns() -> None:
    pred, target = _partial_pair()
    pred[0, 8:10, 8:10] = 2  # class 2 identical in both
    target[0, 8:10, 8:10] = 2
    fg = dice_per_class(pred, target, 3)
    np.testing.assert_allclose(fg, [[8 / 12, 1.0]], atol=1e-6)
    full = dice_per_class(pred, target, 3, include_background=True)
    assert full.shape == (1, 3)
    bg_pred, bg_target = 144 - 6 - 4, 144 - 6 - 4
    bg_inter = 144 - 8 - 4  # pixels that are background in both
    assert full[0, 0] == pytest.approx(2 * bg_inter / (bg_pred + bg_target), abs=1e-6)


def test_dice_empty_conventions() -> None:
    pred, target = _empty(3), _empty(3)
    target[1, 2, 2] = 1  # missed lesion
    pred[2, 2, 2] = 1  # false positive on an empty slice
    d = dice_per_class(pred, target, 2)
    assert math.isnan(d[0, 0])  # both empty: undefined
    assert d[1, 0] == 0.0
    assert d[2, 0] == 0.0  # not NaN: a false positive on an empty ground truth counts
    d1 = dice_per_class(pred, target, 2, empty_value=1.0)
    np.testing.assert_array_equal(d1[:, 0], [1.0, 0.0, 0.0])


def test_pooled_dice_hand_value() -> None:
    pred, target = _empty(2), _empty(2)
    pred[0, 0:2, 0:3] = 1  # 6 px
    target[0, 0:2, 1:4] = 1  # 6 px, overlap 4
    target[1, 5, 5:7] = 1  # 2 px, missed
    assert pooled_dice(pred, target, 2)[0] == pytest.approx(8 / 14)


# --------------------------------------------------------------------------------------------
# HD95
# --------------------------------------------------------------------------------------------


def test_hd95_identical_masks_is_zero() -> None:
    m = _empty(1, 16, 16)
    m[0, 3:9, 4:12] = 1
    assert hd95_per_class(m, m.copy(), 2)[0, 0] == 0.0


def test_hd95_single_pixels_pixels_and_mm() -> None:
    pred, target = _empty(1, 16, 16), _empty(1, 16, 16)
    pred[0, 4, 2] = 1
    target[0, 4, 7] = 1
    assert hd95_per_class(pred, target, 2)[0, 0] == pytest.approx(5.0)
    assert hd95_per_class(pred, target, 2, spacing=(0.5, 0.5))[0, 0] == pytest.approx(2.5)
    assert hd95_per_class(pred, target, 2, spacing=0.5)[0, 0] == pytest.approx(2.5)


def test_hd95_anisotropic_and_per_image_spacing() -> None:
    pred, target = _empty(2, 16, 16), _empty(2, 16, 16)
    pred[:, 2, 2] = 1
    target[:, 5, 6] = 1  # 3 rows, 4 cols apart
    spacing = np.array([[2.0, 0.5], [1.0, 1.0]])  # (row, col) mm per image
    hd = hd95_per_class(pred, target, 2, spacing=spacing)
    assert hd[0, 0] == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5), rel=1e-6)
    assert hd[1, 0] == pytest.approx(5.0, rel=1e-6)


def test_hd95_is_a_percentile_not_the_maximum() -> None:
    target = _empty(1, 32, 32)
    target[0, 2:14, 2:14] = 1  # 44 edge pixels
    pred = target.copy()
    pred[0, 30, 30] = 1  # one stray pixel far away
    assert hd95_per_class(pred, target, 2)[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_hd95_penalty_when_one_mask_is_empty_and_zero_when_both_are() -> None:
    # Schema 2: a missed structure (empty prediction) and a phantom one (empty truth) cost the
    # image diagonal, both-empty is perfect agreement (0); never NaN.
    pred, target = _empty(3), _empty(3)
    target[1, 2, 2] = 1
    pred[2, 2, 2] = 1
    h, w = pred.shape[1:]
    hd = hd95_per_class(pred, target, 2)
    assert hd[0, 0] == 0.0
    assert hd[1, 0] == pytest.approx(np.hypot(h, w))
    assert hd[2, 0] == pytest.approx(np.hypot(h, w))
    mm = hd95_per_class(pred, target, 2, spacing=(0.5, 2.0))
    assert mm[1, 0] == pytest.approx(np.hypot(0.5 * h, 2.0 * w))


def test_missed_tumour_worsens_mean_hd95() -> None:
    # A model that misses the structure must not look better than one that finds it roughly.
    target = _empty(2)
    target[:, 10:14, 10:14] = 1
    rough = target.copy()
    rough[:, 8:16, 8:16] = 1
    missed = target.copy()
    missed[1] = 0
    rep_rough = segmentation_report(rough, target, None, 2)
    rep_missed = segmentation_report(missed, target, None, 2)
    h_rough = rep_rough["per_image"]["hd95_px"]["class_1"]
    h_missed = rep_missed["per_image"]["hd95_px"]["class_1"]
    assert h_missed["n"] == h_rough["n"] == 2
    assert h_missed["n_empty_pred"] == 1
    assert h_missed["mean"] > h_rough["mean"]
    assert rep_missed["metrics_schema"] == 2


# --------------------------------------------------------------------------------------------
# per patient (volumetric)
# --------------------------------------------------------------------------------------------


def _two_patients() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient A: slice 0 Dice 8/12, slice 1 a missed 2-px lesion. Patient B: all empty."""
    pred, target = _empty(4), _empty(4)
    pred[0, 0:2, 0:3] = 1
    target[0, 0:2, 1:4] = 1
    target[1, 5, 5:7] = 1
    groups = np.array(["A", "A", "B", "B"])
    return pred, target, groups


def test_patient_dice_differs_from_mean_slice_dice() -> None:
    pred, target, groups = _two_patients()
    slice_dice = dice_per_class(pred[:2], target[:2], 2)[:, 0]
    assert np.mean(slice_dice) == pytest.approx((8 / 12 + 0.0) / 2, abs=1e-6)
    patients, d = dice_per_patient(pred, target, groups, 2)
    assert patients == ["A", "B"]
    assert d[0, 0] == pytest.approx(2 * 4 / (6 + 8), abs=1e-6)  # 4/7, not 1/3
    assert math.isnan(d[1, 0])
    _, d1 = dice_per_patient(pred, target, groups, 2, empty_value=1.0)
    assert d1[1, 0] == 1.0


def test_patient_hd95_through_slices_with_spacing() -> None:
    pred, target = _empty(3), _empty(3)
    pred[0, 4, 4] = 1
    target[2, 4, 4] = 1  # two slices further on
    groups = ["P"] * 3
    _, px = hd95_per_patient(pred, target, groups, 2)
    assert px[0, 0] == pytest.approx(2.0)
    _, mm = hd95_per_patient(pred, target, groups, 2, spacing=(0.5, 0.5, 3.0))
    assert mm[0, 0] == pytest.approx(6.0)


def test_slice_index_orders_the_volume() -> None:
    pred, target = _empty(3), _empty(3)
    pred[0, 4, 4] = 1
    target[2, 4, 4] = 1
    shuffle = np.array([2, 0, 1])
    _, hd = hd95_per_patient(pred[shuffle], target[shuffle], ["P"] * 3, 2, slice_index=shuffle)
    assert hd[0, 0] == pytest.approx(2.0)
    with pytest.raises(DataError, match="repeats"):
        hd95_per_patient(pred, target, ["P"] * 3, 2, slice_index=np.array([0, 0, 1]))


def test_segmentation_report_counts_and_values() -> None:
    pred, target, groups = _two_patients()
    rep = segmentation_report(pred, target, groups, 2, ["tumour"])
    assert rep["classes"] == ["tumour"]
    img = rep["per_image"]["dice"]["tumour"]
    assert img["n"] == 2 and img["n_empty_both"] == 2
    assert img["mean"] == pytest.approx(1 / 3, abs=1e-6)
    hd = rep["per_image"]["hd95_px"]["tumour"]
    # schema 2: the missed lesion costs the diagonal, the two empty slices score 0; all counted
    assert hd["n"] == 4 and hd["n_empty_pred"] == 1 and hd["n_empty_both"] == 2
    finite = hd95_per_class(pred[:1], target[:1], 2)[0, 0]
    diag = np.hypot(*pred.shape[1:])
    assert hd["mean"] == pytest.approx((finite + diag + 0 + 0) / 4)
    assert rep["per_patient"]["hd95_px"]["tumour"]["values"]["B"] == 0.0
    pat = rep["per_patient"]["dice"]["tumour"]
    assert pat["n"] == 1 and pat["n_empty_both"] == 1
    assert pat["values"]["A"] == pytest.approx(4 / 7, abs=1e-6)
    assert math.isnan(pat["values"]["B"])
    assert pat["mean"] == pytest.approx(4 / 7, abs=1e-6) and pat["sd"] == 0.0
    assert rep["overall"]["dice"]["tumour"] == pytest.approx(4 / 7)
    assert rep["overall"]["target_pixels"]["tumour"] == 8
    assert "hd95_mm" not in rep["per_image"]

    with_mm = segmentation_report(pred, target, groups, 2, spacing=(0.5, 0.5, 2.0))
    assert set(with_mm["per_patient"]) >= {"hd95_px", "hd95_mm"}
    in_plane = segmentation_report(pred, target, groups, 2, spacing=(0.5, 0.5))
    assert "hd95_mm" in in_plane["per_image"] and "hd95_mm" not in in_plane["per_patient"]
    assert "hd95_mm_note" in in_plane["per_patient"]

    ones = segmentation_report(pred, target, groups, 2, empty_value=1.0)
    assert ones["per_patient"]["dice"]["class_1"]["mean"] == pytest.approx((4 / 7 + 1) / 2)
    assert ones["per_patient"]["dice"]["class_1"]["n_empty_both"] == 1


def test_segmentation_metric_accumulates_like_the_function() -> None:
    pred, target, groups = _two_patients()
    acc = SegmentationMetric(2, ["tumour"])
    acc.update(pred[:3], target[:3], groups[:3])
    acc.update(pred[3:], target[3:], groups[3:])
    got = to_jsonable(acc.compute())
    assert got == to_jsonable(segmentation_report(pred, target, groups, 2, ["tumour"]))


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def test_auc_perfect_and_reversed() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert classification_report(probs, labels)["auc"] == 1.0
    assert classification_report(1 - probs, labels)["auc"] == 0.0


def test_auc_parity_with_sklearn_binary_and_multiclass() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 80)
    probs = np.clip(0.3 * labels + rng.random(80) * 0.7, 0, 1)
    rep = classification_report(probs, labels)
    assert rep["auc"] == pytest.approx(roc_auc_score(labels, probs))
    two_col = classification_report(np.stack([1 - probs, probs], axis=1), labels)
    assert two_col["auc"] == pytest.approx(rep["auc"])

    y3 = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + np.eye(3)[y3]
    p3 = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rep3 = classification_report(p3, y3, positive=2)
    assert rep3["auc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    assert set(rep3["per_class"]) == {"0", "1", "2"}
    assert rep3["threshold"] is None


def test_bootstrap_auc_statistic_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 60).astype(bool)
    scores = np.round(rng.random(60), 1)  # many ties
    assert _rank_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_sensitivity_specificity_hand_confusion_matrix() -> None:
    # TP=3, FN=1, TN=4, FP=2
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.6, 0.2, 0.1, 0.3, 0.4, 0.2, 0.7, 0.55])
    rep = classification_report(probs, labels, label_names=["benign", "malignant"])
    assert rep["confusion_matrix"]["matrix"].tolist() == [[4, 2], [1, 3]]
    assert rep["sensitivity"] == pytest.approx(3 / 4)
    assert rep["specificity"] == pytest.approx(4 / 6)
    assert rep["accuracy"] == pytest.approx(7 / 10)
    assert rep["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert rep["counts"] == {"benign": 6, "malignant": 4}
    assert rep["positive"] == "malignant"
    # the threshold moves the decision: 0.6 >= 0.6 stays positive, 0.55 becomes negative
    rep_t = classification_report(probs, labels, threshold=0.6)
    assert rep_t["confusion_matrix"]["matrix"].tolist() == [[5, 1], [1, 3]]


def test_auc_single_class_is_nan_with_reason() -> None:
    rep = classification_report(np.array([0.2, 0.7, 0.9]), np.array([1, 1, 1]))
    assert math.isnan(rep["auc"])
    assert any("AUC is undefined" in n for n in rep["notes"])
    assert math.isnan(rep["specificity"])
    assert _strict_loads(json.dumps(to_jsonable(rep), allow_nan=False))["auc"] is None


def test_patient_level_classification() -> None:
    probs = np.array([0.9, 0.1, 0.4, 0.5, 0.2, 0.3])
    labels = np.array([1, 1, 1, 1, 0, 0])
    groups = np.array(["a", "a", "b", "b", "c", "c"])
    rep = classification_report(probs, labels, groups)
    per = rep["per_patient"]
    assert per["n_patients"] == 3
    # patient means: a 0.5, b 0.45, c 0.25 -> perfect ranking; a is positive at 0.5
    assert per["auc"] == 1.0
    assert per["confusion_matrix"]["matrix"].tolist() == [[1, 0], [1, 1]]
    mixed = classification_report(probs, np.array([1, 0, 1, 1, 0, 0]), groups)
    assert "skipped" in mixed["per_patient"] and "'a'" in mixed["per_patient"]["skipped"]


def test_bootstrap_ci_reproducible_and_contains_estimate() -> None:
    rng = np.random.default_rng(7)
    n = 120
    labels = rng.integers(0, 2, n)
    probs = np.clip(0.25 * labels + 0.75 * rng.random(n), 0, 1)
    groups = np.repeat(np.arange(40), 3).astype(str)
    a = classification_report(probs, labels, rng=np.random.default_rng(3), n_boot=200)
    b = classification_report(probs, labels, rng=np.random.default_rng(3), n_boot=200)
    assert a["auc_ci"] == b["auc_ci"]
    ci = a["auc_ci"]
    assert ci["low"] <= a["auc"] <= ci["high"] and ci["low"] < ci["high"]
    assert ci["resampling"] == "image" and ci["n_valid"] == 200
    c = classification_report(probs, labels, rng=np.random.default_rng(4), n_boot=200)
    assert c["auc_ci"] != a["auc_ci"]

    byp = auc_bootstrap_ci(probs, labels, groups, rng=np.random.default_rng(3), n_boot=200)
    assert byp["resampling"] == "patient"
    assert byp["low"] <= a["auc"] <= byp["high"]
    assert classification_report(probs, labels)["auc_ci"] is None  # no rng, no randomness


def test_patient_bootstrap_in_report() -> None:
    rng = np.random.default_rng(0)
    patient_label = rng.integers(0, 2, 30)
    labels = np.repeat(patient_label, 2)
    probs = np.clip(0.3 * labels + 0.7 * rng.random(60), 0, 1)
    groups = np.repeat(np.arange(30), 2).astype(str)
    rep = classification_report(probs, labels, groups, rng=np.random.default_rng(1), n_boot=100)
    assert rep["auc_ci"]["resampling"] == "patient"
    per = rep["per_patient"]
    assert per["auc_ci"]["resampling"] == "patient" and per["auc_ci"]["n_boot"] == 100
    assert per["auc_ci"]["low"] <= per["auc"] <= per["auc_ci"]["high"]


def test_classification_metric_accumulates_like_the_function() -> None:
    probs = np.array([0.9, 0.1, 0.4, 0.5, 0.2, 0.3])
    labels = np.array([1, 1, 1, 0, 0, 0])
    acc = ClassificationMetric()
    acc.update(probs[:4], labels[:4])
    acc.update(probs[4:], labels[4:])
    assert to_jsonable(acc.compute()) == to_jsonable(classification_report(probs, labels))


# --------------------------------------------------------------------------------------------
# regression, summaries, JSON
# --------------------------------------------------------------------------------------------


def test_regression_report_hand_values_and_parity() -> None:
    pred = np.array([1.0, 2.0, 4.0, 5.0])
    target = np.array([1.0, 3.0, 3.0, 6.0])
    rep = regression_report(pred, target)
    assert rep["mae"] == pytest.approx(0.75)
    assert rep["rmse"] == pytest.approx(math.sqrt(3 / 4))
    ss_tot = np.sum((target - target.mean()) ** 2)
    assert rep["r2"] == pytest.approx(1 - 3 / ss_tot)
    assert rep["pearson_r"] == pytest.approx(pearsonr(pred, target)[0])
    assert rep["spearman_rho"] == pytest.approx(spearmanr(pred, target)[0])

    per = regression_report(pred, target, ["a", "a", "b", "b"])["per_patient"]
    assert per["n"] == 2 and per["mae"] == pytest.approx(0.25)  # means 1.5 vs 2, 4.5 vs 4.5
    const = regression_report(np.array([1.0, 2.0]), np.array([3.0, 3.0]))
    assert math.isnan(const["r2"]) and math.isnan(const["pearson_r"]) and const["notes"]
    acc = RegressionMetric()
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])
    assert to_jsonable(acc.compute()) == to_jsonable(rep)


def test_mean_sd_ignores_nan() -> None:
    assert mean_sd([1.0, math.nan, 3.0]) == {"mean": 2.0, "sd": pytest.approx(math.sqrt(2)), "n": 2}
    assert mean_sd([4.0]) == {"mean": 4.0, "sd": 0.0, "n": 1}
    empty = mean_sd([math.nan])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["sd"])
    assert mean_sd({"a": 1.0, "b": 2.0})["mean"] == 1.5


def test_write_metrics_strict_json(tmp_path) -> None:
    pred, target, groups = _two_patients()
    report = {
        "seg": segmentation_report(pred, target, groups, 2),
        "x": np.float32(0.5),
        "k": np.int64(3),
        "flag": np.bool_(True),
        "arr": np.array([1.0, np.nan, np.inf]),
    }
    path = write_metrics(tmp_path / "sub" / "metrics.json", report)
    text = path.read_text()
    assert not re.search(r"[:\[,]\s*-?(NaN|Infinity)\b", text)
    data = _strict_loads(text)
    assert data["x"] == 0.5 and data["k"] == 3 and data["flag"] is True
    assert data["arr"] == [1.0, None, None]
    assert data["seg"]["per_patient"]["dice"]["class_1"]["values"]["B"] is None
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp files left
    with pytest.raises(DataError, match=r"report\.bad"):
        write_metrics(tmp_path / "bad.json", {"bad": object()})
    assert not (tmp_path / "bad.json").exists()


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_segmentation_input_errors() -> None:
    m = _empty(2)
    with pytest.raises(DataError, match="pred has shape"):
        dice_per_class(m, _empty(3), 2)
    with pytest.raises(DataError, match="target holds class id 5"):
        dice_per_class(m, m + 5, 2)
    with pytest.raises(DataError, match="pred must hold integer"):
        dice_per_class(m.astype(np.float32), m, 2)
    with pytest.raises(DataError, match="pred is empty"):
        dice_per_class(np.zeros((0, 4, 4), int), np.zeros((0, 4, 4), int), 2)
    with pytest.raises(DataError, match=r"pred must have shape \(N, H, W\)"):
        hd95_per_class(m[0], m[0], 2)
    with pytest.raises(DataError, match="spacing"):
        hd95_per_class(m, m, 2, spacing=np.ones((3, 2)))
    with pytest.raises(DataError, match="spacing must be finite"):
        hd95_per_class(m, m, 2, spacing=(0.0, 1.0))
    with pytest.raises(DataError, match="groups"):
        segmentation_report(m, m, ["a"], 2)
    with pytest.raises(DataError, match="spacing varies"):
        hd95_per_patient(m, m, ["a", "a"], 2, spacing=[[1, 1, 1], [1, 1, 2]])
    with pytest.raises(ConfigError, match="n_classes"):
        dice_per_class(m, m, 1)
    with pytest.raises(ConfigError, match="empty_value"):
        dice_per_class(m, m, 2, empty_value=0.5)
    with pytest.raises(ConfigError, match="class_names"):
        segmentation_report(m, m, None, 3, ["only_one"])


def test_classification_input_errors() -> None:
    y = np.array([0, 1, 1])
    with pytest.raises(DataError, match="labels has 2 entries"):
        classification_report(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(DataError, match="non-finite"):
        classification_report(np.array([0.1, np.nan, 0.3]), y)
    with pytest.raises(DataError, match=r"probs must lie in \[0, 1\]"):
        classification_report(np.array([0.1, 1.5, 0.3]), y)
    with pytest.raises(DataError, match="labels holds class 2"):
        classification_report(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="probs is empty"):
        classification_report(np.array([]), np.array([], dtype=int))
    with pytest.raises(DataError, match="rows must sum to 1"):
        classification_report(np.array([[0.5, 0.6], [0.5, 0.5], [0.2, 0.8]]), y)
    with pytest.raises(DataError, match="labels must hold integer"):
        classification_report(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.5, 1.0]))
    with pytest.raises(DataError, match="groups"):
        classification_report(np.array([0.1, 0.2, 0.3]), y, groups=["a"])
    with pytest.raises(ConfigError, match="threshold"):
        classification_report(np.array([0.1, 0.2, 0.3]), y, threshold=2.0)
    with pytest.raises(ConfigError, match="n_boot"):
        classification_report(np.array([0.1, 0.2, 0.3]), y, n_boot=0)
    with pytest.raises(ConfigError, match="positive"):
        classification_report(np.array([0.1, 0.2, 0.3]), y, positive=2)


def test_regression_input_errors() -> None:
    with pytest.raises(DataError, match="target has 2 entries"):
        regression_report(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]))
    with pytest.raises(DataError, match="pred holds 1 non-finite"):
        regression_report(np.array([1.0, np.inf]), np.array([1.0, 2.0]))
    with pytest.raises(DataError, match="pred is empty"):
        regression_report(np.array([]), np.array([]))


def test_single_slice_patient_hd95_equals_image_hd95():
    # One image per patient (chest X-rays): the patient-level HD95 must be the 2D boundary
    # distance, not a 3D surface distance of a one-slice volume (which collapses towards 0).
    pred = np.zeros((2, 32, 32), np.uint8)
    target = np.zeros((2, 32, 32), np.uint8)
    pred[:, 8:20, 8:20] = 1
    target[:, 8:20, 11:23] = 1  # shifted by 3 px
    rep = segmentation_report(pred, target, ["a", "b"], 2, ["background", "fg"])
    per_image = rep["per_image"]["hd95_px"]["fg"]["mean"]
    per_patient = rep["per_patient"]["hd95_px"]["fg"]["mean"]
    assert per_image == pytest.approx(3.0)
    assert per_patient == pytest.approx(per_image)


def test_accumulators_refuse_groups_given_for_some_batches_only() -> None:
    seg = SegmentationMetric(2)
    seg.update(_empty(1), _empty(1), ["a"])
    seg.update(_empty(1), _empty(1))
    with pytest.raises(DataError, match="groups was given for some batches but not others"):
        seg.compute()
    seg = SegmentationMetric(2)
    seg.update(_empty(1), _empty(1), spacing=(1.0, 1.0))
    seg.update(_empty(1), _empty(1))
    with pytest.raises(DataError, match="spacing was given for some batches but not others"):
        seg.compute()
    cls = ClassificationMetric()
    cls.update(np.array([0.2, 0.8]), np.array([0, 1]), ["a", "b"])
    cls.update(np.array([0.6]), np.array([1]))
    with pytest.raises(DataError, match="groups was given for some batches but not others"):
        cls.compute()
    reg = RegressionMetric()
    reg.update(np.array([1.0]), np.array([2.0]))
    reg.update(np.array([1.0]), np.array([2.0]), ["a"])
    with pytest.raises(DataError, match="groups was given for some batches but not others"):
        reg.compute()
