"""Named datasets: the shared real data (``lgg``, ``jsrt``, ``pneumoniamnist``) and ``phantom``,
and users' own data: wherever a name is accepted, the path of a dataset spec (``.json`` /
``.yaml``) or of an image folder is too (see :mod:`activesynth.data.spec`); its keyword
arguments (a run's ``dataset_kwargs``) then override the spec's keys.

The data root is resolved, in order, from an explicit argument (the CLI's ``--data-root``), the
``ACTIVESYNTH_DATA`` environment variable, and ``../shared/data`` relative to the project root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.registry import Registry

ENV_VAR = "ACTIVESYNTH_DATA"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one named dataset.

    Attributes:
        name: registry name.
        loader: ``loader(root, **kwargs) -> ImageSet``; ``root`` is None for embedded data.
        description: one line for ``activesynth datasets``.
        tasks: tasks the dataset supports ("seg", "cls", "reg").
        subdir: folder under the data root (None for embedded data).
        default_size: the side in pixels that trains in minutes on 2 CPU cores.
        official_split: whether ``meta["split"]`` holds a published train/val/test split.
    """

    name: str
    loader: Callable[..., ImageSet]
    description: str
    tasks: tuple[str, ...]
    subdir: str | None
    default_size: int
    official_split: bool = False


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def default_data_root() -> Path:
    return (PROJECT_ROOT / ".." / "shared" / "data").resolve()


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root from the argument, ``$ACTIVESYNTH_DATA`` or the default, checked to exist."""
    if root is not None:
        source, path = "--data-root", Path(root)
    elif os.environ.get(ENV_VAR):
        source, path = f"${ENV_VAR}", Path(os.environ[ENV_VAR])
    else:
        source, path = "the default (../shared/data beside the project)", default_data_root()
    if not path.is_dir():
        raise DataError(
            f"Data directory {path} (from {source}) does not exist. Point the environment "
            f"variable {ENV_VAR} or the CLI option --data-root at the folder holding "
            "lgg_mri_seg/, jsrt_scr_lung/ and pneumoniamnist/."
        )
    return path.resolve()


def check_dataset(name: str, kwargs: dict[str, Any] | None = None) -> None:
    """Check a dataset argument without loading pixels: a registered name (did-you-mean), or a
    spec file / folder whose keys and ``kwargs`` overrides parse (unknown keys refused).

    Raises:
        ConfigError: an unknown name or spec key. DataError: a missing spec file or folder.
    """
    from activesynth.data.spec import is_spec_reference, read_spec

    if name not in DATASETS and is_spec_reference(name):  # a registered name always wins
        read_spec(name, {k: v for k, v in (kwargs or {}).items() if v is not None})
        return
    try:
        DATASETS.get(name)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} Or give the path of a dataset spec (.json / .yaml) or of an image folder."
        ) from None


def load_dataset(name: str, root: str | os.PathLike | None = None, **kwargs: Any) -> ImageSet:
    """Load a registered dataset by name, or a spec file / image folder (see the module docstring).

    Unknown names get a did-you-mean answer; keyword arguments a loader does not take give a
    one-line :class:`ConfigError` naming them.
    """
    from activesynth.data.spec import is_spec_reference, load_spec

    if name not in DATASETS and is_spec_reference(name):  # a registered name always wins
        return load_spec(name, **kwargs)
    check_dataset(name)
    spec = DATASETS.get(name)
    try:
        if spec.subdir is None:
            return spec.loader(None, **kwargs)
        return spec.loader(resolve_data_root(root), **kwargs)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        bad = str(exc).split("argument", 1)[1].strip(" '\"")
        raise ConfigError(
            f"dataset_kwargs: {bad!r} is not an option of dataset {name!r} ({exc}); remove it, "
            "or describe your own folder with a dataset spec."
        ) from None


def _register_builtin() -> None:
    from activesynth.data.sources.jsrt import load_jsrt
    from activesynth.data.sources.lgg import load_lgg
    from activesynth.data.sources.pneumoniamnist import load_pneumoniamnist

    def phantom(
        _root: None,
        *,
        size: int | None = None,
        n: int = 240,
        seed: int = 0,
        target: str = "severity",
        **kw: Any,
    ):
        from activesynth.data.phantoms import make_phantoms, phantom_regression_set
        from activesynth.registry import check_option

        # target "log-resistance": labels are log10 of the Poiseuille resistance (task "reg")
        target = check_option(target, ("severity", "log-resistance"), "phantom target")
        data = make_phantoms(n=n, size=size or 64, seed=seed, **kw)
        return phantom_regression_set(data) if target == "log-resistance" else data

    def lgg(root: Path, *, size: int | None = None, **kw: Any) -> ImageSet:
        return load_lgg(root, size=size, **kw)

    def jsrt(root: Path, *, size: int | None = None, **kw: Any) -> ImageSet:
        return load_jsrt(root, size=size or 128, **kw)

    def pneumonia(root: Path, *, size: int | None = None, **kw: Any) -> ImageSet:
        return load_pneumoniamnist(root, size=size, **kw)

    specs = [
        DatasetSpec(
            "phantom",
            phantom,
            "procedural vessel/valve cross-sections; lumen masks, "
            "severity from a Poiseuille-flow physics oracle (embedded, no download)",
            ("seg", "cls", "reg"),
            None,
            64,
        ),
        DatasetSpec(
            "lgg",
            lgg,
            "TCGA-LGG brain MRI (T1, FLAIR, T1c), FLAIR abnormality masks, 110 patients",
            ("seg", "cls"),
            "lgg_mri_seg",
            128,
        ),
        DatasetSpec(
            "jsrt",
            jsrt,
            "JSRT/SCR chest X-rays, lung-field masks and nodule labels, 247 patients",
            ("seg", "cls"),
            "jsrt_scr_lung",
            128,
            official_split=True,
        ),
        DatasetSpec(
            "pneumoniamnist",
            pneumonia,
            "PneumoniaMNIST 28x28 chest X-rays, normal vs. pneumonia (no patient ids)",
            ("cls",),
            "pneumoniamnist",
            28,
            official_split=True,
        ),
    ]
    for s in specs:
        DATASETS.register(s.name)(s)


_register_builtin()
