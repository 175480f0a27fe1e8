"""Settings of the annotation service (one frozen dataclass; the CLI maps onto it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from activesynth.errors import ConfigError

ADMIN_PASSWORD_ENV = "ACTIVESYNTH_SERVICE_ADMIN_PASSWORD"


@dataclass(frozen=True)
class Settings:
    """Everything :func:`activesynth.service.app.create_app` needs.

    Attributes:
        images: folder (or dataset spec) whose images are imported on start; None = start empty.
        labels: folder of existing masks (default: beside the images, ``mask_pattern``).
        mask_pattern: mask file name template (``{stem}``, ``{ext}``).
        data_dir: the service's own folder (database, uploads, labels, models); default
            ``<images>/.activesynth`` (must be writable).
        db: database URL; default ``sqlite:///<data_dir>/service.db``.
        auth: tokens required (roles annotator < reviewer < admin); an ``admin`` account is
            created on first start with the password in ``$ACTIVESYNTH_SERVICE_ADMIN_PASSWORD``.
        admin_password: that password (read from the environment when None).
        token_hours: lifetime of a token.
        open_image_download: with auth on, let ``GET /datastore/image`` through without a token
            (3D Slicer downloads images without its Authorization header).
        lease_seconds: how long an image handed out stays reserved for its annotator.
        max_upload_mb: larger request bodies get a 413.
        cors_origins: origins allowed by CORS (none by default: closed).
        strategy: the strategy whose scoring run also trains the model.
        train_every: train after every N new final labels (0: only on request).
        seed: seeds the random order, the held-out patients, training and tie-breaks.
        size, channels, max_steps, batch_size, patience, threads: the model and its training.
        request_threads: requests served at once by the worker threads (anyio's default is 40);
            the others wait first come, first served. Fewer threads share the GIL with less
            switching (docs/benchmarks.md measures it).
        background: run the suggestion and training threads (off in unit tests of the store).
        name: app name shown in 3D Slicer.
        ui_dir: a folder of static files served at ``/ui/`` instead of the packaged browser UI.
    """

    images: Path | None = None
    labels: Path | None = None
    mask_pattern: str = "{stem}_mask{ext}"
    data_dir: Path | None = None
    db: str | None = None
    auth: bool = False
    admin_password: str | None = None
    token_hours: float = 12.0
    open_image_download: bool = False
    lease_seconds: float = 1800.0
    max_upload_mb: float = 64.0
    cors_origins: tuple[str, ...] = ()
    strategy: str = "entropy"
    train_every: int = 0
    seed: int = 0
    size: int = 64
    channels: tuple[int, ...] = (8, 16, 32, 64)
    max_steps: int = 400
    batch_size: int = 8
    patience: int = 4
    threads: int | None = None
    request_threads: int = 40
    background: bool = True
    name: str = "activesynth"
    ui_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.request_threads < 1:
            raise ConfigError(
                f"--request-threads {self.request_threads}: give at least 1 (default 40)."
            )

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return Path(self.data_dir)
        if self.images is None:
            raise ConfigError(
                "Give --images DIR or --data-dir DIR (where the service keeps files)."
            )
        base = Path(self.images)
        return (base if base.is_dir() else base.parent) / ".activesynth"

    def db_url(self) -> str:
        return self.db or f"sqlite:///{(self.resolved_data_dir() / 'service.db').resolve()}"

    def admin_secret(self) -> str | None:
        return self.admin_password or os.environ.get(ADMIN_PASSWORD_ENV) or None
