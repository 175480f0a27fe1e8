"""Small shared helpers: atomic writes, seeding, torch threads, logging."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

log = logging.getLogger("activesynth")


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[bytes]], None],
    *,
    durable: bool = False,
    mode: int | None = None,
) -> Path:
    """Write a file so that readers see either the old content or the whole new one.

    ``write`` receives a binary file object in the same directory; it is fsynced and renamed over
    ``path`` only after ``write`` returns, so a crash never leaves a half-written file behind.
    The file gets the permissions a plain ``open(path, "w")`` would give: an existing file keeps
    its permission bits, a new one gets ``0o666`` less the process's umask (not ``mkstemp``'s
    0600; a folder's default ACLs are not applied), unless ``mode`` gives them (the annotation
    service keeps patient images and labels at ``0o600``).
    With ``durable`` the folder is fsynced after the rename too, so the new name itself survives
    a power loss (the annotation service acknowledges a label only after this).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:  # what a plain open() would give: the file's own bits, else the umask's
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:  # missing, or a symlink loop (replaced like any other path)
            mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


PRIVATE_MODE = 0o600  # files only their owner may read: patient images and labels
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux), else by the
    set-and-restore dance under a lock (threads of this module never see the temporary value)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so that renames and new names in it are on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_figure(path: str | os.PathLike, fig: Any, *, dpi: float | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically (:func:`atomic_write`) and close it.

    ``dpi=None`` is matplotlib's default (rcParams ``savefig.dpi``: the figure's own dpi). A
    figure made with pyplot is closed there; one made as a plain ``Figure`` (the reports' object
    API) needs no closing, and pyplot is not imported for it.
    """
    import sys

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)  # a no-op for a figure pyplot does not manage
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    def write(fh: IO[bytes]) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        fh.write(buf.getvalue())

    return atomic_write(path, write)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and cgroup-pinned containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads from the machine (never hard-coded). Returns the count used."""
    import torch

    n = n or available_cpus()
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's legacy global state and torch at a process entry point.

    Library code never relies on this: it takes explicit ``np.random.Generator`` /
    ``torch.Generator`` objects. This only guards third-party code that uses global state.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def torch_generator(seed: int) -> Any:
    import torch

    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only on a terminal and when not asked to be quiet."""
    import sys

    return not quiet and sys.stderr.isatty() and os.environ.get("ACTIVESYNTH_QUIET", "") == ""


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Exclusive ``fcntl`` lock on ``lock_path`` (created with its folder) for the block.

    Serialises processes that train the same content-addressed cache entry (VAE manifolds, cGAN
    stages); the kernel releases it when the process dies.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
