"""The loop with ``synthesis`` on: config checks, synthetic items in the pool and the history
(expert-label x-axis, ``n_synthetic``, summaries), rejected candidates, Mahapatra's pool-masks
protocol with per-class top-k, and exact resume after interruptions and a SIGKILL."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from activesynth.errors import ConfigError
from activesynth.generative.base import GENERATORS
from activesynth.loop import History, LoopConfig, run_loop, spread_by_source
from activesynth.pool import Pool
from activesynth.synthesis.candidates import Candidates
from activesynth.synthesis.classic import ClassicAugmentation
from activesynth.synthesis.report import (
    GALLERY_NAME,
    QUALITY_DEFAULTS,
    collect_synthesis,
    gate_verdict,
    quality_table,
)
from tests.conftest import TINY_SEG_LOOP, stop_loop_at


@GENERATORS.register("test-constant")
class _ConstantEveryThird(ClassicAugmentation):
    """Classic augmentation whose every third candidate is a constant (blank) image."""

    name: ClassVar[str] = "test-constant"

    def propose(self, sources, n, *, rng) -> Candidates:
        c = super().propose(sources, n, rng=rng)
        imgs = c.images.copy()
        imgs[::3] = 17
        return replace(c, images=imgs)


SYN: dict[str, Any] = {
    **TINY_SEG_LOOP,
    "strategy": "entropy",
    "max_steps": 6,
    "eval_every": 3,
    "synthesis": {"generator": "classic", "per_source": 3, "top_k": 4},
}


def syn_cfg(**over: Any) -> LoopConfig:
    return LoopConfig.from_dict({**SYN, **over})


# ---- configuration -------------------------------------------------------------------------------
def test_synthesis_config_defaults_and_checks() -> None:
    cfg = syn_cfg()
    assert cfg.synthesis == {
        "generator": "classic",
        "params": {},
        "per_source": 3,
        "top_k": 4,
        "score": "entropy",
        "score_params": {},
        "sources": "labelled",
        "max_sources": None,
        "quality": QUALITY_DEFAULTS,
    }
    assert LoopConfig.from_dict(cfg.as_dict()) == cfg
    assert syn_cfg(synthesis=None).synthesis is None
    bad = [
        ({"per_source": 201}, r"per_source must be an integer in \[1, 200\]"),
        ({"generator": "clasic"}, "Did you mean 'classic'"),
        ({"params": {"rotate_deg": 500}}, "rotate_deg"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_k": {"lumen": -1}}, "top_k per class"),
        ({"score": "entorpy"}, "Did you mean 'entropy'"),
        ({"sources": "pool"}, "Unknown synthesis sources"),
        ({"per_sorce": 2}, "Did you mean 'per_source'"),
        ({"max_sources": 0}, "max_sources"),
        ({"quality": {"max_item": 9}}, "Did you mean 'max_items'"),
        ({"quality": {"gallery": -1}}, "gallery must be an integer >= 0"),
        ({"gate": {"min_fidelty": 0.4}}, "Did you mean 'min_fidelity'"),
        ({"gate": {"min_fidelity": 1.5}}, r"min_fidelity must be a number in \[0, 1\]"),
        ({"gate": {"min_ssim": True}}, r"min_ssim must be a number in \[-1, 1\]"),
        ({"gate": {}}, "gate names no threshold"),
        ({"gate": 0.4}, "gate must be a mapping"),
        ({"gate": {"min_fidelity": 0.4}, "quality": False}, "turn synthesis quality on"),
    ]
    for over, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            syn_cfg(synthesis={**SYN["synthesis"], **over})
    with pytest.raises(ConfigError, match="needs 'top_k'"):
        syn_cfg(synthesis={"generator": "classic", "per_source": 2})


def test_gate_is_stored_only_when_given() -> None:
    """Runs made before the gate keep their normalised config, hence their run id."""
    assert "gate" not in syn_cfg().synthesis
    gated = syn_cfg(synthesis={**SYN["synthesis"], "gate": {"min_ssim": 0.5}})
    assert gated.synthesis["gate"] == {"min_fidelity": None, "min_ssim": 0.5}
    assert LoopConfig.from_dict(gated.as_dict()) == gated


def test_max_per_source_is_stored_only_when_given_and_checked() -> None:
    assert "max_per_source" not in syn_cfg().synthesis  # older runs keep their run id
    spread = syn_cfg(synthesis={**SYN["synthesis"], "max_per_source": 2})
    assert spread.synthesis["max_per_source"] == 2
    assert LoopConfig.from_dict(spread.as_dict()) == spread
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="max_per_source must be an integer >= 1"):
            syn_cfg(synthesis={**SYN["synthesis"], "max_per_source": bad})


def test_spread_by_source_takes_the_ranking_in_order_with_a_cap() -> None:
    ranked = np.array(["a", "a", "a", "b", "a", "c", "b", "b", "d"])
    assert spread_by_source(ranked, 2, 4).tolist() == [0, 1, 3, 5]
    assert spread_by_source(ranked, 1, 9).tolist() == [0, 3, 5, 8]  # only 4 sources
    assert spread_by_source(ranked, 9, 3).tolist() == [0, 1, 2]  # no cap binds: the top k
    assert spread_by_source(ranked[:0], 1, 3).tolist() == []


def test_gate_verdict_on_measured_figures() -> None:
    gate = {"min_fidelity": 0.4, "min_ssim": None}
    seg = {"label_fidelity": {"mask_dice_mean": 0.21}, "ssim": {"mean": 0.17}}
    v = gate_verdict(seg, gate)
    assert not v["passed"] and v["reasons"] == ["fidelity 0.210 < 0.4"]
    assert v["fidelity"] == 0.21 and v["min_fidelity"] == 0.4
    assert gate_verdict({"label_fidelity": {"class_agreement": 0.9}}, gate)["passed"]
    # a figure the gate needs but the batch did not measure fails it
    for q in (
        None,
        {"label_fidelity": {"model": "m"}},
        {"label_fidelity": {"mask_dice_mean": None}},
    ):
        assert gate_verdict(q, gate)["reasons"] == ["fidelity not measured"]
    both = gate_verdict(seg, {"min_fidelity": 0.1, "min_ssim": 0.2})
    assert both["reasons"] == ["ssim 0.170 < 0.2"]


# ---- a run ---------------------------------------------------------------------------------------
def reference_config() -> LoopConfig:
    """The run of the ``reference`` fixture (tests/conftest.py): one uninterrupted tiny
    segmentation run with classic synthesis."""
    return syn_cfg()


def test_synthetic_items_join_training_but_not_the_label_count(reference) -> None:
    cfg, hist, out = reference
    assert hist.stop_reason == "schedule done"
    # the x-axis counts expert labels only; synthetic items are reported separately
    assert hist.column("n_labelled").tolist() == [4, 7, 10]
    assert hist.column("n_expert_labels").tolist() == [4, 7, 10]
    assert hist.column("n_synthetic").tolist() == [0, 4, 8]
    assert [r["n_oracle_calls"] for r in hist.records] == [0, 0, 0]
    assert hist.records[0]["synthetic"] is None
    n_pool = hist.records[0]["n_pool"]
    assert all(r["n_pool"] == n_pool for r in hist.records)
    assert hist.records[2]["fraction"] == pytest.approx(10 / n_pool)
    pool = Pool.load(out)
    assert pool.n_real == n_pool and pool.n_synthetic == 8
    for r, n_src in ((1, 7), (2, 10)):  # sources: the expert-labelled items after round r's query
        s = hist.records[r]["synthetic"]
        assert s["generator"] == "classic" and s["sources"] == "labelled"
        assert s["reads_unbudgeted_labels"] is False
        assert s["n_sources"] == n_src and s["generated"] == 3 * n_src
        assert s["rejected"] == 0 and s["added"] == 4 and len(s["scores"]) == 4
        assert s["scores"] == sorted(s["scores"], reverse=True) and s["per_class"] is None
        assert s["ids"] == pool.ids[pool.labelled_round == r][-4:].tolist()
        assert all(i.startswith("syn:") for i in s["ids"])
    syn = pool.synthetic
    assert (pool.label_cost[syn] == "inherited").all() and (
        pool.labelled_by[syn] == "classic"
    ).all()
    assert pool.n_expert_labels == 10
    labelled_sources = set(pool.ids[pool.labelled])
    for i in syn:
        prov = pool.provenance_of(int(i))
        assert prov["source_id"] in labelled_sources  # honest default: only expert-labelled masks
        assert prov["round"] == pool.labelled_round[i]
        # classic augmentation draws from the round's rng, no per-item seed; the round's seed
        # material is recorded in its own field
        assert prov["seed"] is None and prov["round_seed"] == [0, prov["round"], 2]
        assert set(prov["perturbation"]) == {"flip", "rotate_deg", "scale", "translate_px"}
    # strategies only ever query real items
    for q in hist.queried_ids():
        assert not any(i.startswith("syn:") for i in q)
    assert json.loads((out / "state.json").read_text())["config"]["synthesis"] == cfg.synthesis


@pytest.mark.parametrize(
    "stop_at",
    [
        ("synthesized", 1),
        pytest.param(("labelled", 1), marks=pytest.mark.slow),
        pytest.param(("trained", 1), marks=pytest.mark.slow),
        pytest.param(("synthesized", 2), marks=pytest.mark.slow),
    ],
)
def test_interrupted_synthetic_run_resumes_to_the_same_history(
    reference, tmp_path, stop_at
) -> None:
    cfg, ref, ref_out = reference
    stop_loop_at(cfg, tmp_path, stop_at)
    events: list[tuple[str, Any]] = []
    resumed = run_loop(
        cfg, tmp_path, quiet=True, on_event=lambda e, p: events.append((e, p.get("round")))
    )
    assert resumed.without_timing() == ref.without_timing()
    assert stop_at not in events  # the interrupted step was persisted, not repeated
    a, b = Pool.load(tmp_path), Pool.load(ref_out)
    for name in ("ids", "labelled_round", "masks", "label_cost", "synthetic_images"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.provenance == b.provenance


def test_rejected_candidates_are_counted_and_pool_masks_per_class(tmp_path) -> None:
    """Every third candidate is blank: rejected, counted, never added. Mahapatra's protocol
    reads every pool item's manual mask and is flagged as such; per-class top-k (by the
    highest class in the inherited mask) takes what each class has."""
    synth = {
        "generator": "test-constant",
        "per_source": 3,
        "top_k": {"lumen": 5, "background": 2},
        "sources": "pool-masks",
        "max_sources": 6,
        "score": "margin",
    }
    cfg = syn_cfg(schedule=[2], synthesis=synth)
    hist = run_loop(cfg, tmp_path, quiet=True)
    s = hist.records[1]["synthetic"]
    assert s["reads_unbudgeted_labels"] is True and s["sources"] == "pool-masks"
    assert s["n_sources"] == 6 and s["generated"] == 18 and s["rejected"] == 6
    # every phantom mask holds lumen, so the background class has no candidates to give
    assert s["per_class"] == {"lumen": 5, "background": 0} and s["added"] == 5
    assert s["score"] == "margin"
    pool = Pool.load(tmp_path)
    assert pool.n_synthetic == 5 and hist.records[1]["n_synthetic"] == 5
    flat = pool.synthetic_images.reshape(5, -1)
    assert (flat.max(axis=1) > flat.min(axis=1)).all()  # no blank image got in
    assert hist.column("n_expert_labels").tolist() == [4, 6]


def test_score_strategies_see_candidate_extras_or_are_refused(tmp_path) -> None:
    # model-free random-foreground reads the candidates' presence from their inherited masks
    synth = {**SYN["synthesis"], "score": "random-foreground"}
    hist = run_loop(syn_cfg(schedule=[2], synthesis=synth, max_steps=3), tmp_path / "a", quiet=True)
    assert hist.records[1]["synthetic"]["added"] == 4
    # DAL trains an ensemble on labelled items, which a candidate set does not have
    synth = {**SYN["synthesis"], "score": "dal"}
    with pytest.raises(ConfigError, match="'dal' cannot rank unlabelled candidates"):
        run_loop(syn_cfg(schedule=[2], synthesis=synth, max_steps=3), tmp_path / "b", quiet=True)


@pytest.mark.slow
def test_classification_per_class_top_k_inherits_labels(tmp_path) -> None:
    """Mahapatra et al.'s classification protocol: the top k per class, labels inherited."""
    cls_cfg = {
        **SYN,
        "task": "cls",
        "dataset_kwargs": {"n": 40},
        "channels": [8, 8, 16, 16],
        "initial": 6,
        "initial_method": "balanced",
        "schedule": [3],
    }
    synth = {"generator": "classic", "per_source": 4, "top_k": {"normal": 2, "2": 1}}
    hist = run_loop(LoopConfig.from_dict({**cls_cfg, "synthesis": synth}), tmp_path / "a")
    s = hist.records[1]["synthetic"]
    pool = Pool.load(tmp_path / "a")
    syn = pool.synthetic
    assert s["per_class"] == {"normal": 2, "severe": 1} and s["added"] == 3 == len(syn)
    assert pool.labels[syn].tolist() == [0, 0, 2]
    src = {str(i): int(lab) for i, lab in zip(pool.ids, pool.labels, strict=True)}
    for i in syn:  # each synthetic label is its source's (oracle) label
        assert pool.labels[i] == src[pool.provenance_of(int(i))["source_id"]]
    assert len(set(pool.ids[syn])) == 3
    twice = {**synth, "top_k": {"severe": 1, "2": 1}}
    with pytest.raises(ConfigError, match="names class 'severe' twice"):
        run_loop(LoopConfig.from_dict({**cls_cfg, "synthesis": twice}), tmp_path / "b")


# ---- a real kill ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkilled_synthetic_run_resumes_to_the_same_history(
    reference, kill_loop_cli, tmp_path
) -> None:
    """SIGKILL a CLI run once round 1's synthetic items are saved and its training has started,
    rerun it, and get the uninterrupted run's history and pool."""
    cfg, ref, ref_out = reference
    out = tmp_path / "killed"
    # a generous timeout: the test machine may be heavily shared
    cfg_path, _, marker = kill_loop_cli(cfg, out, "tests.synthesis.test_loop_synthetic")
    assert marker.exists(), "round 1 never started training"
    assert Pool.load(out).n_synthetic == 4  # round 1's synthetic items were saved
    resumed = run_loop(LoopConfig.from_file(cfg_path), out, quiet=True)
    assert resumed.without_timing() == ref.without_timing()
    np.testing.assert_array_equal(
        Pool.load(out).synthetic_images, Pool.load(ref_out).synthetic_images
    )


# ---- the cGAN in the loop (Mahapatra et al.: cGAN candidates ranked by MC dropout) ---------------
#: A cGAN small enough that a whole run takes seconds (quality is not the point here).
TINY_CGAN: dict[str, Any] = {
    "features": 8,
    "n_res_blocks": 1,
    "latent_dim": 4,
    "ae_channels": [4, 8],
    "ae_epochs": 1,
    "feat_channels": [4, 4, 8, 8],
    "feat_epochs": 1,
    "disc_channels": [4, 4, 8, 8, 8, 8, 16, 16],
    "disc_dense": 16,
    "epochs": 1,
    "batch_size": 4,
    "lr": 1e-3,
}
CGAN_SYN = {
    "generator": "cgan",
    "params": TINY_CGAN,
    "per_source": 8,
    "top_k": {"lumen": 4},
    "score": "mc-dropout",
    "max_sources": 4,
}


def cgan_cfg() -> LoopConfig:
    return syn_cfg(schedule=[3], max_steps=3, dropout=0.2, synthesis=CGAN_SYN)


@pytest.fixture(scope="module")
def cgan_reference(tmp_path_factory) -> tuple[LoopConfig, History, Path]:
    cfg = cgan_cfg()
    out = tmp_path_factory.mktemp("cgan-ref")
    return cfg, run_loop(cfg, out, quiet=True), out


def test_cgan_candidates_ranked_by_mc_dropout_join_the_pool(cgan_reference) -> None:
    from activesynth.synthesis.cgan import load_cgan

    _cfg, hist, out = cgan_reference
    assert hist.column("n_expert_labels").tolist() == [4, 7]  # synthetic items are no labels
    assert hist.column("n_synthetic").tolist() == [0, 4]
    s = hist.records[1]["synthetic"]
    assert s["generator"] == "cgan" and s["score"] == "mc-dropout"
    # candidates from 4 of the 7 labelled items (max_sources); the cGAN learns from all 7
    assert s["n_sources"] == 4 and s["generated"] == 4 * 8
    assert s["added"] == 4 and s["per_class"] == {"lumen": 4}
    assert s["checkpoint"].startswith("cgan:")
    # the batch's quality figures, against the round-0 task model, named as such
    q = s["quality"]
    assert q["n"] == 4 == q["n_measured"] and q["rejected"] == {"nan": 0, "constant": 0}
    assert 0 <= q["ssim"]["mean"] <= 1 and q["psnr_db"]["mean"] > 0
    assert q["label_fidelity"]["model"].startswith("task model of round 0 (4 expert labels")
    assert 0 <= q["label_fidelity"]["mask_dice_mean"] <= 1
    assert q["n_fitted_on"] == 7 and q["memorisation"]["ratio"] > 0
    assert "realism" in q["skipped"][0]  # 4 items are too few for 5-fold realism
    assert (out / "round_01" / GALLERY_NAME).stat().st_size > 1000
    rows = collect_synthesis(out)
    assert [r["round"] for r in rows] == [1] and rows[0]["gallery"] is not None
    assert rows[0]["fidelity"] == q["label_fidelity"]["mask_dice_mean"]
    table = quality_table(rows)
    assert "| 1 | 7 | cgan | 4 / 32 |" in table and "not Inception" in table
    pool = Pool.load(out)
    assert pool.n_expert_labels == 7 and (pool.label_cost[pool.synthetic] == "inherited").all()
    # synthetic items offered to a validation or test set are refused
    from activesynth.data.phantoms import make_phantoms
    from activesynth.data.splits import Split, check_disjoint
    from activesynth.errors import DataError
    from activesynth.pool import refuse_synthetic

    data = make_phantoms(28, size=32, seed=0)
    at = {str(i): k for k, i in enumerate(data.ids)}
    real = data.subset([at[str(i)] for i in pool.ids[: pool.n_real]])  # the run's pool items
    syn_set = pool.synthetic_set(real)
    assert syn_set is not None and len(syn_set) == 4
    for part in ("validation", "test"):
        with pytest.raises(DataError, match=f"offered to the {part} split"):
            refuse_synthetic(syn_set, part)
    with pytest.raises(DataError, match="would enter the test split"):
        check_disjoint(syn_set, Split(np.arange(3), np.array([], np.int64), np.array([3])))
    # the cGAN was trained on the expert-labelled items only, cached under the run, and every
    # added item replays from its source pair and the perturbation record in its provenance
    model = load_cgan(out / "cache" / f"cgan-{s['checkpoint'].split(':')[1]}")
    assert model.fingerprint["n"] == 7
    index = {str(i): k for k, i in enumerate(pool.ids)}
    for j, i in enumerate(pool.synthetic):
        prov = pool.provenance_of(int(i))
        src = index[prov["source_id"]]
        assert pool.labelled_round[src] >= 0 and not pool.is_synthetic[src]
        img, mk = model.replay(
            _pool_image(out, prov["source_id"]), pool.masks[src], prov["perturbation"]
        )
        np.testing.assert_array_equal(img, pool.synthetic_images[j])
        np.testing.assert_array_equal(mk, pool.masks[i])
        # the item's own perturbation seed survives the loop; the round's is beside it
        assert isinstance(prov["seed"], int) and prov["round_seed"] == [0, 1, 2]


def _pool_image(out: Path, item_id: str) -> np.ndarray:
    """The phantom image of ``item_id`` as the run loaded it."""
    from activesynth.data.phantoms import make_phantoms

    data = make_phantoms(28, size=32, seed=0)
    return data.images[int(np.flatnonzero(data.ids == item_id)[0])]


@pytest.mark.parametrize(
    "stop_at", [("synthesized", 1), pytest.param(("labelled", 1), marks=pytest.mark.slow)]
)
def test_interrupted_cgan_run_resumes_to_the_same_history(
    cgan_reference, tmp_path, stop_at
) -> None:
    cfg, ref, ref_out = cgan_reference
    stop_loop_at(cfg, tmp_path, stop_at)
    resumed = run_loop(cfg, tmp_path, quiet=True)
    assert resumed.without_timing() == ref.without_timing()
    a, b = Pool.load(tmp_path), Pool.load(ref_out)
    for name in ("ids", "labelled_round", "masks", "label_cost", "synthetic_images"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.provenance == b.provenance


def test_labelled_dataset_masks_sources_for_a_mask_conditioned_generator_in_classification(
    tmp_path,
) -> None:
    """A classification pool holds no masks; 'labelled-dataset-masks' gives the generator the
    expert-labelled items with their expert labels and the dataset's own masks (flagged as
    unbudgeted labels), and max_sources caps the sources but not what the generator learns from."""
    from activesynth.loop import _Run

    synth = {
        "generator": "classic",
        "per_source": 2,
        "top_k": 2,
        "sources": "labelled-dataset-masks",
        "max_sources": 3,
    }
    cfg = syn_cfg(task="cls", channels=[4, 4, 8, 8], synthesis=synth)
    run = _Run(cfg, tmp_path, None, True, None)
    data = run.pool_data
    idx = np.array([1, 4, 6, 9, 12])
    pool = Pool.empty(data, "cls").label(idx, 0, "oracle", labels=data.labels[idx])
    fit_set, sources = run.synthesis_sources(pool, np.random.default_rng(0))
    assert fit_set.ids.tolist() == data.ids[idx].tolist()
    np.testing.assert_array_equal(fit_set.masks, data.masks[idx])  # the dataset's masks
    np.testing.assert_array_equal(fit_set.labels, pool.labels[idx])  # the expert's labels
    assert len(sources) == 3 and set(sources.ids) <= set(fit_set.ids)
    plain = _Run(
        syn_cfg(task="cls", channels=[4, 4, 8, 8], synthesis={**synth, "sources": "labelled"}),
        tmp_path / "b",
        None,
        True,
        None,
    )
    assert plain.synthesis_sources(pool, np.random.default_rng(0))[0].masks is None


def test_a_gated_batch_is_measured_but_not_added(reference, tmp_path) -> None:
    """SSIM to the source is below 1 for every transformed image, so a gate at SSIM 1 keeps
    every batch out: nothing synthetic joins the pool, each round records why, and the real
    part of the run is the ungated reference's until synthetic items would first train a model.
    A gate every batch passes changes nothing."""
    _, ref, ref_out = reference
    gate = {"min_ssim": 1.0, "min_fidelity": 0.0}
    hist = run_loop(syn_cfg(synthesis={**SYN["synthesis"], "gate": gate}), tmp_path, quiet=True)
    assert hist.column("n_synthetic").tolist() == [0, 0, 0]
    assert hist.column("n_expert_labels").tolist() == [4, 7, 10]
    pool = Pool.load(tmp_path)
    assert pool.n_synthetic == 0
    for r in (1, 2):
        s = hist.records[r]["synthetic"]
        assert s["added"] == 0 and s["ids"] == [] and s["ranked"] == 4
        assert s["gate"]["passed"] is False and s["gate"]["min_ssim"] == 1.0
        assert s["gate"]["reasons"] == [f"ssim {s['gate']['ssim']:.3f} < 1"]
        assert s["quality"]["ssim"]["mean"] == s["gate"]["ssim"] < 1
    # round 1's query comes from round 0's model, which no synthetic item has touched yet
    assert hist.queried_ids()[:1] == ref.queried_ids()[:1]
    rows = collect_synthesis(tmp_path)
    assert [r["gated"] for r in rows] == [True, True]
    table = quality_table(rows)
    assert "0 / 21 (gated)" in table and "not added" in table

    passing = tmp_path / "passing"
    open_gate = {"min_fidelity": 0.0}
    hist2 = run_loop(
        syn_cfg(synthesis={**SYN["synthesis"], "gate": open_gate}), passing, quiet=True
    )
    assert hist2.column("n_synthetic").tolist() == ref.column("n_synthetic").tolist()
    assert hist2.queried_ids() == ref.queried_ids()
    assert all(hist2.records[r]["synthetic"]["gate"]["passed"] for r in (1, 2))
    np.testing.assert_array_equal(Pool.load(passing).ids, Pool.load(ref_out).ids)
    assert [r["gated"] for r in collect_synthesis(passing)] == [False, False]


def test_max_per_source_spreads_a_batch_over_sources(reference, tmp_path) -> None:
    """With one item per source, each batch is the best of the same ranking the paper's top k
    comes from, one per source: round 1 (ranked by the shared round-0 model) starts with the
    reference's best candidate and never beats its top-k scores position by position."""
    _, ref, _ = reference
    cfg = syn_cfg(synthesis={**SYN["synthesis"], "max_per_source": 1})
    hist = run_loop(cfg, tmp_path, quiet=True)
    pool = Pool.load(tmp_path)
    for r in (1, 2):
        s = hist.records[r]["synthetic"]
        sel = np.flatnonzero(pool.is_synthetic & (pool.labelled_round == r))
        src = [pool.provenance_of(int(i))["source_id"] for i in sel]
        assert s["added"] == len(sel) == 4 and len(set(src)) == 4
        assert s["scores"] == sorted(s["scores"], reverse=True)
    ours, theirs = hist.records[1]["synthetic"]["scores"], ref.records[1]["synthetic"]["scores"]
    assert ours[0] == theirs[0] and all(a <= b for a, b in zip(ours, theirs, strict=True))
    assert ours != theirs  # the reference's round-1 batch repeats two sources
    assert hist.queried_ids()[:1] == ref.queried_ids()[:1]


def test_a_cap_that_never_binds_reproduces_the_paper_top_k(reference, tmp_path) -> None:
    """max_per_source >= top_k: the whole ranking cut at k is the default top k, so the run is
    the reference run item for item."""
    _, ref, ref_out = reference
    cfg = syn_cfg(synthesis={**SYN["synthesis"], "max_per_source": 4})
    hist = run_loop(cfg, tmp_path, quiet=True)
    for a, b in zip(hist.records[1:], ref.records[1:], strict=True):
        assert a["synthetic"]["ids"] == b["synthetic"]["ids"]
        assert a["synthetic"]["scores"] == b["synthetic"]["scores"]
    np.testing.assert_array_equal(Pool.load(tmp_path).ids, Pool.load(ref_out).ids)
    assert hist.queried_ids() == ref.queried_ids()
    assert [r["test_score"] for r in hist.records] == [r["test_score"] for r in ref.records]


REAL_ONLY_SYN: dict[str, Any] = {
    **SYN["synthesis"],
    "quality": {"reference": "real-only"},
    "gate": {"min_fidelity": 0},
}


@pytest.fixture(scope="module")
def real_only(tmp_path_factory) -> tuple[LoopConfig, History, Path]:
    """One uninterrupted run of the reference config judged by the real-only judge."""
    cfg = syn_cfg(synthesis=REAL_ONLY_SYN)
    out = tmp_path_factory.mktemp("real-only")
    return cfg, run_loop(cfg, out, quiet=True), out


def test_the_real_only_judge_trains_on_real_labels_only(reference, real_only) -> None:
    """``quality.reference = "real-only"``: each round's fidelity judge is a fresh model of the
    round's real labelled items (the synthetic ones excluded: its weights are those of ``fit``
    on the real set alone), the gate reads its figures, and it changes nothing else in the run."""
    import torch

    from activesynth.loop import _round_dir, _Run
    from activesynth.train import fit, load_checkpoint, seed_for

    _, ref, ref_out = reference
    cfg, hist, out = real_only
    assert cfg.synthesis["quality"]["reference"] == "real-only"
    assert hist.queried_ids() == ref.queried_ids()
    assert hist.column("test_score").tolist() == ref.column("test_score").tolist()
    pool = Pool.load(out)
    np.testing.assert_array_equal(pool.ids, Pool.load(ref_out).ids)
    R = _Run(cfg, out, None, quiet=True, on_event=None)
    for r, n_real in ((1, 7), (2, 10)):
        s = hist.records[r]["synthetic"]
        fid = s["quality"]["label_fidelity"]
        assert fid["model"].startswith(f"real-only judge of round {r} ({n_real} real labels")
        assert s["gate"]["passed"] and s["gate"]["fidelity"] == fid["mask_dice_mean"]
        assert 0 < s["quality"]["judge_seconds"] <= s["quality"]["quality_seconds"]
        # the real labels when round r's synthesis ran (rounds <= r); from round 2 on the
        # training set also held round 1's synthetic batch, which the judge must leave out
        before = replace(
            pool, labelled_round=np.where(pool.labelled_round <= r, pool.labelled_round, -1)
        )
        real = before.real_training_set(R.pool_data)
        assert len(real) == n_real
        assert r == 1 or (pool.is_synthetic & (pool.labelled_round < r)).any()
        tcfg = replace(cfg.train_config(r), seed=seed_for(cfg.seed, 12, r) % 2**31)
        alone = fit(real, R.val_set, tcfg, R.model_cfg, quiet=True).model.state_dict()
        judge, _ = load_checkpoint(_round_dir(out, r) / "judge" / "best.pt")
        for k, v in judge.state_dict().items():
            torch.testing.assert_close(v, alone[k], msg=k)
    # the default judge (round r - 1's task model) measured other figures for the same batch
    ours = hist.records[2]["synthetic"]["quality"]["label_fidelity"]["mask_dice_mean"]
    theirs = ref.records[2]["synthetic"]["quality"]["label_fidelity"]
    assert "task model of round 1" in theirs["model"]
    assert ours != theirs["mask_dice_mean"]


def test_a_run_stopped_while_its_judge_trains_resumes_to_the_same_history(
    real_only, tmp_path, monkeypatch
) -> None:
    """Interrupted after round 2's judge saved ``last.pt`` mid-training, the run resumes the
    judge from it and ends with the uninterrupted run's history."""
    import activesynth.loop as loop_mod

    cfg, hist, _ = real_only
    real_fit = loop_mod.fit

    class Stop(Exception):
        pass

    def stop(step: int) -> None:
        if step == 4:
            raise Stop

    def fit_stopping_round_2s_judge(*args: Any, out_dir: Any = None, **kw: Any) -> Any:
        if out_dir is not None and Path(out_dir).parts[-2:] == ("round_02", "judge"):
            kw["on_step"] = stop
        return real_fit(*args, out_dir=out_dir, **kw)

    monkeypatch.setattr(loop_mod, "fit", fit_stopping_round_2s_judge)
    with pytest.raises(Stop):
        run_loop(cfg, tmp_path, quiet=True)
    monkeypatch.undo()
    assert (tmp_path / "round_02" / "judge" / "last.pt").is_file()
    assert not (tmp_path / "round_02" / "record.json").exists()
    assert run_loop(cfg, tmp_path, quiet=True).without_timing() == hist.without_timing()


def test_rank_all_is_the_whole_ranking_the_batch_is_cut_from(reference) -> None:
    """``rank_candidates(rank_all=True)``: every candidate once, in the score's order, its first
    k the batch a plain ``top_k`` adds (same scores); ``max_per_source`` does not cut it."""
    from activesynth.loop import _Run
    from tests.scripts import load_script

    cfg, _, out = reference
    pool_as_of = load_script("experiments/ranking_fidelity.py")._pool_as_of
    R = _Run(cfg, out, None, quiet=True, on_event=None)
    rng = np.random.default_rng(0)
    gen = R.make_generator()
    fit_set, sources = R.synthesis_sources(pool_as_of(Pool.load(out), 1), rng)
    gen.fit(fit_set, rng=rng)
    cands, _ = gen.propose(sources, 3, rng=rng).filter_valid()
    assert len(cands) > 4
    pick, scores, _ = R.rank_candidates(cands, 1)
    order, ranked, counts = R.rank_candidates(cands, 1, rank_all=True)
    assert len(pick) == 4 and counts is None
    assert sorted(order.tolist()) == list(range(len(cands)))
    np.testing.assert_array_equal(order[:4], pick)
    np.testing.assert_allclose(ranked[:4], scores)
    assert np.all(np.diff(ranked) <= 0)  # entropy ranks items one by one
    spread = _Run(cfg, out, None, quiet=True, on_event=None)  # the folder holds cfg's run
    spread.cfg = syn_cfg(synthesis={**SYN["synthesis"], "max_per_source": 1})
    capped, _, _ = spread.rank_candidates(cands, 1)
    src = np.array([p.source_id for p in cands.provenance])
    assert len(set(src[capped].tolist())) == len(capped) == 4  # one per source
    every, again, _ = spread.rank_candidates(cands, 1, rank_all=True)
    np.testing.assert_array_equal(every, order)
    np.testing.assert_allclose(again, ranked)
    # per class: a class given 0 is neither taken from nor ranked; the other is ranked whole
    cls, names = R.candidate_classes(cands)
    c = int(np.bincount(cls).argmax())  # the class with the most candidates
    assert (cls == c).sum() > 2
    other = next(n for i, n in enumerate(names) if i != c)
    per_class = {**SYN["synthesis"], "top_k": {names[c]: 2, other: 0}}
    spread.cfg = syn_cfg(synthesis=per_class)
    two, two_scores, counts = spread.rank_candidates(cands, 1)
    assert counts == {names[c]: 2, other: 0} and len(two) == 2
    whole, whole_scores, counts = spread.rank_candidates(cands, 1, rank_all=True)
    assert counts == {names[c]: int((cls == c).sum()), other: 0}
    assert sorted(whole.tolist()) == np.flatnonzero(cls == c).tolist()
    np.testing.assert_array_equal(whole[:2], two)
    np.testing.assert_allclose(whole_scores[:2], two_scores)
