"""Does the uncertainty ranking pick the synthetic candidates whose inherited labels are right?

Mahapatra et al. rank the conditional GAN's candidates by the task model's Bayesian uncertainty
(Eq. 6, MC dropout) and add the most uncertain, on the premise that an uncertain image is an
informative one. A generated image can also be uncertain because it is a poor image of its mask:
then the ranking adds exactly the candidates whose inherited mask is wrong. docs/results.md
measured that synthesis costs Dice on LGG and on JSRT lungs (seed 0), and that the added batches'
label fidelity varies; this script asks where the added batch sits among all the candidates it
was ranked from.

For each seed and synthesis round of a grid's synthesis arm it replays the round's synthesis step
from the run's own files (the pool as of that round, the generator from the grid's
content-addressed cache, the seeded perturbations): every candidate the loop generated, scored
by the arm's score strategy with round ``r - 1``'s model, exactly as the loop ranked them. The
replay is checked, not assumed: the generator's checkpoint hash must be the one the round
recorded, and the top-k of the replayed ranking must be the round's added items pixel for pixel,
with the recorded scores. Then every candidate's label fidelity is measured (Dice of its inherited
mask with a model's prediction on the image) by two judges:

- ``full``: the seed's matched full-data model (the judge of ``synthesis.requality``);
- ``own``: round ``r - 1``'s task model, the only model the run itself has (what a run could use
  to filter its candidates);
- ``real`` (with ``--real-judge``): the loop's real-only judge (``quality.reference
  "real-only"``, ``loop._Run.real_only_judge``), trained for the replay on the round's real
  labelled items only, in ``OUT/judges/<run>/r<round>/`` (one torch thread): does a judge
  that never saw a synthetic item agree with the full-data model where the run's own model did
  not?

Per round it records the Spearman correlation of score and fidelity, and the mean fidelity of the
added top-k, of all candidates of the class (what a random pick of k gets on average: the arm
``+cgan-random``), and of the k most certain (the other end of the same ranking).

    ACTIVESYNTH_DATA=../shared/data python experiments/ranking_fidelity.py runs/lgg_synthesis \\
        --arm mc-dropout-fast+cgan --out runs/ranking_fidelity_lgg
    python experiments/ranking_fidelity.py runs/lgg_synthesis --out runs/ranking_fidelity_lgg \\
        --summary    # tables, and OUT/ranking_fidelity.png

It needs the bench output (runs' ``pool.npz``, round checkpoints, the grid's ``cache`` and each
seed's ``full`` checkpoint), not an archive. Statistics as the benchmark's: the seed is the unit
of replication (its rounds are averaged first); paired t and Wilcoxon over seeds, and a 95 %
interval from the hierarchical bootstrap (seeds, then rounds). Each replay is kept in
``OUT/s<seed>-r<round>.json`` (written atomically) and skipped on a rerun. Segmentation
synthesis arms are replayed (``top_k`` a count, or one class of the inherited masks); in an arm
with ``max_per_source`` the added batch is the ranking's best with at most that many per source
(``loop.spread_by_source``, as the loop takes it), and "top k" below means that batch. The
replay reads, and never writes, the run folder (the generator's cache may gain nothing: the
checkpoint must already be there, or the script stops).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesis_ablation import contrast_row, find_runs  # the same pairing and statistics


def _pool_as_of(pool: Any, r: int) -> Any:
    """The pool when round ``r``'s synthesis step ran: real items labelled in rounds <= r (the
    round's query is labelled first), synthetic items of earlier rounds only."""
    from dataclasses import replace

    keep = ~pool.is_synthetic | (pool.labelled_round < r)
    n_real = pool.n_real
    syn = np.flatnonzero(pool.is_synthetic & keep) - n_real
    lr = np.where(pool.labelled_round <= r, pool.labelled_round, -1)[keep]
    return replace(
        pool,
        ids=pool.ids[keep],
        labelled_round=lr,
        labelled_by=pool.labelled_by[keep],
        labels=None if pool.labels is None else pool.labels[keep],
        masks=None if pool.masks is None else pool.masks[keep],
        is_synthetic=pool.is_synthetic[keep],
        label_cost=pool.label_cost[keep],
        synthetic_images=None if pool.synthetic_images is None else pool.synthetic_images[syn],
        provenance=tuple(pool.provenance[i] for i in syn),
    )


def replay(
    run: Path, r: int, reference: Path, data_root: str | None, judge_dir: Path | None = None
) -> dict[str, Any]:
    """Round ``r``'s candidates of ``run`` with their scores and the judges' fidelity (the
    real-only judge too when ``judge_dir`` is given: it trains there)."""
    from activesynth.loop import LoopConfig, _Run, spread_by_source
    from activesynth.pool import Pool
    from activesynth.synthesis.quality import mask_fidelity
    from activesynth.synthesis.report import _predictor
    from activesynth.train import load_checkpoint

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    syn = cfg.synthesis
    top_k = syn.get("top_k")
    if cfg.task != "seg" or (isinstance(top_k, dict) and len(top_k) != 1):
        raise SystemExit(
            f"error: {run.name}: the replay covers segmentation arms whose top_k is a count or "
            "names one class."
        )
    R = _Run(cfg, run, data_root, quiet=True, on_event=None)
    pool = Pool.load(run)
    summary = pool.info["synthesis"][str(r)]
    before = _pool_as_of(pool, r)
    rng = np.random.default_rng([int(cfg.seed), int(r), 2])  # the loop's, in its order
    prev = pool.info["synthesis"].get(str(r - 1), {})
    gen = R.make_generator(parent=prev.get("checkpoint"))
    fit_set, sources = R.synthesis_sources(before, rng)
    gen.fit(fit_set, rng=rng)
    if gen.checkpoint_hash != summary["checkpoint"]:
        raise SystemExit(
            f"error: {run.name} round {r}: the replayed generator is {gen.checkpoint_hash}, the "
            f"round recorded {summary['checkpoint']}; the replay is not the run's."
        )
    cands = gen.propose(sources, syn["per_source"], rng=rng)
    valid, _ = cands.filter_valid()
    if isinstance(top_k, dict):  # the class's candidates, as rank_candidates takes them
        cls, names = R.candidate_classes(valid)
        ((key, k),) = top_k.items()
        c = names.index(key) if key in names else int(key)
        members = np.flatnonzero(cls == c)
    else:
        key, k, members = "all", top_k, np.arange(len(valid))
    model = R.model(r - 1)
    # the loop's ranking, asked for every member of the class instead of the top k
    order, ranked, _ = R.rank_candidates(valid, r, rank_all=True)
    if sorted(order.tolist()) != members.tolist():
        raise SystemExit(
            f"error: {run.name} round {r}: the ranking covers {len(order)} candidates, the class "
            f"{key!r} has {len(members)}; the replay is not the run's."
        )
    k = min(int(k), len(members))
    spread = syn.get("max_per_source")
    if spread:  # the loop's cap: the ranking's best, at most `spread` items per source
        ranked_src = np.array([valid.provenance[i].source_id for i in order])
        keep = spread_by_source(ranked_src, int(spread), k)
    else:
        keep = np.arange(k)
    picked, k = order[keep], len(keep)
    added = np.flatnonzero(pool.is_synthetic & (pool.labelled_round == r)) - pool.n_real
    same = len(added) == k and all(
        np.array_equal(valid.images[i], pool.synthetic_images[j])
        for i, j in zip(picked, added, strict=True)
    )
    if not same or not np.allclose(ranked[keep], summary["scores"], atol=1e-6):
        raise SystemExit(
            f"error: {run.name} round {r}: the replayed top {k} are not the round's added items "
            "(images or scores differ); the replay is not the run's."
        )
    scores = np.empty(len(valid))
    scores[:] = np.nan
    scores[order] = ranked
    full, _ = load_checkpoint(reference, R.pool_data)
    imgs, masks = valid.images[members], valid.masks[members]
    fid = {  # each judge's fidelity of every candidate of the class
        "full": mask_fidelity(_predictor(full, "seg"), imgs, masks),
        "own": mask_fidelity(_predictor(model, "seg"), imgs, masks),
    }
    extra: dict[str, Any] = {}
    if judge_dir is not None:
        judge, extra["real_judge"] = R.real_only_judge(before, r, out_dir=judge_dir, threads=1)
        fid["real"] = mask_fidelity(_predictor(judge, "seg"), imgs, masks)
    s = scores[members]
    pos = {int(i): j for j, i in enumerate(members)}
    top = np.array([pos[int(i)] for i in picked])
    low = np.array([pos[int(i)] for i in order[-k:]])
    src = np.array([p.source_id for p in valid.provenance])[members]
    return {
        "run": run.name,
        "seed": int(cfg.seed),
        "round": r,
        "score": syn["score"],
        "class": key,
        "n_candidates": len(cands),
        "n_valid": len(valid),
        "n_class": len(members),
        "k": k,
        "max_per_source": int(spread) if spread else None,
        "n_sources": len(sources),
        "n_sources_top": len(set(src[top].tolist())),
        "checkpoint": gen.checkpoint_hash,
        **extra,
        **{f"spearman_{j}": _spearman(s, f) for j, f in fid.items()},
        **{
            f"fidelity_{j}": {
                "top": float(f[top].mean()),
                "all": float(f.mean()),
                "most_certain": float(f[low].mean()),
            }
            for j, f in fid.items()
        },
        "values": {
            "score": s.tolist(),
            **{f"fid_{j}": f.tolist() for j, f in fid.items()},
            "top": top.tolist(),
            "source": src.tolist(),
        },
        # how each of the run's possible judges ranks the candidates against the full-data one
        "agreement_with_full": {
            j: _spearman(f, fid["full"]) for j, f in fid.items() if j != "full"
        },
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho, None where it is undefined (either input constant, e.g. a judge that
    finds no structure in any candidate: fidelity 0 throughout)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


@contextlib.contextmanager
def _grid_cache(results: str) -> Iterator[None]:
    """``ACTIVESYNTH_CACHE`` pointed at the grid's cache (as the bench's workers had it) unless
    the caller set one, for the duration of a replay only (the variable is restored after)."""
    key = "ACTIVESYNTH_CACHE"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(Path(results) / "cache")
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _job(job: tuple[str, int, int, str, str, str | None, str, bool]) -> str:
    run, seed, r, reference, out, data_root, results, real_judge = job
    import torch

    from activesynth.metrics import to_jsonable
    from activesynth.utils import atomic_write_json

    torch.set_num_threads(1)
    path = Path(out) / f"s{seed}-r{r}.json"
    if path.is_file():  # resume, but never from another study's replay
        old = json.loads(path.read_text())
        if old["run"] != Path(run).name:
            raise SystemExit(f"error: {path} replays run {old['run']}, not {Path(run).name}.")
        if not real_judge or "fidelity_real" in old:
            return str(path)  # else replayed again, now with the real-only judge
    # per run: fit resumes from any folder whose configs match, and arms share them
    judges = Path(out) / "judges" / Path(run).name / f"r{r}" if real_judge else None
    with _grid_cache(results):
        doc = replay(Path(run), r, Path(reference), data_root, judges)
    atomic_write_json(path, to_jsonable(doc))
    return str(path)


def _load(out: Path) -> list[dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-r*.json"))]
    if not docs:
        raise SystemExit(f"error: no finished replays in {out}")
    return sorted(docs, key=lambda d: (d["seed"], d["round"]))


def versus(out: Path, other: Path, rounds: list[int] | None = None) -> str:
    """Markdown: this study's added batches (``out``) set against another arm's replays of the
    same grid (``other``), per seed over the rounds both replayed, full-data judge.

    Rows: (1) the lead of the added batch over all candidates, this arm's minus the other's
    (after round 1 the two arms have different pools and candidates, so it compares each run's
    outcome, not a choice among fixed candidates); (2) the added batches' fidelity, this arm
    minus the other (what each run trained on); (3) rounds where both ranked the very same
    candidates (identical scores and fidelities, e.g. round 1 from a shared generator): this
    arm's batch minus the other's; (4)-(5) with this arm's ``max_per_source`` cap, the cap
    applied offline to fixed candidates (the score order, then :func:`loop.spread_by_source`,
    k = the other arm's batch size): capped minus the plain top k, on the other arm's
    candidates and on this arm's own.
    """
    from activesynth.bench.stats import MIN_TEST_SEEDS
    from activesynth.loop import spread_by_source

    def by_key(d: Path) -> dict[tuple[int, int], dict[str, Any]]:
        return {
            (x["seed"], x["round"]): x for x in _load(d) if rounds is None or x["round"] in rounds
        }

    mine, theirs = by_key(out), by_key(other)
    keys = sorted(set(mine) & set(theirs))
    if not keys:
        raise SystemExit(f"error: {out} and {other} share no replayed (seed, round)")
    cap = next((mine[k].get("max_per_source") for k in keys if mine[k].get("max_per_source")), None)

    def fid(d: dict[str, Any], picks: Any) -> float:
        return float(np.asarray(d["values"]["fid_full"])[np.asarray(picks, np.int64)].mean())

    def capped_minus_plain(d: dict[str, Any], k: int) -> float:
        score, src = np.asarray(d["values"]["score"]), np.asarray(d["values"]["source"])
        order = np.argsort(-score, kind="stable")
        keep = spread_by_source(src[order], int(cap), k)
        return fid(d, order[keep]) - fid(d, order[:k])

    rows: dict[str, dict[int, list[float]]] = {}

    def add(label: str, seed: int, value: float) -> None:
        rows.setdefault(label, {}).setdefault(seed, []).append(value)

    for s, r in keys:
        a, b = mine[(s, r)], theirs[(s, r)]
        fa, fb = a["fidelity_full"], b["fidelity_full"]
        add("lead over all candidates, this arm − the other", s,
            (fa["top"] - fa["all"]) - (fb["top"] - fb["all"]))  # fmt: skip
        add("added batches' fidelity, this arm − the other", s, fa["top"] - fb["top"])
        va, vb = a["values"], b["values"]
        if va["score"] == vb["score"] and va["fid_full"] == vb["fid_full"]:
            add("same candidates: this arm's batch − the other's", s, fa["top"] - fb["top"])
        if cap:
            add(f"cap {cap} on the other arm's candidates: capped − plain top k", s,
                capped_minus_plain(b, len(vb["top"])))  # fmt: skip
            add(f"cap {cap} on this arm's candidates: capped − plain top k", s,
                capped_minus_plain(a, len(vb["top"])))  # fmt: skip
    lines = [
        f"This study ({out.name}) against {other.name}, full-data judge; a seed's value is the "
        "mean over its rounds in both; interval: the hierarchical bootstrap (seeds, then rounds).",
        "",
        "| contrast | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |",
        "|---|---|---|---|---|",
    ]
    for label, per in rows.items():
        seeds = sorted(per)
        n_rounds = sum(len(per[x]) for x in seeds)
        lines.append(
            contrast_row(
                f"{label} ({len(seeds)} seeds, {n_rounds} rounds)",
                [np.asarray(per[x]) for x in seeds],
                len(seeds) >= MIN_TEST_SEEDS,
            )
        )
    return "\n".join(lines)


def summarise(out: Path, rounds: list[int] | None = None) -> str:
    """Markdown: one row per replayed round, then the seed-level contrasts."""
    from activesynth.bench.stats import MIN_TEST_SEEDS

    docs = [d for d in _load(out) if rounds is None or d["round"] in rounds]
    if not docs:
        raise SystemExit(f"error: no replays of rounds {rounds} in {out}")
    lines = [
        "| seed | round | candidates (class) | k | sources (in top k) | Spearman score~fidelity "
        "(full / own) | fidelity full: top k / all / most certain k | own: top k / all / most "
        "certain k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in docs:
        f, o = d["fidelity_full"], d["fidelity_own"]
        lines.append(
            f"| {d['seed']} | {d['round']} | {d['n_class']} | {d['k']} | {d['n_sources']} "
            f"({d['n_sources_top']}) | {_rho(d['spearman_full'])} / {_rho(d['spearman_own'])} | "
            f"{f['top']:.2f} / {f['all']:.2f} / {f['most_certain']:.2f} | "
            f"{o['top']:.2f} / {o['all']:.2f} / {o['most_certain']:.2f} |"
        )
    seeds = sorted({d["seed"] for d in docs})
    test = len(seeds) >= MIN_TEST_SEEDS
    contrasts = (
        ("full", "top", "all", "added top k − all candidates (full-data judge)"),
        ("full", "top", "most_certain", "added top k − most certain k (full-data judge)"),
        ("own", "top", "all", "added top k − all candidates (the run's own model)"),
    )
    lines += [
        "",
        f"Seed-level contrasts ({len(seeds)} seeds; a seed's value is the mean over its "
        f"{min(len([d for d in docs if d['seed'] == s]) for s in seeds)}-"
        f"{max(len([d for d in docs if d['seed'] == s]) for s in seeds)} rounds):",
        "",
        "| contrast | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |",
        "|---|---|---|---|---|",
    ]
    for judge, a, b, label in contrasts:
        per_seed = [
            np.array(
                [
                    d[f"fidelity_{judge}"][a] - d[f"fidelity_{judge}"][b]
                    for d in docs
                    if d["seed"] == s
                ]
            )
            for s in seeds
        ]
        lines.append(contrast_row(label, per_seed, test))
    with_real = [d for d in docs if "fidelity_real" in d]
    if with_real:
        lines += ["", *_judge_table(with_real)]
    rho = [
        [d["spearman_full"] for d in docs if d["seed"] == s and d["spearman_full"] is not None]
        for s in seeds
    ]
    undefined = sum(d["spearman_full"] is None for d in docs)
    lines += [
        "",
        "Spearman correlation of score and full-data fidelity, mean per seed: "
        + " / ".join(_rho(float(np.mean(x)) if x else None) for x in rho)
        + (
            f" ({undefined} round{'s' if undefined > 1 else ''} left out: every candidate had "
            "the same fidelity, so no correlation is defined)"
            if undefined
            else ""
        )
        + (f"; no test below {MIN_TEST_SEEDS} seeds." if not test else "."),
    ]
    return "\n".join(lines)


def _judge_table(docs: list[dict[str, Any]]) -> list[str]:
    """Markdown, over the replays that have the real-only judge: the added batch's mean
    fidelity by each judge per round, the judges' candidate-level agreement with the full-data
    model, and whether the real-only judge is closer to it than the run's own model (seed
    level, over those replays' seeds and rounds)."""
    from activesynth.bench.stats import MIN_TEST_SEEDS

    seeds = sorted({d["seed"] for d in docs})
    test = len(seeds) >= MIN_TEST_SEEDS
    lines = [
        f"The judges a run could use, against the full-data model ({len(docs)} replays with "
        "the real-only judge; added top k's mean fidelity; Spearman of each judge's candidate "
        "fidelities with the full-data model's; a seed's value in the contrasts is the mean "
        "over its replayed rounds, which may differ between seeds):",
        "",
        "| seed | round | full | own | real-only | agreement own / real-only |",
        "|---|---|---|---|---|---|",
    ]
    for d in docs:
        ag = d["agreement_with_full"]
        lines.append(
            f"| {d['seed']} | {d['round']} | {d['fidelity_full']['top']:.2f} | "
            f"{d['fidelity_own']['top']:.2f} | {d['fidelity_real']['top']:.2f} | "
            f"{_rho(ag['own'])} / {_rho(ag['real'])} |"
        )

    def per_seed(value: Any) -> list[np.ndarray]:
        return [np.array([value(d) for d in docs if d["seed"] == s]) for s in seeds]

    def top(d: dict[str, Any], judge: str) -> float:
        return d[f"fidelity_{judge}"]["top"]

    lines += [
        "",
        "| contrast | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |",
        "|---|---|---|---|---|",
        contrast_row(
            "added top k − all candidates (real-only judge)",
            per_seed(lambda d: d["fidelity_real"]["top"] - d["fidelity_real"]["all"]),
            test,
        ),
        contrast_row(
            "abs(own − full) − abs(real-only − full), added batch (> 0: the real-only judge is "
            "closer)",
            per_seed(
                lambda d: abs(top(d, "own") - top(d, "full")) - abs(top(d, "real") - top(d, "full"))
            ),
            test,
        ),
    ]
    return lines


def _rho(x: float | None) -> str:
    """A correlation, or "–" where it is undefined (a constant input: stored as null)."""
    return "–" if x is None or not math.isfinite(x) else f"{x:+.2f}"


def plot(out: Path) -> Path:
    """``OUT/ranking_fidelity.png``: per seed, every candidate's score against its full-data
    fidelity (a colour per round; the added top k ringed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    docs = _load(out)
    seeds = sorted({d["seed"] for d in docs})
    fig, axes = plt.subplots(
        1, len(seeds), figsize=(max(7.0, 3.2 * len(seeds)), 3.6), squeeze=False
    )
    for ax, s in zip(axes[0], seeds, strict=True):
        for d in (d for d in docs if d["seed"] == s):
            v = d["values"]
            x, y = np.asarray(v["score"]), np.asarray(v["fid_full"])
            col = f"C{d['round'] - 1}"
            ax.scatter(x, y, s=3, alpha=0.35, color=col, label=f"round {d['round']}")
            t = np.asarray(v["top"])
            ax.scatter(x[t], y[t], s=22, facecolors="none", edgecolors=col, lw=0.9)
        ax.set_title(f"seed {s}", fontsize=9)
        ax.set_xlabel(f"{docs[0]['score']} score", fontsize=8)
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel("label fidelity (full-data model Dice)", fontsize=8)
    axes[0][0].legend(fontsize=6, markerscale=3, loc="lower left")
    fig.suptitle(
        "Every candidate of each synthesis round: uncertainty score vs. label fidelity "
        "(rings: the added top k)",
        fontsize=9,
    )
    fig.tight_layout()
    return atomic_write_figure(out / "ranking_fidelity.png", fig, dpi=110)


def plot_judges(out: Path, rounds: list[int] | None = None) -> Path | None:
    """``OUT/judges.png``: per replayed round with the real-only judge, the added batch's mean
    label fidelity by the full-data model, the run's own model and the real-only judge (None
    when no replay has the real-only judge)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    docs = [
        d for d in _load(out) if "fidelity_real" in d and (rounds is None or d["round"] in rounds)
    ]
    if not docs:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(docs) + 1.5), 3.2))
    x = np.arange(len(docs))
    for judge, label, marker in (
        ("full", "full-data model", "o"),
        ("own", "the run's own model (round r - 1)", "x"),
        ("real", "real-only judge", "s"),
    ):
        y = [d[f"fidelity_{judge}"]["top"] for d in docs]
        ax.plot(x, y, marker, label=label, ms=6 if marker != "s" else 5, mfc="none")
    ax.set_xticks(x, [f"s{d['seed']} r{d['round']}" for d in docs], fontsize=7, rotation=60)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("added batch's label fidelity (Dice)", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(
        f"Who judges the synthetic labels? {docs[0]['run'].rsplit('-s', 1)[0]}", fontsize=9
    )
    fig.tight_layout()
    return atomic_write_figure(out / "judges.png", fig, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="a bench results dir with pool.npz and full runs")
    ap.add_argument("--arm", default="mc-dropout-fast+cgan", help="the synthesis arm's label")
    ap.add_argument(
        "--rounds",
        type=int,
        nargs="+",
        default=None,
        help="rounds to replay, or with --summary to tabulate (default: every one)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: every seed")
    ap.add_argument("--out", type=Path, default=Path("runs/ranking_fidelity"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--summary", action="store_true", help="print the tables, write the figure")
    ap.add_argument(
        "--versus",
        type=Path,
        default=None,
        help="with --summary: another arm's study folder of the same grid to set this one against",
    )
    ap.add_argument(
        "--real-judge",
        action="store_true",
        help="also train the loop's real-only judge per round (one task-model training each)",
    )
    a = ap.parse_args(argv)
    if a.summary:
        print(summarise(a.out, a.rounds))
        print(f"figure: {plot(a.out)}")
        judges = plot_judges(a.out, a.rounds)
        if judges is not None:
            print(f"figure: {judges}")
        if a.versus is not None:
            print()
            print(versus(a.out, a.versus, a.rounds))
        return 0
    runs = find_runs(a.results, a.arm, a.seeds)
    seeds = sorted(runs)
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in seeds:
        run, ref = runs[s]
        hist = json.loads((run / "history.json").read_text())["rounds"]
        done = [int(h["round"]) for h in hist if h.get("synthetic")]
        for r in done if a.rounds is None else [r for r in a.rounds if r in done]:
            jobs.append(
                (str(run), s, r, str(ref), str(a.out), a.data_root, str(a.results), a.real_judge)
            )
    if a.workers > 1:
        with ProcessPoolExecutor(a.workers) as ex:
            for i, p in enumerate(ex.map(_job, jobs), 1):
                print(f"[{i}/{len(jobs)}] {p}", flush=True)
    else:
        for i, job in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {_job(job)}", flush=True)
    print(summarise(a.out))
    print(f"figure: {plot(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
