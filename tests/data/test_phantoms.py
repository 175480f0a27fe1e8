"""Procedural phantoms: determinism, shapes, physics labels, replay from records, patient groups."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from activesynth.data.imageset import ImageSet
from activesynth.data.phantoms import (
    PhantomParams,
    main,
    make_phantoms,
    patient_layout,
    phantom_regression_set,
    render,
    sample_params,
)
from activesynth.data.physics import SEVERITY_NAMES, PhysicsOracle
from activesynth.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def ds() -> ImageSet:
    return make_phantoms(n=200, seed=0)


def test_shapes_dtypes_and_names(ds: ImageSet) -> None:
    assert ds.images.shape == (200, 128, 128, 1) and ds.images.dtype == np.uint8
    assert ds.masks is not None and ds.masks.shape == (200, 128, 128)
    assert ds.masks.dtype == np.uint8 and set(np.unique(ds.masks).tolist()) == {0, 1}
    assert ds.labels is not None and ds.labels.dtype == np.int64 and ds.labels.shape == (200,)
    assert ds.name == "phantom"
    assert ds.class_names == ("background", "lumen")
    assert ds.label_names == SEVERITY_NAMES
    assert ds.channel_names == ("intensity",)
    assert ds.ids[42] == "phantom_00042"
    assert ds.has_task("seg") and ds.has_task("cls")
    meta = ds.meta
    assert meta["resistance"].dtype == np.float64 and meta["resistance"].shape == (200,)
    assert meta["spacing"].dtype == np.float32 and meta["spacing"].shape == (200, 2)
    np.testing.assert_allclose(meta["spacing"], 0.1)
    assert set(meta["kind"].tolist()) == {"vessel", "valve"}
    assert meta["stenosis"].dtype == np.float32
    assert meta["n_plaques"].dtype == np.int64
    assert (meta["seed"] == 0).all()
    # images use the display range: dark fat, bright lumen, saturated calcium somewhere
    assert ds.images.min() < 30 and ds.images.max() == 255


def test_every_mask_has_lumen_inside_the_field(ds: ImageSet) -> None:
    assert ds.foreground().all()
    m = ds.masks
    assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())


def test_all_three_severity_classes_present(ds: ImageSet) -> None:
    counts = np.bincount(ds.labels, minlength=3)
    assert (counts >= 20).all(), counts  # seed 0: 85 / 73 / 42


def test_labels_come_from_physics(ds: ImageSet) -> None:
    oracle = PhysicsOracle()
    np.testing.assert_array_equal(ds.labels, oracle(ds.masks))
    np.testing.assert_allclose(ds.meta["resistance"], oracle.resistance(ds.masks), rtol=1e-12)
    np.testing.assert_allclose(
        ds.meta["resistance_ratio"], ds.meta["resistance"] / oracle.reference_resistance
    )
    # the generator's stenosis parameter correlates with, but does not decide, the label
    rho = np.corrcoef(ds.meta["stenosis"], np.log(ds.meta["resistance"]))[0, 1]
    assert rho > 0.5


def test_same_seed_identical_different_seed_different() -> None:
    a = make_phantoms(n=8, size=64, seed=3)
    b = make_phantoms(n=8, size=64, seed=3)
    c = make_phantoms(n=8, size=64, seed=4)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.meta["params"], b.meta["params"])
    assert a.images.tobytes() != c.images.tobytes()
    assert a.masks.tobytes() != c.masks.tobytes()


def test_prefix_stable_with_default_patients() -> None:
    small = make_phantoms(n=10, size=64, seed=3)
    big = make_phantoms(n=24, size=64, seed=3)
    assert small.images.tobytes() == big.images[:10].tobytes()
    assert small.masks.tobytes() == big.masks[:10].tobytes()
    np.testing.assert_array_equal(small.labels, big.labels[:10])
    np.testing.assert_array_equal(small.groups, big.groups[:10])


def test_records_replay_to_identical_images(ds: ImageSet) -> None:
    for i in (0, 5, 77, 199):
        params = PhantomParams.from_json(str(ds.meta["params"][i]))
        assert params.to_json() == ds.meta["params"][i]
        assert params.kind == ds.meta["kind"][i]
        image, mask = render(params, 128)
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        np.testing.assert_array_equal(image, ds.images[i, ..., 0])
        np.testing.assert_array_equal(mask, ds.masks[i])


def test_sample_params_is_a_pure_function_of_the_generator() -> None:
    p1 = sample_params(np.random.default_rng(11), kind="valve")
    p2 = sample_params(np.random.default_rng(11), kind="valve")
    assert p1 == p2 and p1.kind == "valve"
    assert PhantomParams.from_json(p1.to_json()) == p1
    assert all(f.name in p1.to_json() for f in fields(PhantomParams))
    with pytest.raises(DataError, match="unknown fields"):
        PhantomParams.from_json('{"kind": "vessel", "bogus": 1}')


def test_patient_groups(ds: ImageSet) -> None:
    groups, counts = np.unique(ds.groups, return_counts=True)
    assert len(groups) == 50 and (counts == 4).all()
    for g in groups[:10]:
        members = ds.groups == g
        assert len(set(ds.meta["kind"][members].tolist())) == 1  # slices share the anatomy
    # slices along one lesion span more than one class for many patients
    spans = [len(np.unique(ds.labels[ds.groups == g])) for g in groups]
    assert sum(s > 1 for s in spans) >= 20


def test_explicit_patient_count() -> None:
    patient, slice_ = patient_layout(10, patients=3)
    assert np.bincount(patient).tolist() == [4, 3, 3]
    assert slice_.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]
    small = make_phantoms(n=9, size=48, seed=1, patients=3)
    assert len(np.unique(small.groups)) == 3
    with pytest.raises(DataError, match="patients"):
        patient_layout(4, patients=5)


@pytest.mark.parametrize("kind", ["vessel", "valve"])
def test_single_kind(kind: str) -> None:
    s = make_phantoms(n=8, size=64, seed=2, kind=kind)
    assert set(s.meta["kind"].tolist()) == {kind}
    assert s.foreground().all()
    np.testing.assert_allclose(s.meta["spacing"], 0.2)  # the 12.8 mm field of view at 64 px


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'valve'"):
        make_phantoms(n=2, kind="valves")
    with pytest.raises(DataError, match="n must"):
        make_phantoms(n=0)
    with pytest.raises(DataError, match="spacing_mm"):
        make_phantoms(n=2, size=32, spacing_mm=-1.0)


def test_regression_set(ds: ImageSet) -> None:
    reg = phantom_regression_set(ds)
    assert reg.labels.dtype == np.float32 and reg.label_names == ()
    assert reg.has_task("reg") and not reg.has_task("cls")
    np.testing.assert_allclose(reg.labels, np.log10(ds.meta["resistance"]), rtol=1e-6)
    assert reg.images is ds.images  # a view, not a copy of the pixels
    no_meta = ImageSet(images=ds.images[:2], groups=ds.groups[:2])
    with pytest.raises(DataError, match="resistance"):
        phantom_regression_set(no_meta)


def test_grid_script_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    main(["--out", str(out), "--n", "4", "--size", "48"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
