"""The Pool: labels and label costs, synthetic items (append, provenance, training set), the
schema-1 migration and refusals, and synthetic items kept out of validation and test splits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from activesynth.data.imageset import ImageSet
from activesynth.data.splits import Split, check_disjoint, patient_split
from activesynth.errors import DataError
from activesynth.pool import POOL_SCHEMA, Pool, refuse_synthetic
from activesynth.synthesis.candidates import Candidates, LabelCost, Provenance


def _data(n: int = 8, size: int = 6) -> ImageSet:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, 1:4, 1:4] = 1
    return ImageSet(
        images=rng.integers(0, 255, (n, size, size, 1), dtype=np.uint8),
        groups=np.array([f"p{i // 2}" for i in range(n)]),
        ids=np.array([f"item{i}" for i in range(n)]),
        masks=masks,
        meta={"spacing": np.full((n, 2), 0.5, np.float32)},
        name="toy",
    )


def _labelled_pool(data: ImageSet) -> Pool:
    pool = Pool.empty(data, "seg", seed=0)
    return pool.label(np.array([0, 3]), 0, "ground-truth", masks=data.masks[[0, 3]])


def _cands(data: ImageSet, src: list[int], value: int | None = None) -> Candidates:
    imgs = data.images[src].copy()
    if value is not None:
        imgs[:] = value
    return Candidates(
        images=imgs,
        masks=data.masks[src].copy(),
        provenance=tuple(
            Provenance(
                source_id=str(data.ids[i]),
                source_group=str(data.groups[i]),
                generator="classic",
                checkpoint="classic:abc",
                perturbation={"rotate_deg": float(k)},
                seed=[0, 1, 2],
            )
            for k, i in enumerate(src)
        ),
    )


def test_label_records_costs_and_expert_count() -> None:
    data = _data()
    pool = _labelled_pool(data)
    assert pool.n_expert_labels == 2 and pool.n_oracle_calls == 0
    pool = pool.label(np.array([5]), 1, "physics", masks=data.masks[[5]], cost="oracle")
    assert pool.n_expert_labels == 2 and pool.n_oracle_calls == 1
    assert pool.label_cost.tolist()[:6] == ["expert", "none", "none", "expert", "none", "oracle"]
    with pytest.raises(DataError, match="'expert' or 'oracle'"):
        pool.label(np.array([1]), 1, "x", masks=data.masks[[1]], cost="inherited")


def test_append_synthetic_save_load_round_trip(tmp_path) -> None:
    data = _data()
    pool = _labelled_pool(data).append_synthetic(_cands(data, [0, 3, 0]), 1)
    assert len(pool) == 11 and pool.n_real == 8 and pool.n_synthetic == 3
    assert pool.synthetic.tolist() == [8, 9, 10]
    assert pool.labelled.tolist() == [0, 3]  # real items only
    assert 8 not in pool.unlabelled and pool.n_rounds == 1  # synthetic rounds do not count
    assert pool.ids[8:].tolist() == ["syn:1:0:item0", "syn:1:1:item3", "syn:1:2:item0"]
    assert pool.label_cost[8:].tolist() == ["inherited"] * 3
    assert pool.n_expert_labels == 2  # synthetic items are never expert labels
    assert pool.provenance_of(9)["round"] == 1 and pool.provenance_of(2) is None
    assert pool.provenance_of(10)["perturbation"] == {"rotate_deg": 2.0}
    # a second batch in a later round gets fresh ids
    pool = pool.append_synthetic(_cands(data, [3]), 2)
    assert pool.ids[-1] == "syn:2:3:item3"
    with pytest.raises(DataError, match="append rounds in order"):
        pool.append_synthetic(_cands(data, [3]), 1)

    pool.save(tmp_path)
    back = Pool.load(tmp_path)
    for name in ("ids", "labelled_round", "labelled_by", "masks", "is_synthetic", "label_cost"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pool, name), err_msg=name)
    np.testing.assert_array_equal(back.synthetic_images, pool.synthetic_images)
    assert back.provenance == pool.provenance and back.info == pool.info
    summary = json.loads((tmp_path / "pool.json").read_text())
    assert summary["schema"] == POOL_SCHEMA == 2
    assert summary["n_synthetic"] == 4 and summary["n_expert_labels"] == 2

    train = back.training_set(data)
    assert len(train) == 2 + 4
    assert train.ids[:2].tolist() == ["item0", "item3"]
    assert train.groups[2:].tolist() == ["syn:p0", "syn:p1", "syn:p0", "syn:p1"]
    np.testing.assert_array_equal(train.images[2:], pool.synthetic_images)
    np.testing.assert_array_equal(train.masks[2:], data.masks[[0, 3, 0, 3]])
    assert train.meta["spacing"].shape == (6, 2)  # source metadata travels along
    # strategies see the real items only
    real = back.real()
    assert len(real) == 8 and real.n_synthetic == 0 and real.labelled.tolist() == [0, 3]


def test_synthetic_items_cannot_be_relabelled_and_need_targets() -> None:
    data = _data()
    pool = _labelled_pool(data).append_synthetic(_cands(data, [0]), 1)
    with pytest.raises(DataError, match="already labelled"):
        pool.label(np.array([8]), 2, "ground-truth", masks=data.masks[[0]])
    no_masks = Candidates(
        images=data.images[:1], labels=np.array([1]), provenance=_cands(data, [0]).provenance
    )
    with pytest.raises(DataError, match="inherited masks"):
        pool.append_synthetic(no_masks, 1)


def test_nan_or_constant_candidates_are_refused_by_the_pool() -> None:
    data = _data()
    pool = _labelled_pool(data)
    with pytest.raises(DataError, match="1 candidate images are NaN/inf or constant"):
        pool.append_synthetic(_cands(data, [0], value=7), 1)
    floats = Candidates(
        images=np.full((1, 6, 6, 1), np.nan, np.float32),
        masks=data.masks[:1],
        provenance=_cands(data, [0]).provenance,
    )
    with pytest.raises(DataError, match="NaN/inf or constant"):
        pool.append_synthetic(floats, 1)


def test_synthetic_items_never_enter_validation_or_test() -> None:
    data = _data()
    pool = _labelled_pool(data).append_synthetic(_cands(data, [0, 3]), 1)
    syn = pool.synthetic_set(data)
    with pytest.raises(DataError, match=r"offered to the test split"):
        refuse_synthetic(syn, "test")
    with pytest.raises(DataError, match=r"offered to the validation split"):
        refuse_synthetic(syn, "validation")
    refuse_synthetic(data, "test")  # real items pass
    # the folder form of the mark (activesynth synthesise's syn~<patient> folders) counts too
    from dataclasses import replace

    from activesynth.pool import synthetic_groups

    folder = replace(data, groups=np.array([f"syn~{g}" for g in data.groups]))
    with pytest.raises(DataError, match=r"offered to the test split"):
        refuse_synthetic(folder, "test")
    assert synthetic_groups(np.array(["syn:p0", "syn~p0", "p0", "synp0", "p0~syn"])).tolist() == [
        True, True, False, False, False,
    ]  # fmt: skip
    both = pool.training_set(data)
    split = Split(train=np.array([0, 1]), val=np.array([], np.int64), test=np.array([2, 3]))
    with pytest.raises(DataError, match=r"would enter the test split"):
        check_disjoint(both, split)
    from activesynth.data.imageset import concat

    mixed = concat([data, syn])
    with pytest.raises(DataError, match="synthetic items"):
        # a patient split over a set holding synthetic items puts some in val/test
        for seed in range(20):
            patient_split(mixed, val=0.2, test=0.3, seed=seed)
    with pytest.raises(DataError, match="offered to the pool"):
        Pool.empty(syn, "seg")


def _write_v1(folder: Path, pool: Pool) -> None:
    """A pool.npz exactly as schema 1 (before synthetic items) wrote it."""
    meta = {"schema": 1, "n_items": len(pool), "n_labelled": 3, "n_rounds": 2, "info": pool.info}
    arrays = {
        "meta_json": np.array(json.dumps(meta)),
        "ids": pool.ids,
        "labelled_round": pool.labelled_round,
        "labelled_by": pool.labelled_by,
        "masks": pool.masks,
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.npz").write_bytes(buf.getvalue())


def test_schema_1_pool_file_loads_with_costs_migrated(tmp_path) -> None:
    data = _data()
    pool = _labelled_pool(data).label(np.array([6]), 1, "physics", masks=data.masks[[6]])
    _write_v1(tmp_path, pool)
    old = Pool.load(tmp_path)
    assert old.n_synthetic == 0 and old.provenance == () and old.synthetic_images is None
    np.testing.assert_array_equal(old.labelled_round, pool.labelled_round)
    assert old.label_cost[[0, 3, 6, 1]].tolist() == ["expert", "expert", "oracle", "none"]
    assert old.n_expert_labels == 2 and old.n_oracle_calls == 1
    old.training_set(data)
    old.save(tmp_path)  # saved again as schema 2
    assert json.loads((tmp_path / "pool.json").read_text())["schema"] == 2


@pytest.mark.parametrize(
    ("schema", "why"), [(3, "a newer activesynth wrote it"), (None, "not a pool file")]
)
def test_unknown_pool_schemas_are_refused_with_the_reason(tmp_path, schema, why) -> None:
    _labelled_pool(_data()).save(tmp_path)
    with np.load(tmp_path / "pool.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta_json"]))
    meta["schema"] = schema
    arrays["meta_json"] = np.array(json.dumps(meta))
    np.savez_compressed(tmp_path / "pool.npz", **arrays)
    with pytest.raises(DataError, match=why):
        Pool.load(tmp_path)


def test_corrupt_synthetic_layout_is_refused() -> None:
    data = _data()
    pool = _labelled_pool(data)
    flags = np.zeros(len(pool), bool)
    flags[0] = True
    with pytest.raises(DataError, match="must follow every real item"):
        Pool(pool.ids, pool.labelled_round, pool.labelled_by, masks=pool.masks, is_synthetic=flags)
    assert LabelCost.parse("inherited").expert_labels == 0
    assert LabelCost.EXPERT.expert_labels == 1 and LabelCost.ORACLE.oracle_calls == 1
