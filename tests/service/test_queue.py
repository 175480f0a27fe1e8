"""The queue's cached ranking and chunked first-free search agree with reading everything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from activesynth.service import queue
from activesynth.service.db import (
    ImageRow,
    LabelRow,
    LeaseRow,
    make_engine,
    session_factory,
    upgrade,
    utcnow,
)


@pytest.fixture()
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def _image(i: str) -> ImageRow:
    return ImageRow(
        id=i,
        name=f"{i}.png",
        ext=".png",
        path=f"images/{i}.png",
        sha256="0" * 64,
        height=4,
        width=4,
        source="import",
    )


def _label(i: str, tag: str, version: int = 1) -> LabelRow:
    return LabelRow(
        image_id=i,
        tag=tag,
        version=version,
        ext=".png",
        path=f"labels/{i}_{version}",
        sha256="0" * 64,
        user="u",
    )


def _lease(i: str) -> LeaseRow:
    now = utcnow()
    return LeaseRow(image_id=i, holder="h", strategy="random", created_at=now, expires_at=now)


def _naive(order, final, leased, avoid):
    free = [i for i in order if i not in final and i not in leased]
    return next((i for i in free if i not in avoid), free[0] if free else None)


@pytest.mark.parametrize("seed", range(12))
def test_first_free_equals_reading_everything(sessions, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    ids = [f"img{k:04d}" for k in range(n)]
    final = {i for i in ids if rng.random() < rng.random()}
    leased = {i for i in ids if i not in final and rng.random() < 0.3}
    drafts = {i for i in ids if rng.random() < 0.3}  # non-final tags never count as done
    avoid = set(rng.choice(ids, size=min(n, 2), replace=False).tolist())
    with sessions.begin() as s:
        s.add_all(_image(i) for i in ids)
        s.flush()
        s.add_all(_label(i, "final") for i in final)
        s.add_all(_label(i, "draft") for i in drafts)
        s.add_all(_lease(i) for i in leased)
    order = [ids[k] for k in rng.permutation(n)]
    done = queue.DoneSet()
    # a stale memory of done ids is only ever a subset of the truth
    done.add(rng.choice(sorted(final), size=len(final) // 2).tolist() if final else [])
    chunk = int(rng.integers(1, 70))
    with sessions() as s:
        got = queue.first_free(s, order, done, avoid=avoid, chunk=chunk)
        todo = queue.not_final(s, order, done, limit=7)
    assert got == _naive(order, final, leased, avoid)
    assert todo == [i for i in order if i not in final][:7]
    assert all(i in final for i in done._ids)


def test_ranking_follows_new_images_and_new_scores(sessions):
    with sessions.begin() as s:
        s.add_all(_image(i) for i in ("b", "a", "c"))
    r = queue.Ranking(seed=3)
    with sessions() as s:
        first = r.ranked(s, "random", None)
        assert sorted(first.ids) == ["a", "b", "c"]
        assert r.ranked(s, "random", None) is first  # cached
        assert r.ranked(s, "first", None).ids == ("a", "b", "c")
        assert r.ranked(s, "entropy", None).how == "random (no scores yet)"
        ss = SimpleNamespace(scores={"c": 0.9, "a": 0.1})
        scored = r.ranked(s, "entropy", ss)
        assert scored.ids[:2] == ("c", "a") and scored.ids[2] == "b" and scored.how == "scores"
        ss2 = SimpleNamespace(scores={"a": 0.95, "c": 0.2, "b": 0.5})
        assert r.ranked(s, "entropy", ss2).ids == ("a", "b", "c")  # a new score set re-ranks
    with sessions.begin() as s:
        s.add(_image("d"))
    with sessions() as s:
        again = r.ranked(s, "random", None)
        assert sorted(again.ids) == ["a", "b", "c", "d"]  # a new image re-ranks
        assert r.ranked(s, "entropy", ss2).ids[:3] == ("a", "b", "c")
        assert r.ranked(s, "entropy", ss2).ids[3] == "d"  # unscored images follow
    # the same seed gives the same random order in another process's cache
    with sessions() as s:
        assert queue.Ranking(seed=3).ranked(s, "random", None).ids == again.ids
