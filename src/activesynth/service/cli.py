"""``activesynth serve``: the annotation service on a folder of images (uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main CLI."""

    @app.command()
    def serve(
        images: Annotated[
            Path | None,
            typer.Option(help="Folder (or dataset spec) of images to serve; imported on start."),
        ] = None,
        labels: Annotated[
            Path | None,
            typer.Option(help="Folder of existing masks (default: beside the images)."),
        ] = None,
        mask_pattern: Annotated[
            str, typer.Option(help="Mask file name template.")
        ] = "{stem}_mask{ext}",
        data_dir: Annotated[
            Path | None,
            typer.Option(help="The service's own folder [default: IMAGES/.activesynth]."),
        ] = None,
        db: Annotated[
            str | None,
            typer.Option(
                help="Database URL, e.g. postgresql://user:pw@host/db "
                "[default: sqlite:///DATA_DIR/service.db]."
            ),
        ] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        auth: Annotated[
            bool,
            typer.Option(
                "--auth/--no-auth",
                help="Require tokens (first start: $ACTIVESYNTH_SERVICE_ADMIN_PASSWORD).",
            ),
        ] = False,
        open_image_download: Annotated[
            bool, typer.Option(help="With --auth, GET /datastore/image without a token (Slicer).")
        ] = False,
        lease_minutes: Annotated[
            float, typer.Option(help="How long an image stays reserved.")
        ] = 30.0,
        max_upload_mb: Annotated[float, typer.Option(help="Upload size limit (413 above).")] = 64.0,
        cors: Annotated[
            list[str] | None, typer.Option(help="An origin allowed by CORS (repeat); none: closed.")
        ] = None,
        strategy: Annotated[
            str, typer.Option(help="Strategy whose scoring run trains the model.")
        ] = "entropy",
        train_every: Annotated[
            int, typer.Option(help="Train after every N new final labels (0: on request only).")
        ] = 0,
        seed: Annotated[int, typer.Option(help="Seed of orders, hold-out, training.")] = 0,
        size: Annotated[int, typer.Option(help="Side the model sees (pixels).")] = 64,
        max_steps: Annotated[int, typer.Option(help="Training steps per run.")] = 400,
        threads: Annotated[int | None, typer.Option(help="Torch threads of a job.")] = None,
        request_threads: Annotated[
            int, typer.Option(help="Requests served at once (the others wait their turn).")
        ] = 40,
        ui_dir: Annotated[
            Path | None, typer.Option(help="Serve this folder at /ui/ instead of the built-in UI.")
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only.")] = False,
    ) -> None:
        """Serve a folder to annotators: MONAI Label's REST API (3D Slicer) and /api/v1 (docs at
        /docs). Images are imported on start, existing masks as final labels; the next image
        to label comes from any registered strategy; the model retrains in the background.
        Final labels: GET /api/v1/export?format=png|nifti|dicom-seg (DICOM-SEG: DICOM inputs)."""
        import uvicorn

        from activesynth.cli import setup_logging
        from activesynth.service.app import create_app
        from activesynth.service.settings import Settings

        setup_logging(quiet)
        settings = Settings(
            images=images,
            labels=labels,
            mask_pattern=mask_pattern,
            data_dir=data_dir,
            db=db,
            auth=auth,
            open_image_download=open_image_download,
            lease_seconds=lease_minutes * 60,
            max_upload_mb=max_upload_mb,
            cors_origins=tuple(cors or ()),
            strategy=strategy,
            train_every=train_every,
            seed=seed,
            size=size,
            max_steps=max_steps,
            threads=threads,
            request_threads=request_threads,
            ui_dir=ui_dir,
        )
        app_: Any = create_app(settings)
        uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info")
