"""Label fidelity of a grid's synthetic batches against the seed's full-data model
(``synthesis.requality``): the same items and subsamples as the run's own record, only the
reference differs; the archive keeps the figures and the report shows them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from activesynth.bench.archive import archive
from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.errors import DataError
from activesynth.synthesis.report import collect_synthesis, quality_table
from activesynth.synthesis.requality import QUALITY_FULL, main, requality, requality_run
from tests.bench.test_synthetic_report import SYN_GRID


@pytest.fixture(scope="module")
def grid_with_full(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("requality") / "res"
    doc = {**SYN_GRID, "name": "syn-full", "full": {"max_steps": 6}}
    res = run_grid(parse_grid(doc), out, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    return out


def _runs(out: Path) -> tuple[Path, Path]:
    runs = sorted((out / "runs").iterdir())
    full = next(d for d in runs if json.loads((d / "unit.json").read_text())["strategy"] == "full")
    syn = next(d for d in runs if d != full)
    return syn, full


def _unmeasured_copy(syn: Path, dest: Path) -> Path:
    """A copy of the synthesis run ``syn`` at ``dest`` (with its pool.npz, as before archiving)
    whose batches have not been re-measured yet."""
    shutil.copytree(syn, dest)
    for f in dest.glob(f"round_*/{QUALITY_FULL}"):
        f.unlink()
    return dest


@pytest.mark.slow  # a two-run grid: about 20 s of CPU
def test_batches_are_re_measured_against_the_seeds_full_data_model(grid_with_full, tmp_path):
    syn, full = _runs(grid_with_full)
    said: list[str] = []
    got = requality(grid_with_full, say=said.append)
    assert got == {"written": {syn.name: [1, 2]}, "skipped": {}, "retrained": {}}
    hist = json.loads((syn / "history.json").read_text())["rounds"]
    for r in (1, 2):
        doc = json.loads((syn / f"round_{r:02d}" / QUALITY_FULL).read_text())
        own = hist[r]["synthetic"]["quality"]
        q = doc["quality"]
        assert doc["added"] == 4 and doc["round"] == r
        assert full.name in q["label_fidelity"]["model"] and "every pool label" in doc["reference"]
        # the same items, fit set, held-out images and subsamples as the loop's record: the
        # figures that do not use the model's features are identical
        for key in ("ssim", "psnr_db", "n_measured", "n_real", "n_fitted_on", "n_holdout"):
            assert q[key] == own[key], key
        assert q["memorisation"]["exact_copies"] == own["memorisation"]["exact_copies"]
        assert 0.0 <= q["label_fidelity"]["mask_dice_mean"] <= 1.0
    # a second call keeps what is there
    assert requality(grid_with_full, say=said.append)["written"] == {syn.name: []}
    # the report reads both fidelities; the archive keeps the file
    rows = collect_synthesis(syn)
    assert all(r["fidelity_full"] is not None for r in rows)
    table = quality_table(rows)
    assert "fidelity (full data)" in table and "re-measured after the run against" in table
    archive(grid_with_full, tmp_path / "arch")
    kept = tmp_path / "arch" / "runs" / syn.name / "round_01" / QUALITY_FULL
    assert kept.is_file()
    # an archive has no pool.npz: skipped with the reason, and the CLI says so too
    (kept).unlink()
    again = requality(tmp_path / "arch", say=said.append)
    assert "no pool.npz" in again["skipped"][syn.name]
    with pytest.raises(DataError, match="re-measure before archiving"):
        requality_run(tmp_path / "arch" / "runs" / syn.name, full / "round_00" / "best.pt", "x")
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(tmp_path / "arch")]) == 3  # skipped runs: a warning, exit 3


@pytest.mark.slow  # shares the grid above
def test_a_seed_without_a_full_run_is_skipped_with_the_reason(grid_with_full, tmp_path):
    syn, _ = _runs(grid_with_full)
    lonely = tmp_path / "res" / "runs"
    lonely.mkdir(parents=True)
    _unmeasured_copy(syn, lonely / syn.name)
    got = requality(tmp_path / "res", say=lambda s: None)
    assert got["written"] == {}
    assert "no finished `full` run" in got["skipped"][syn.name]


@pytest.mark.slow  # shares the grid above; retrains its 6-step full run
def test_a_full_run_from_an_archive_is_retrained_and_checked(grid_with_full, tmp_path):
    syn, full = _runs(grid_with_full)
    requality(grid_with_full, say=lambda s: None)  # the figures of the original checkpoint
    archive(grid_with_full, tmp_path / "arch")  # the full run keeps JSON only
    res = tmp_path / "res"
    (res / "runs").mkdir(parents=True)
    _unmeasured_copy(syn, res / "runs" / syn.name)
    (res / "runs" / full.name).symlink_to(tmp_path / "arch" / "runs" / full.name)
    assert not (res / "runs" / full.name / "round_00" / "best.pt").exists()
    # without retraining: skipped, with the reason and the way out
    got = requality(res, retrain=False, say=lambda s: None)
    assert "no best.pt" in got["skipped"][syn.name] and "--no-retrain" in got["skipped"][syn.name]
    said: list[str] = []
    got = requality(res, say=said.append)
    assert got["written"] == {syn.name: [1, 2]} and got["skipped"] == {}
    check = got["retrained"][full.name]
    assert (res / "references" / full.name / "round_00" / "best.pt").is_file()
    # same machine, config and seed: the retrained recipe gives the archived run's test score,
    # and so the label fidelity the original checkpoint gave
    assert check["retrained_test_score"] == pytest.approx(check["archived_test_score"], abs=1e-9)
    assert any("retraining its recipe" in s for s in said)
    for r in (1, 2):
        doc = json.loads((res / "runs" / syn.name / f"round_{r:02d}" / QUALITY_FULL).read_text())
        orig = json.loads((syn / f"round_{r:02d}" / QUALITY_FULL).read_text())
        assert doc["reference_check"] == check and "retrained after the run" in doc["reference"]
        got_fid, orig_fid = doc["quality"]["label_fidelity"], orig["quality"]["label_fidelity"]
        assert got_fid["mask_dice_mean"] == pytest.approx(orig_fid["mask_dice_mean"], abs=1e-6)
    table = quality_table(collect_synthesis(res / "runs" / syn.name))
    assert "retrained after the run" in table
    # the retrained reference is kept: a later call trains nothing
    for f in (res / "runs" / syn.name).glob(f"round_*/{QUALITY_FULL}"):
        f.unlink()
    stamp = (res / "references" / full.name / "round_00" / "best.pt").stat().st_mtime_ns
    assert requality(res, say=lambda s: None)["written"] == {syn.name: [1, 2]}
    assert (res / "references" / full.name / "round_00" / "best.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow  # shares the grid above
def test_a_pool_from_other_images_is_refused(grid_with_full, tmp_path, monkeypatch):
    import activesynth.experiment as experiment

    syn, full = _runs(grid_with_full)
    copy = tmp_path / syn.name
    _unmeasured_copy(syn, copy)
    real = experiment.prepare_data

    def shuffled(*args, **kwargs):
        data, split, info = real(*args, **kwargs)
        return data, dataclasses.replace(split, train=split.train[1:]), info  # one image less

    monkeypatch.setattr(experiment, "prepare_data", shuffled)
    with pytest.raises(DataError, match="other images"):
        requality_run(copy, full / "round_00" / "best.pt", "x")


@pytest.mark.slow  # shares the grid above
def test_two_full_runs_for_one_seed_are_not_guessed_between(grid_with_full, tmp_path):
    syn, full = _runs(grid_with_full)
    res = tmp_path / "res" / "runs"
    res.mkdir(parents=True)
    _unmeasured_copy(syn, res / syn.name)
    (res / full.name).symlink_to(full)
    (res / "stale-full-run").symlink_to(full)  # e.g. an older grid's full run of the seed
    got = requality(tmp_path / "res", say=lambda s: None)
    assert "2 finished `full` runs for seed 0" in got["skipped"][syn.name]
    # with a manifest, only its current grid's runs count (a changed config's leftovers do not)
    units = {syn.name: {}, full.name: {}}
    (tmp_path / "res" / "manifest.json").write_text(json.dumps({"units": units}))
    got = requality(tmp_path / "res", say=lambda s: None)
    assert got["skipped"] == {} and got["written"] == {syn.name: [1, 2]}
    # a run measured already is not re-reported as skipped at a later sitting
    requality(grid_with_full, say=lambda s: None)
    assert requality(grid_with_full, say=lambda s: None)["skipped"] == {}


@pytest.mark.slow  # shares the grid above; retrains its 6-step full run
def test_a_retrained_reference_far_below_the_archived_run_is_refused(grid_with_full, tmp_path):
    syn, full = _runs(grid_with_full)
    archive(grid_with_full, tmp_path / "arch")
    res = tmp_path / "res"
    (res / "runs").mkdir(parents=True)
    _unmeasured_copy(syn, res / "runs" / syn.name)
    archived = res / "runs" / full.name
    shutil.copytree(tmp_path / "arch" / "runs" / full.name, archived)
    hist = json.loads((archived / "history.json").read_text())
    hist["rounds"][0]["test_score"] += 0.2  # the archived run did far better than a retrain can
    (archived / "history.json").write_text(json.dumps(hist))
    got = requality(res, say=lambda s: None)
    why = got["skipped"][syn.name]
    assert "not a full-data judge" in why and f"{hist['rounds'][0]['test_score']:.3f}" in why
    assert got["written"] == {} and got["retrained"] == {}
    assert not list((res / "runs" / syn.name).glob(f"round_*/{QUALITY_FULL}"))
    assert main([str(res)]) == 3  # skipped: archiving goes on in rerun_all.sh
