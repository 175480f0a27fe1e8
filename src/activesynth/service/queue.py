"""The annotation queue: images ranked by a strategy, and the first free one handed out.

Next sample is the service's hottest request (every annotator asks for it after every label), so
it must cost about the same with 100 or 100,000 images. Two things make it so:

- :class:`Ranking` keeps each strategy's order (ids best first) until the image set (its count:
  images are never deleted) or the strategy's score set changes, instead of reading, sorting and
  shuffling every image id on each request;
- :func:`first_free` walks that order in chunks and asks the database only about the chunk in
  hand (``IN (...)`` on final labels and live leases), inside the caller's write transaction, so
  the answer is as transactional as reading every label and lease was. Images it has seen with a
  final label are remembered and skipped without a query: a final label is never deleted (a new
  save is a new version), so "has a final label" never becomes false again; a remembered id is
  therefore always right to skip, and an id not (yet) remembered is checked in the database.

Measured by ``bench/load_service.py``; the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from activesynth.service.db import ImageRow, LabelRow, LeaseRow
from activesynth.service.store import FINAL

CHUNK = 64  # candidates asked about per query


@dataclass(frozen=True)
class Ranked:
    """One strategy's order: ``ids`` best first, ``scores`` of those scored, how it was ranked."""

    ids: tuple[str, ...]
    scores: dict[str, float]
    how: str
    scoreset: Any  # the worker's ScoreSet used, or None


class Ranking:
    """Per-strategy image order, cached until the image count or the score set changes.

    Args:
        seed: seeds the random order (``np.random.default_rng([seed, 7])`` over sorted ids), so
            the same folder and seed give the same queue.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._ids: tuple[int, tuple[str, ...], tuple[str, ...]] | None = None  # n, sorted, random
        self._cache: dict[str, tuple[int, int, Ranked]] = {}  # strategy -> (n, id(ss), ranked)

    def _base(self, s: Session) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
        n = s.execute(select(func.count()).select_from(ImageRow)).scalar_one()
        with self._lock:
            if self._ids is not None and self._ids[0] == n:
                return self._ids
        ids = tuple(sorted(s.execute(select(ImageRow.id)).scalars()))
        rng = np.random.default_rng([self.seed, 7])
        base = (len(ids), ids, tuple(ids[i] for i in rng.permutation(len(ids))))
        with self._lock:
            self._ids = base
            self._cache.clear()
        return base

    def ranked(self, s: Session, strategy: str, scoreset: Any) -> Ranked:
        """The order of ``strategy``: ``first`` (natural file order), ``random`` or by scores.

        A scored strategy without scores yet ranks at random (``how`` says so); ids without a
        score (added after the scores were computed) follow the scored ones in random order.
        """
        n, ids, random_order = self._base(s)
        key = (n, id(scoreset))
        with self._lock:
            hit = self._cache.get(strategy)
            if hit is not None and hit[:2] == key and hit[2].scoreset is scoreset:
                return hit[2]
        if strategy == "first":
            from activesynth.data.sources.folder import natural_key

            out = Ranked(tuple(sorted(ids, key=natural_key)), {}, "first", None)
        elif strategy == "random":
            out = Ranked(random_order, {}, "random", None)
        elif scoreset is None:
            out = Ranked(random_order, {}, "random (no scores yet)", None)
        else:
            sc = scoreset.scores
            known = set(ids)
            scored = sorted((k for k in sc if k in known), key=lambda k: (-sc[k], k))
            rest = [i for i in random_order if i not in sc]
            out = Ranked(tuple(scored + rest), dict(sc), "scores", scoreset)
        with self._lock:
            self._cache[strategy] = (*key, out)
        return out


class DoneSet:
    """Ids known to have a final label (only ever grows; see the module's docstring)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._ids

    def add(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(ids)


def _chunks(order: Sequence[str], done: DoneSet, size: int) -> Iterable[list[str]]:
    chunk: list[str] = []
    for i in order:
        if i in done:
            continue
        chunk.append(i)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def not_final(s: Session, order: Sequence[str], done: DoneSet, limit: int) -> list[str]:
    """The first ``limit`` ids of ``order`` without a final label (leased or not)."""
    out: list[str] = []
    for ids in _chunks(order, done, max(limit, CHUNK)):
        final = _final(s, ids)
        done.add(final)
        out.extend(i for i in ids if i not in final)
        if len(out) >= limit:
            break
    return out[:limit]


def _final(s: Session, ids: list[str]) -> set[str]:
    return set(
        s.execute(
            select(LabelRow.image_id)
            .where(LabelRow.tag == FINAL, LabelRow.image_id.in_(ids))
            .distinct()
        ).scalars()
    )


def first_free(
    s: Session,
    order: Sequence[str],
    done: DoneSet,
    avoid: set[str] | frozenset[str] = frozenset(),
    chunk: int = CHUNK,
) -> str | None:
    """The first id of ``order`` with no final label and no lease, read in ``s``'s transaction.

    Ids in ``avoid`` (the image an annotator just gave back) are taken only when nothing else is
    free. Expired leases must already be deleted in ``s``.

    Args:
        s: a session inside the write transaction that will create the lease.
        order: ids best first.
        done: ids known to be final (skipped without a query; updated with what is found).
        avoid: ids to hand out last.
        chunk: candidates per database query.

    Returns:
        The id to lease, or None when every image is labelled or leased.
    """
    fallback: str | None = None
    for ids in _chunks(order, done, chunk):
        final = _final(s, ids)
        done.add(final)
        leased = set(
            s.execute(select(LeaseRow.image_id).where(LeaseRow.image_id.in_(ids))).scalars()
        )
        for i in ids:
            if i in final or i in leased:
                continue
            if i not in avoid:
                return i
            if fallback is None:
                fallback = i
    return fallback
