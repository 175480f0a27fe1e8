"""The annotation service: ``create_app(settings) -> FastAPI`` (no module-level state).

Two APIs on one app:

- **MONAI Label's REST contract** (``/info/``, ``/activelearning/{strategy}``, ``/datastore/...``,
  ``/infer/{model}``, ``/train/...``, ``/auth/...``), followed exactly as written in
  ``shared/service/MONAI_LABEL_CONTRACT.md``: 200 for every success, no redirects (both slash
  forms are served), multipart requests with the client's fixed boundary, files with a
  Content-Disposition, the infer answer as ``multipart/form-data`` with a Content-Length, and no
  body read on GET/DELETE (the client sends stale Content-Length headers there).
- **Our own API** under ``/api/v1`` (documented at ``/docs``): images, suggestions with scores,
  leases, label versions, the audit log, export of final labels, users, orphans, train runs,
  and for the browser UI an image's raw pixels and the progress data.

Every image handed out (MONAI next sample or ``POST /api/v1/leases``) is leased to its annotator
for ``lease_seconds``; a label for an image leased to someone else is a 409 naming them. When
``auth`` is on, every route but ``/auth/`` and ``/auth/token`` needs a bearer token (and
``GET /datastore/image`` too unless ``open_image_download``); writes need a role.

Startup (in ``create_app``): the data folder must be writable; a SQLite database is locked for
this process (a second server on the same file is refused); the database must be reachable
(its URL is named otherwise); migrations run (``upgrade head``); the folder is imported; orphans
are reported. The background threads start with the app's lifespan and stop with it.
The browser UI (``service/ui/``, see :mod:`activesynth.service.webui`) is served at ``/ui/``
(``Settings.ui_dir`` replaces it with another folder of static files).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from activesynth.errors import ActivesynthError, ConfigError
from activesynth.service import auth as auth_
from activesynth.service import dicomseg, queue
from activesynth.service.db import (
    DatabaseBusy,
    ImageRow,
    LabelRow,
    LeaseRow,
    TrainRunRow,
    UserRow,
    is_transient_db_error,
    make_engine,
    safe_url,
    session_factory,
    upgrade,
    url_password,
    utcnow,
)
from activesynth.service.settings import Settings
from activesynth.service.store import (
    FINAL,
    RequestError,
    Store,
    audit,
    check_id,
    check_tag,
    class_ids,
    compound_ext,
    decode_label,
    expiry,
)
from activesynth.service.worker import Background, iso

log = logging.getLogger(__name__)

MODEL = "segmentation"
LEASE_LOCK = 0x61637476  # PostgreSQL advisory lock key of lease allocation
API = "/api/v1"
MAX_INT = 2**31 - 1  # integers in queries and paths stay in a database INTEGER's range
_CT = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
}


class LeaseRequest(BaseModel):
    """``POST /api/v1/leases``: lease the next image of ``strategy`` (default ``random``) to the
    caller, or the image ``image_id`` (one of the two, not both)."""

    strategy: str | None = None
    image_id: str | None = None
    client_id: str | None = None


class UserRequest(BaseModel):
    """``POST /api/v1/users`` (admin): a new account."""

    name: str
    password: str
    role: str = "annotator"


# ---- the service object held by the app ----------------------------------------------------
@dataclass
class Service:
    """Everything one app instance owns (``app.state.service``)."""

    settings: Settings
    engine: Any
    sessions: Any
    store: Store
    background: Background
    orphans: list[dict[str, Any]]
    import_report: dict[str, Any]
    strategies: dict[str, str]
    lock_fh: Any = None
    started: float = field(default_factory=time.time)
    ranking: queue.Ranking = field(default_factory=lambda: queue.Ranking(0))
    done: queue.DoneSet = field(default_factory=queue.DoneSet)

    def close(self) -> None:
        self.background.close()
        self.engine.dispose()
        if self.lock_fh is not None:
            import fcntl

            fcntl.flock(self.lock_fh, fcntl.LOCK_UN)
            self.lock_fh.close()
            self.lock_fh = None


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"The data folder {folder} is not writable ({exc.strerror}); pass a writable "
            "--data-dir."
        ) from exc


def _lock_sqlite(url: str) -> Any:
    """Hold an exclusive lock beside a SQLite database file for this process's lifetime."""
    import fcntl

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        return None
    db = Path(parsed.database).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    fh = open(db.with_name(db.name + ".lock"), "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.seek(0)
        who = fh.read().strip() or "another process"
        fh.close()
        raise ConfigError(
            f"Another activesynth server ({who}) is using the database {db}; stop it, or give "
            "this one another --data-dir or --db (PostgreSQL serves several servers)."
        ) from exc
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def _strategies() -> dict[str, str]:
    """Strategy names offered (registered segmentation strategies + MONAI's "first")."""
    from activesynth.strategies import STRATEGIES

    out: dict[str, str] = {}
    for name in STRATEGIES:
        cls = STRATEGIES.get(name)
        if name == "oracle" or "seg" not in getattr(cls, "tasks", ("seg",)):
            continue
        doc = (cls.__doc__ or name).strip().splitlines()[0]
        out[name] = doc
    out["first"] = "The first unlabelled image by name (MONAI Label's 'first')."
    return out


def build_service(settings: Settings) -> Service:
    """Open (and check) everything the app needs; raises ConfigError with the culprit named."""
    data_dir = settings.resolved_data_dir().resolve()
    if settings.images is not None and not Path(settings.images).exists():
        raise ConfigError(f"--images {settings.images} does not exist.")
    if settings.labels is not None and not Path(settings.labels).is_dir():
        raise ConfigError(f"--labels {settings.labels} is not a folder.")
    _check_writable(data_dir)
    url = settings.db_url()
    lock_fh = _lock_sqlite(url)
    try:
        engine = make_engine(url)
        upgrade(engine)
        sessions = session_factory(engine)
        store = Store(data_dir, sessions)
        report: dict[str, Any] = {"images": 0, "labels": 0, "skipped": []}
        if settings.images is not None:
            report = store.import_folder(
                Path(settings.images), settings.labels, settings.mask_pattern
            )
        if settings.auth:
            with sessions.begin() as s:
                has_admin = s.scalar(select(func.count()).where(UserRow.role == "admin"))
                if not has_admin:
                    secret = settings.admin_secret()
                    if not secret:
                        raise ConfigError(
                            "--auth is on and no admin account exists: set "
                            "ACTIVESYNTH_SERVICE_ADMIN_PASSWORD (8+ characters) for the first "
                            "start; an 'admin' account is created with it."
                        )
                    auth_.create_user(s, "admin", secret, "admin")
        orphans = [o.as_dict() for o in store.orphans()]
        for o in orphans:
            log.warning("orphan (%s): %s %s", o["kind"], o["path"], o["row"] or "")
        background = Background(settings, store, sessions)
    except BaseException:
        if lock_fh is not None:
            lock_fh.close()
        raise
    log.info("service database %s, data folder %s", safe_url(url), data_dir)
    return Service(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        background=background,
        orphans=orphans,
        import_report=report,
        strategies=_strategies(),
        lock_fh=lock_fh,
        ranking=queue.Ranking(settings.seed),
    )


# ---- request helpers ------------------------------------------------------------------------
class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes; GET/DELETE bodies are never read."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_413(send, int(declared), self.limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(send, seen, self.limit)


async def _send_413(send: Any, size: int, limit: int) -> None:
    body = json.dumps(
        {"detail": f"request body of {size} bytes exceeds the upload limit of {limit} bytes."}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_WHERE = {"query": "query parameter", "path": "path parameter", "header": "header"}


def validation_message(errors: Any) -> str:
    """One line naming the first invalid parameter, its value and the rule it breaks.

    Args:
        errors: FastAPI's ``RequestValidationError.errors()`` list.
    """
    errors = list(errors)
    if not errors:
        return "the request is not valid."
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ())]
    if loc and loc[0] == "body":
        name = "request body" + ("" if len(loc) < 2 else f" field {'.'.join(loc[1:])!r}")
    elif loc:
        name = f"{_WHERE.get(loc[0], loc[0])} {'.'.join(loc[1:])!r}"
    else:
        name = "the request"
    got = first.get("input")
    shown = "" if got is None or isinstance(got, dict) else f" (got {str(got)[:60]!r})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{name}: {first.get('msg', 'invalid')}{shown}{more}."


def jsonable(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors with only JSON-safe values (inputs can be bytes)."""
    out = []
    for e in errors:
        out.append(
            {
                "loc": [str(x) for x in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
        )
    return out


def check_text(value: str, what: str, max_len: int = 200) -> str:
    """A free-text value (client id, user name filter) stored or compared in the database.

    Raises:
        RequestError: 400 when it holds control characters (PostgreSQL text refuses NUL; the
            audit log should not hold terminal escapes) or is longer than ``max_len``.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or len(value) > max_len:
        raise RequestError(
            400,
            f"{what} {value[:60]!r} is not allowed: use at most {max_len} printable characters.",
        )
    return value


def client_id_of(value: Any) -> str | None:
    """The ``client_id`` a client sent (any JSON scalar), as checked text, or None."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise RequestError(400, f"client_id {str(value)[:60]!r} must be a string.")
    return check_text(str(value), "client_id")


def _ts(when: dt.datetime) -> int:
    """Unix seconds of a stored (naive UTC) timestamp."""
    return int(when.replace(tzinfo=dt.UTC).timestamp())


def _client(request: Request) -> str:
    host = request.client.host if request.client else "?"
    return f"{host} {request.headers.get('user-agent', '')}".strip()[:200]


def _multipart_doc(field: str, what: str) -> dict[str, Any]:
    """OpenAPI request body of a MONAI Label multipart upload (read by hand, so declared here)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {
                            "params": {
                                "type": "string",
                                "description": 'a JSON object, e.g. {"client_id": "alice"}',
                            },
                            field: {"type": "string", "format": "binary", "description": what},
                        },
                    }
                }
            },
        }
    }


def _json_doc(**props: str) -> dict[str, Any]:
    """OpenAPI request body of a route that reads an optional JSON object by hand."""
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            k: {"type": "string", "description": v} for k, v in props.items()
                        },
                    }
                }
            },
        }
    }


def _file_response(data: bytes, filename: str) -> Response:
    ext = compound_ext(filename)
    return Response(
        content=data,
        media_type=_CT.get(ext, "application/octet-stream"),
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"; '
            f"filename*=utf-8''{quote(filename)}"
        },
    )


async def _multipart(request: Request) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """(params, {field: (filename, bytes)}) of a multipart request; 400 when it is not one."""
    ctype = request.headers.get("content-type", "")
    if "multipart/form-data" not in ctype:
        raise RequestError(400, f"expected a multipart/form-data request, got {ctype or 'none'!r}.")
    try:
        form = await request.form(max_files=10, max_fields=20)
    except _TooLarge:
        raise
    except Exception as exc:
        raise RequestError(400, f"malformed multipart body ({exc}).") from exc
    params: dict[str, Any] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key == "params":
                try:
                    params = json.loads(value or "{}")
                except json.JSONDecodeError as exc:
                    raise RequestError(400, f"field 'params' is not JSON ({exc}).") from exc
                if not isinstance(params, dict):
                    raise RequestError(400, "field 'params' must be a JSON object.")
        else:
            files[key] = (value.filename or key, await value.read())
    return params, files


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError of bytes not in UTF-8
        raise RequestError(400, f"request body is not JSON ({exc}).") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object.")
    return body


def _task(run: TrainRunRow | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": str(run.id),
        "status": run.status,
        "start_ts": iso(run.start_ts),
        "end_ts": iso(run.end_ts),
        "request": {"model": MODEL, "trigger": run.trigger, "user": run.user},
        "details": list(run.details) or [run.status],
        "result": {
            "steps": run.steps,
            "total_steps": run.total_steps,
            "val_score": run.val_score,
            "n_labels": run.n_labels,
            "checkpoint": run.checkpoint,
        },
    }


def _label_info(row: LabelRow) -> dict[str, Any]:
    return {
        "ext": row.ext,
        "info": {
            **row.info,
            "ts": _ts(row.created_at),
            "name": f"{row.image_id}{row.ext}",
            "version": row.version,
            "user": row.user,
        },
    }


def _multipart_answer(params: dict[str, Any], filename: str, data: bytes) -> Response:
    """The infer answer: multipart/form-data, one params part and one file part, sized."""
    boundary = uuid.uuid4().hex
    ctype = _CT.get(compound_ext(filename), "application/octet-stream")
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="params"\r\n\r\n',
            json.dumps(params).encode(),
            f"\r\n--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'.encode(),
            f"Content-Type: {ctype}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return Response(content=body, media_type=f"multipart/form-data; boundary={boundary}")


def _encode_label(mask: np.ndarray, ext: str, affine: Any = None) -> bytes:
    """(H, W) uint8 class ids -> PNG bytes, or NIfTI bytes of shape (W, H, 1) (x = column)."""
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        img = nib.Nifti1Image(
            np.ascontiguousarray(mask.T[..., None]).astype(np.uint8),
            np.eye(4) if affine is None else affine,
        )
        with tempfile.NamedTemporaryFile(suffix=ext) as fh:
            nib.save(img, fh.name)
            return Path(fh.name).read_bytes()
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---- the app ----------------------------------------------------------------------------------
def create_app(settings: Settings) -> FastAPI:
    """The annotation service app for ``settings`` (see the module docstring).

    Raises:
        ConfigError: read-only data folder, unreachable database (URL named), a second server on
            the same SQLite file, ``--auth`` without an admin password, unknown options.
    """
    from activesynth.registry import did_you_mean

    svc = build_service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        if settings.background:
            svc.background.start()
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(
        title="activesynth annotation service",
        description="MONAI Label-compatible REST API plus activesynth's own API under /api/v1.",
        version="1",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * 1024 * 1024))
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )

    from fastapi.staticfiles import StaticFiles

    from activesynth.service import webui

    if settings.ui_dir is not None and not Path(settings.ui_dir).is_dir():
        raise ConfigError(f"--ui-dir {settings.ui_dir} is not a folder.")
    ui_dir = settings.ui_dir if settings.ui_dir is not None else webui.default_ui_dir()
    app.mount("/ui", StaticFiles(directory=ui_dir, html=True), name="ui")

    @app.exception_handler(RequestError)
    async def _request_error(_r: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ActivesynthError)
    async def _user_error(_r: Request, exc: ActivesynthError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(DatabaseBusy)
    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)  # every pooled PostgreSQL connection busy for 30 s
    async def _db_error(_r: Request, exc: Exception) -> JSONResponse:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        password = url_password(svc.settings.db_url())
        if password:
            first = first.replace(password, "***")
        where = safe_url(svc.settings.db_url())
        if is_transient_db_error(exc):
            # locked, or the connection lost, for longer than a request waits: retryable
            log.error("database unavailable: %s", first)
            return JSONResponse(
                {
                    "detail": f"the database {where} is busy or unreachable ({first}); "
                    "retry in a few seconds."
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        # disk full, read-only, corrupt, a schema mismatch: retrying cannot help, so no 503
        log.error("database error on %s: %s", where, first, exc_info=exc)
        return JSONResponse(
            {"detail": f"the database {where} failed ({first}); see the server log."},
            status_code=500,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":  # no route matched
            detail = (
                f"nothing at {request.method} {request.url.path}; the routes are listed at /docs."
            )
        elif exc.status_code == 405:
            detail = f"{request.method} is not served at {request.url.path}; see /docs."
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        # one line naming the parameter (FastAPI's own list stays under "errors")
        return JSONResponse(
            {"detail": validation_message(exc.errors()), "errors": jsonable(exc.errors())},
            status_code=422,
        )

    # auth
    def caller(role: str | None = None, *, open_read: bool = False) -> Callable[..., auth_.Caller]:
        def dep(request: Request) -> auth_.Caller:
            if not settings.auth:
                return auth_.Caller("anonymous", "admin", False)
            who = auth_.caller_of(svc.sessions, request.headers.get("authorization"))
            if who is None:
                if open_read:
                    return auth_.Caller("anonymous", "annotator", False)
                raise RequestError(401, "a valid token is needed: POST /auth/token first.")
            if role is not None and not who.has(role):
                raise RequestError(403, f"{who.user!r} is a {who.role}; this needs role {role}.")
            return who

        return dep

    reader = caller()
    annotator = caller("annotator")
    reviewer = caller("reviewer")
    admin = caller("admin")

    def holder(who: auth_.Caller, client_id: Any) -> str:
        client_id = client_id_of(client_id)
        if who.authenticated:
            return who.user
        return client_id[:80] if client_id else "anonymous"

    # ---- next sample and leases
    def ranking(strategy: str) -> tuple[list[str] | tuple[str, ...], dict[str, float], str, Any]:
        """(ids best first, scores, how ranked, the score set used); cached (service.queue)."""
        ss = None if strategy in ("first", "random") else svc.background.scores(strategy)
        with svc.sessions() as s:
            r = svc.ranking.ranked(s, strategy, ss)
        return r.ids, r.scores, r.how, r.scoreset

    def check_strategy(strategy: str) -> str:
        if strategy not in svc.strategies:
            raise RequestError(
                404,
                f"unknown strategy {strategy!r}{did_you_mean(strategy, list(svc.strategies))}; "
                "GET /info/ lists them.",
            )
        return strategy

    def leasing(work: Callable[[Any], Any]) -> Any:
        """``work(session)`` in a write transaction that hands out leases one at a time.

        On PostgreSQL an advisory lock serialises lease hand-outs across every server on the
        database (SQLite serialises writers already). A unique-key clash (someone leased the same
        image at the same moment) runs ``work`` again, up to 5 times, then a 503.
        """
        for _attempt in range(5):
            try:
                with svc.sessions.begin() as s:
                    if s.get_bind().dialect.name == "postgresql":
                        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEASE_LOCK})
                    return work(s)
            except IntegrityError:
                continue
        raise RequestError(503, "too many annotators asked at once; retry.")

    def take_next(
        strategy: str,
        who: auth_.Caller,
        client_id: Any,
        request: Request,
        *,
        release_previous: bool,
    ) -> dict[str, Any] | None:
        check_strategy(strategy)
        order, scores, how, _ss = ranking(strategy)
        me = holder(who, client_id)

        def work(s: Any) -> dict[str, Any] | None:
            now = utcnow()
            s.execute(delete(LeaseRow).where(LeaseRow.expires_at <= now))
            released: set[str] = set()
            if release_previous and me != "anonymous":
                released = set(s.scalars(select(LeaseRow.image_id).where(LeaseRow.holder == me)))
                s.execute(delete(LeaseRow).where(LeaseRow.holder == me))
            # "Next Sample" means another image: the one just given back comes last
            pick = queue.first_free(s, order, svc.done, avoid=released)
            if pick is None:
                return None
            lease = LeaseRow(
                image_id=pick,
                holder=me,
                client_id=client_id_of(client_id),
                strategy=strategy,
                created_at=now,
                expires_at=expiry(settings.lease_seconds),
            )
            s.add(lease)
            s.flush()
            img = s.get(ImageRow, pick)
            assert img is not None
            audit(
                s,
                who.user,
                "lease",
                image_id=pick,
                client_id=lease.client_id,
                client=_client(request),
                strategy=strategy,
                holder=me,
                score=scores.get(pick),
                # the audit log alone replays who held what when (bench/load_service.py)
                expires_at=lease.expires_at.isoformat(),
                released=sorted(released),
            )
            return {
                "image": img,
                "lease": {"holder": me, "expires_at": iso(lease.expires_at)},
                "score": scores.get(pick),
                "ranked_by": how,
            }

        return leasing(work)

    def image_json(img: ImageRow) -> dict[str, Any]:
        return {
            "id": img.id,
            "name": img.name,
            "ext": img.ext,
            "height": img.height,
            "width": img.width,
            "patient": img.patient,
            "source": img.source,
            "checksum": f"SHA256:{img.sha256}",
            "ts": _ts(img.created_at),
        }

    # ---- MONAI Label: info, auth
    def info_doc() -> dict[str, Any]:
        with svc.sessions() as s:
            total = s.scalar(select(func.count()).select_from(ImageRow)) or 0
            tags = dict(
                s.execute(
                    select(LabelRow.tag, func.count(func.distinct(LabelRow.image_id))).group_by(
                        LabelRow.tag
                    )
                ).all()
            )
            runs = list(s.scalars(select(TrainRunRow).order_by(TrainRunRow.id)))
        ptr = svc.background.published()
        last = runs[-1] if runs else None
        best = [r.val_score for r in runs if r.status == "DONE" and r.val_score is not None]
        return {
            "name": settings.name,
            "description": "activesynth annotation service (active learning, 2D segmentation)",
            "version": "1",
            "labels": svc.background.label_names(),
            "models": {
                MODEL: {
                    "type": "segmentation",
                    "description": "activesynth task model, retrained as labels come in"
                    + ("" if ptr else " (not trained yet)"),
                    "labels": svc.background.label_names(),
                    "dimension": 2,
                    "config": {},
                }
            },
            "trainers": {
                MODEL: {"description": "train the task model on the final labels", "config": {}}
            },
            "strategies": {k: {"description": v} for k, v in svc.strategies.items()},
            "scoring": {},
            "datastore": {
                "total": int(total),
                "completed": int(tags.get(FINAL, 0)),
                "label_tags": tags,
            },
            "train_stats": {
                MODEL: {
                    "epoch": (last.steps or 0) if last else 0,
                    "total_epochs": last.total_steps if last else settings.max_steps,
                    "total_time": (
                        ((last.end_ts or utcnow()) - last.start_ts).total_seconds() if last else 0
                    ),
                    "best_metric": max(best) if best else 0.0,
                    "status": last.status if last else "NOT_STARTED",
                    "model_version": None if ptr is None else ptr["version"],
                    "history": [
                        {
                            "run": r.id,
                            "n_labels": r.n_labels,
                            "val_score": r.val_score,
                            "end_ts": iso(r.end_ts),
                        }
                        for r in runs
                        if r.status == "DONE"
                    ],
                }
            },
            "orphans": len(svc.orphans),
        }

    @app.get("/info/", tags=["monailabel"])
    @app.get("/info", include_in_schema=False)
    def info(_who: auth_.Caller = Depends(reader)) -> dict[str, Any]:
        return info_doc()

    if settings.auth:

        @app.get("/auth/", tags=["monailabel"])
        @app.get("/auth", include_in_schema=False)
        def auth_info() -> dict[str, Any]:
            return {"enabled": True, "client_id": "activesynth", "realm": "activesynth"}

        @app.post("/auth/token", tags=["monailabel"])
        async def auth_token(request: Request) -> dict[str, Any]:
            form = await request.form()
            name, password = form.get("username"), form.get("password")
            if not isinstance(name, str) or not isinstance(password, str):
                raise RequestError(400, "send username and password as form fields.")
            client = _client(request)

            def login(name: str, password: str) -> str:
                # both transactions may wait (up to WRITE_WAIT_SECONDS) for SQLite's write
                # turn: in a worker thread, never on the event loop that serves everyone
                token = auth_.issue_token(svc.sessions, name, password, settings.token_hours)
                with svc.sessions.begin() as s:
                    audit(s, name, "login", client=client)
                return token

            token = await run_in_threadpool(login, name, password)
            return {"access_token": token, "token_type": "Bearer"}

        @app.get("/auth/token/valid", tags=["monailabel"])
        def auth_valid(who: auth_.Caller = Depends(reader)) -> dict[str, Any]:
            return {"valid": True, "user": who.user, "role": who.role}

    # ---- MONAI Label: next sample
    @app.post(
        "/activelearning/{strategy}",
        tags=["monailabel"],
        openapi_extra=_json_doc(client_id="who asks (the lease holder when auth is off)"),
    )
    async def activelearning(
        strategy: str, request: Request, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        body = await _json_body(request)
        got = await run_in_threadpool(
            take_next, strategy, who, body.get("client_id"), request, release_previous=True
        )
        if got is None:
            return {}
        img: ImageRow = got["image"]
        return {
            **image_json(img),
            "path": str(svc.store.file_of(img.path)),
            "PatientID": img.patient,
            "strategy": strategy,
            "score": got["score"],
            "lease": got["lease"],
        }

    # ---- MONAI Label: datastore
    @app.get("/datastore/", tags=["monailabel"])
    @app.get("/datastore", include_in_schema=False)
    def datastore(output: str | None = None, _w: auth_.Caller = Depends(reader)) -> Any:
        if output is None or output == "stats":
            return info_doc()["datastore"]
        with svc.sessions() as s:
            images = list(s.scalars(select(ImageRow).order_by(ImageRow.id)))
            labels = list(s.scalars(select(LabelRow).order_by(LabelRow.version)))
        if output == "train":
            latest = {r.image_id: r for r in labels if r.tag == FINAL}
            return [
                {
                    "image": str(svc.store.file_of(i.path)),
                    "label": str(svc.store.file_of(latest[i.id].path)),
                }
                for i in images
                if i.id in latest
            ]
        if output != "all":
            raise RequestError(400, f"output={output!r}: use all, train or stats.")
        by_image: dict[str, dict[str, Any]] = {}
        for r in labels:  # ordered by version: the latest wins
            by_image.setdefault(r.image_id, {})[r.tag] = _label_info(r)
        return {
            "name": settings.name,
            "description": "activesynth datastore",
            "images_dir": str(svc.store.images_dir),
            "labels_dir": str(svc.store.labels_dir),
            "objects": {
                i.id: {
                    "image": {
                        "ext": i.ext,
                        "info": {
                            **i.info,
                            "ts": _ts(i.created_at),
                            "name": i.name,
                            "checksum": f"SHA256:{i.sha256}",
                        },
                    },
                    "labels": by_image.get(i.id, {}),
                }
                for i in images
            },
        }

    async def upload(request: Request, image: str | None, who: auth_.Caller) -> dict[str, Any]:
        params, files = await _multipart(request)
        if "file" not in files:
            raise RequestError(400, "multipart field 'file' (the image) is missing.")
        filename, data = files["file"]
        base = Path(filename.replace("\\", "/")).name
        image_id = image or base[: len(base) - len(compound_ext(base))]
        await run_in_threadpool(
            svc.store.add_image,
            check_id(image_id),
            data,
            base,
            user=who.user,
            client_id=client_id_of(params.get("client_id")),
            client=_client(request),
            info={"params": params},
        )
        return {"image": image_id}

    @app.put("/datastore/", tags=["monailabel"], openapi_extra=_multipart_doc("file", "the image"))
    @app.put("/datastore", include_in_schema=False)
    async def upload_image(
        request: Request, image: str | None = None, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        return await upload(request, image, who)

    @app.put(
        "/datastore/image", tags=["monailabel"], openapi_extra=_multipart_doc("file", "the image")
    )
    async def upload_image2(
        request: Request, image: str | None = None, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        return await upload(request, image, who)

    image_reader = caller(open_read=settings.open_image_download)

    @app.get("/datastore/image", tags=["monailabel"])
    def download_image(image: str, _w: auth_.Caller = Depends(image_reader)) -> Response:
        with svc.sessions() as s:
            row = svc.store.image(s, image)
        return _file_response(svc.store.image_bytes(row), row.name)

    @app.get("/datastore/label", tags=["monailabel"])
    def download_label(
        label: str, tag: str = FINAL, _w: auth_.Caller = Depends(reader)
    ) -> Response:
        with svc.sessions() as s:
            svc.store.image(s, label)
            row = svc.store.label(s, label, check_tag(tag))
        return _file_response(svc.store.label_bytes(row), f"{row.image_id}{row.ext}")

    async def save(request: Request, image: str, tag: str, who: auth_.Caller) -> dict[str, Any]:
        params, files = await _multipart(request)
        if "label" not in files:
            raise RequestError(400, "multipart field 'label' (the label file) is missing.")
        filename, data = files["label"]
        base = Path(filename.replace("\\", "/")).name
        row = await run_in_threadpool(
            svc.store.save_label,
            image,
            data,
            base,
            tag=tag,
            user=who.user,
            holder=holder(who, params.get("client_id")),
            client_id=client_id_of(params.get("client_id")),
            client=_client(request),
            info={"params": params},
        )
        if tag == FINAL:
            await run_in_threadpool(svc.background.maybe_auto_train)
        return {
            "image": image,
            "label": image,
            "tag": tag,
            "version": row.version,
            "sha256": row.sha256,
        }

    @app.put(
        "/datastore/label", tags=["monailabel"], openapi_extra=_multipart_doc("label", "the label")
    )
    async def save_label(
        request: Request, image: str, tag: str | None = None, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        return await save(request, image, tag or FINAL, who)

    # ---- MONAI Label: infer
    @app.post(
        "/infer/{model}",
        tags=["monailabel"],
        openapi_extra=_multipart_doc("file", "an image to segment (or give ?image=ID)"),
    )
    async def infer(
        model: str,
        request: Request,
        image: str | None = None,
        who: auth_.Caller = Depends(annotator),
    ) -> Response:
        if model != MODEL:
            raise RequestError(404, f"unknown model {model!r}; this server has {MODEL!r}.")
        params, files = (
            await _multipart(request)
            if "multipart" in request.headers.get("content-type", "")
            else ({}, {})
        )
        return await run_in_threadpool(segment, image, params, files, who, _client(request))

    def segment(
        image: str | None,
        params: dict[str, Any],
        files: dict[str, tuple[str, bytes]],
        who: auth_.Caller,
        client: str,
    ) -> Response:
        """The infer answer for an image id or an uploaded file (runs in a worker thread)."""
        if "file" in files:
            fname, data = files["file"]
            from activesynth.service.store import decode_image

            ext = compound_ext(Path(fname).name)
            pixels = decode_image(data, ext, f"upload {Path(fname).name!r}")
            out_name, affine = f"{Path(fname).name[: -len(ext) or None]}_label", None
        else:
            if image is None:
                raise RequestError(400, "give ?image=ID or a multipart 'file' to segment.")
            with svc.sessions() as s:
                row = svc.store.image(s, image)
            pixels = svc.store.pixels(row)
            ext, out_name, affine = row.ext, row.id, None
            if row.ext in (".nii", ".nii.gz"):
                import nibabel as nib

                affine = nib.load(svc.store.file_of(row.path)).affine
        pred = svc.background.predict(pixels)
        out_ext = ".nii.gz" if ext in (".nii", ".nii.gz") else ".png"
        out_file = f"{check_id(out_name, 'result name')}{out_ext}"
        version = svc.background.model_version()  # not inside the write: it takes a lock
        with svc.sessions.begin() as s:
            audit(
                s,
                who.user,
                "infer",
                image_id=image,
                client_id=client_id_of(params.get("client_id")),
                client=client,
                model_version=version,
            )
        answer = {
            "label_names": svc.background.label_names(),
            "model_version": svc.background.model_version(),
            "shape": list(pred.shape),
        }
        return _multipart_answer(answer, out_file, _encode_label(pred, out_ext, affine))

    # ---- MONAI Label: training
    def latest_run(running_only: bool = False) -> TrainRunRow | None:
        with svc.sessions() as s:
            q = select(TrainRunRow)
            if running_only:
                q = q.where(TrainRunRow.status.in_(("SUBMITTED", "RUNNING")))
            return s.scalars(q.order_by(TrainRunRow.id.desc()).limit(1)).first()

    @app.get("/train/", tags=["monailabel"])
    @app.get("/train", include_in_schema=False)
    def train_status(
        check_if_running: bool = False, all: bool = False, _w: auth_.Caller = Depends(reader)
    ) -> Any:
        if check_if_running:
            run = latest_run(running_only=True)
            if run is None or not svc.background.running():
                return JSONResponse({"detail": "no training task is running"}, status_code=404)
            return _task(run)
        if all:
            with svc.sessions() as s:
                return [_task(r) for r in s.scalars(select(TrainRunRow).order_by(TrainRunRow.id))]
        run = latest_run()
        if run is None:
            return JSONResponse({"detail": "no training task has run yet"}, status_code=404)
        return _task(run)

    def start(request: Request, who: auth_.Caller) -> dict[str, Any]:
        run = svc.background.start_training("request", who.user)
        with svc.sessions.begin() as s:
            audit(s, who.user, "train_start", client=_client(request), run=run.id)
        return _task(run) or {}

    @app.post("/train/", tags=["monailabel"], openapi_extra=_json_doc())
    @app.post("/train", include_in_schema=False)
    async def train_all(request: Request, who: auth_.Caller = Depends(reviewer)) -> dict[str, Any]:
        await _json_body(request)
        try:
            return {MODEL: {"result": await run_in_threadpool(start, request, who), "detail": None}}
        except RequestError as exc:
            return {MODEL: {"result": None, "detail": str(exc)}}

    @app.post("/train/{model}", tags=["monailabel"], openapi_extra=_json_doc())
    async def train_model(
        model: str, request: Request, who: auth_.Caller = Depends(reviewer)
    ) -> dict[str, Any]:
        if model != MODEL:
            raise RequestError(404, f"unknown trainer {model!r}; this server has {MODEL!r}.")
        await _json_body(request)
        return await run_in_threadpool(start, request, who)

    @app.delete("/train/", tags=["monailabel"])
    @app.delete("/train", include_in_schema=False)
    def train_stop(request: Request, who: auth_.Caller = Depends(reviewer)) -> Any:
        run_id = svc.background.stop_training()
        if run_id is None:
            return JSONResponse(None)
        with svc.sessions.begin() as s:
            audit(s, who.user, "train_stop", client=_client(request), run=run_id)
            return _task(s.get(TrainRunRow, run_id))

    # ---- our API
    @app.get(f"{API}/images", tags=["api"])
    def list_images(
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
        limit: int = 100,
        _w: auth_.Caller = Depends(reader),
    ) -> dict[str, Any]:
        limit = max(1, min(limit, 1000))
        with svc.sessions() as s:
            rows = list(
                s.scalars(
                    select(ImageRow).order_by(ImageRow.id).offset(max(0, offset)).limit(limit)
                )
            )
            total = s.scalar(select(func.count()).select_from(ImageRow))
            done = set(s.scalars(select(LabelRow.image_id).where(LabelRow.tag == FINAL)))
            leases = {r.image_id: r for r in s.scalars(select(LeaseRow))}
        now = utcnow()
        return {
            "total": total,
            "items": [
                {
                    **image_json(r),
                    "labelled": r.id in done,
                    "leased_by": leases[r.id].holder
                    if r.id in leases and leases[r.id].expires_at > now
                    else None,
                }
                for r in rows
            ],
        }

    @app.get(f"{API}/images/{{image_id}}", tags=["api"])
    def get_image(image_id: str, _w: auth_.Caller = Depends(reader)) -> dict[str, Any]:
        with svc.sessions() as s:
            img = svc.store.image(s, image_id)
            versions = list(
                s.scalars(
                    select(LabelRow).where(LabelRow.image_id == image_id).order_by(LabelRow.id)
                )
            )
            lease = s.get(LeaseRow, image_id)
        return {
            **image_json(img),
            "labels": [_version_json(v) for v in versions],
            "lease": None
            if lease is None or lease.expires_at <= utcnow()
            else {"holder": lease.holder, "expires_at": iso(lease.expires_at)},
        }

    @app.get(f"{API}/images/{{image_id}}/file", tags=["api"])
    def get_image_file(image_id: str, _w: auth_.Caller = Depends(reader)) -> Response:
        with svc.sessions() as s:
            row = svc.store.image(s, image_id)
        return _file_response(svc.store.image_bytes(row), row.name)

    def _version_json(v: LabelRow) -> dict[str, Any]:
        return {
            "tag": v.tag,
            "version": v.version,
            "ext": v.ext,
            "sha256": v.sha256,
            "user": v.user,
            "client_id": v.client_id,
            "created_at": iso(v.created_at),
        }

    @app.get(f"{API}/images/{{image_id}}/labels", tags=["api"])
    def label_versions(
        image_id: str, tag: str | None = None, _w: auth_.Caller = Depends(reader)
    ) -> list[dict[str, Any]]:
        with svc.sessions() as s:
            svc.store.image(s, image_id)
            q = select(LabelRow).where(LabelRow.image_id == image_id)
            if tag is not None:
                q = q.where(LabelRow.tag == check_tag(tag))
            return [_version_json(v) for v in s.scalars(q.order_by(LabelRow.tag, LabelRow.version))]

    @app.get(f"{API}/images/{{image_id}}/labels/{{tag}}/{{version}}", tags=["api"])
    def label_version_file(
        image_id: str,
        tag: str,
        version: Annotated[int, PathParam(ge=1, le=MAX_INT)],
        _w: auth_.Caller = Depends(reader),
    ) -> Response:
        with svc.sessions() as s:
            svc.store.image(s, image_id)
            row = svc.store.label(s, image_id, check_tag(tag), version)
        return _file_response(svc.store.label_bytes(row), f"{image_id}.v{version}{row.ext}")

    @app.put(
        f"{API}/images/{{image_id}}/labels/{{tag}}",
        tags=["api"],
        openapi_extra=_multipart_doc("label", "the label"),
    )
    async def put_label(
        image_id: str, tag: str, request: Request, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        return await save(request, image_id, check_tag(tag), who)

    @app.get(f"{API}/suggestions", tags=["api"])
    def suggestions(
        strategy: str = "random", limit: int = 20, _w: auth_.Caller = Depends(reader)
    ) -> dict[str, Any]:
        check_strategy(strategy)
        order, scores, how, ss = ranking(strategy)
        with svc.sessions() as s:
            todo = queue.not_final(s, order, svc.done, max(1, min(limit, 1000)))
            leases = {
                r.image_id: r.holder
                for r in s.scalars(
                    select(LeaseRow).where(
                        LeaseRow.expires_at > utcnow(), LeaseRow.image_id.in_(todo)
                    )
                )
            }
        items = [{"id": i, "score": scores.get(i), "leased_by": leases.get(i)} for i in todo]
        version = svc.background.model_version()
        return {
            "strategy": strategy,
            "ranked_by": how,
            "model_version": None if ss is None else ss.model_version,
            "current_model_version": version,
            "stale": ss is not None and ss.model_version != version,
            "computed_at": None if ss is None else ss.computed_at,
            "items": items,
        }

    def lease_image(
        image_id: str, who: auth_.Caller, client_id: Any, request: Request
    ) -> dict[str, Any]:
        """Lease ``image_id`` itself to the caller (the UI opening an image from the queue).

        The caller's own live lease is renewed (a new expiry); someone else's live lease is a
        409 naming them and its expiry. An image with a final label may be leased: its next save
        is a new version. The caller's other leases are kept (the UI gives them back itself).
        """
        me = holder(who, client_id)

        def work(s: Any) -> dict[str, Any]:
            img = svc.store.image(s, image_id)
            now = utcnow()
            lease = s.get(LeaseRow, image_id)
            live = lease is not None and lease.expires_at > now
            if lease is not None and live and lease.holder != me:
                raise RequestError(
                    409,
                    f"image {image_id!r} is leased to {lease.holder!r} until "
                    f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC; take another image.",
                )
            if lease is None:
                lease = LeaseRow(image_id=image_id, created_at=now)
                s.add(lease)
            elif not live:
                lease.created_at = now
            lease.holder = me
            lease.client_id = client_id_of(client_id)
            lease.strategy = "chosen"
            lease.expires_at = expiry(settings.lease_seconds)
            s.flush()
            labelled = (
                s.scalar(
                    select(func.count())
                    .select_from(LabelRow)
                    .where(LabelRow.image_id == image_id, LabelRow.tag == FINAL)
                )
                or 0
            ) > 0
            audit(
                s,
                who.user,
                "lease",
                image_id=image_id,
                client_id=lease.client_id,
                client=_client(request),
                strategy=None,
                holder=me,
                expires_at=lease.expires_at.isoformat(),
                renewed=live,
                labelled=labelled,
                released=[],
            )
            return {
                "image": image_json(img),
                "lease": {"holder": me, "expires_at": iso(lease.expires_at)},
                "renewed": live,
                "labelled": labelled,
            }

        return leasing(work)

    @app.post(f"{API}/leases", tags=["api"])
    def lease_next(
        body: LeaseRequest, request: Request, who: auth_.Caller = Depends(annotator)
    ) -> dict[str, Any]:
        """Lease the next image of ``strategy``, or the image ``image_id`` (409 if someone else
        holds it)."""
        if body.image_id is not None:
            if body.strategy is not None:
                raise RequestError(
                    400, "give either 'strategy' (the next image) or 'image_id', not both."
                )
            return lease_image(body.image_id, who, body.client_id, request)
        got = take_next(
            body.strategy or "random", who, body.client_id, request, release_previous=False
        )
        if got is None:
            return {}
        return {**got, "image": image_json(got["image"])}

    @app.get(f"{API}/leases", tags=["api"])
    def list_leases(_w: auth_.Caller = Depends(reader)) -> list[dict[str, Any]]:
        with svc.sessions() as s:
            return [
                {
                    "image_id": r.image_id,
                    "holder": r.holder,
                    "client_id": r.client_id,
                    "strategy": r.strategy,
                    "expires_at": iso(r.expires_at),
                }
                for r in s.scalars(
                    select(LeaseRow)
                    .where(LeaseRow.expires_at > utcnow())
                    .order_by(LeaseRow.image_id)
                )
            ]

    @app.delete(f"{API}/leases/{{image_id}}", tags=["api"])
    def release(
        image_id: str,
        request: Request,
        client_id: str | None = None,
        expires_at: str | None = None,
        who: auth_.Caller = Depends(annotator),
    ) -> dict[str, Any]:
        """Give a lease back. ``expires_at`` (as the lease was handed out) releases only that
        lease: a 409 when it has been renewed since (a page's late release after a reload)."""
        me = holder(who, client_id)
        with svc.sessions.begin() as s:
            svc.store.image(s, image_id)
            lease = s.get(LeaseRow, image_id)
            if lease is None:
                raise RequestError(404, f"image {image_id!r} is not leased.")
            if lease.holder != me and not (who.authenticated and who.has("admin")):
                raise RequestError(403, f"the lease of {image_id!r} is held by {lease.holder!r}.")
            if expires_at is not None and expires_at != iso(lease.expires_at):
                raise RequestError(
                    409,
                    f"the lease of {image_id!r} now runs until {iso(lease.expires_at)} UTC, not "
                    f"{expires_at[:40]!r}: it was renewed since; not released.",
                )
            s.delete(lease)
            audit(
                s,
                who.user,
                "release",
                image_id=image_id,
                client_id=client_id,
                client=_client(request),
                holder=lease.holder,
            )
        return {"released": image_id}

    @app.get(f"{API}/audit", tags=["api"])
    def audit_log(
        limit: int = 100,
        image_id: str | None = None,
        user: str | None = None,
        _w: auth_.Caller = Depends(reviewer),
    ) -> list[dict[str, Any]]:
        from activesynth.service.db import AuditRow

        with svc.sessions() as s:
            q = select(AuditRow)
            if image_id is not None:
                q = q.where(AuditRow.image_id == check_id(image_id))
            if user is not None:
                q = q.where(AuditRow.user == check_text(user, "user"))
            rows = s.scalars(q.order_by(AuditRow.id.desc()).limit(max(1, min(limit, 10000))))
            return [
                {
                    "id": r.id,
                    "ts": r.ts.isoformat(timespec="milliseconds"),
                    "user": r.user,
                    "client_id": r.client_id,
                    "client": r.client,
                    "action": r.action,
                    "image_id": r.image_id,
                    "detail": r.detail,
                }
                for r in rows
            ]

    @app.get(f"{API}/export", tags=["api"])
    def export(format: str = "png", _w: auth_.Caller = Depends(reviewer)) -> Response:
        """A zip of the latest final label of every image, and ``manifest.json``.

        ``format=png`` / ``nifti``: ``<image_id>.png`` / ``.nii.gz`` class ids; the manifest maps
        image id -> version, user, sha256 of the saved file. ``format=dicom-seg``: a DICOM
        Segmentation ``<image_id>.seg.dcm`` (BINARY, one segment per class, referencing the
        source) for every DICOM image; the manifest holds ``exported`` (as above, plus the SEG's
        UIDs and segments) and ``skipped`` (image id -> reason, e.g. not a DICOM input).
        """
        if format not in ("png", "nifti", "dicom-seg"):
            raise RequestError(400, f"format={format!r}: use png, nifti or dicom-seg.")
        with svc.sessions() as s:
            latest = {
                r.image_id: r
                for r in s.scalars(
                    select(LabelRow).where(LabelRow.tag == FINAL).order_by(LabelRow.version)
                )
            }
            images = (
                {r.id: r for r in s.scalars(select(ImageRow)) if r.id in latest}
                if format == "dicom-seg"
                else {}
            )
        if format == "dicom-seg":
            names = {k: n for n, k in svc.background.label_names().items()}
            data = dicomseg.export_zip(svc.store, latest, images, names)
            return _file_response(data, "final_labels_dicom-seg.zip")
        ext = ".png" if format == "png" else ".nii.gz"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for image_id, row in sorted(latest.items()):
                mask = class_ids(decode_label(svc.store.label_bytes(row), row.ext, row.path))
                zf.writestr(f"{image_id}{ext}", _encode_label(mask, ext))
            zf.writestr(
                "manifest.json",
                json.dumps(
                    {
                        i: {"version": r.version, "user": r.user, "sha256_of_saved_file": r.sha256}
                        for i, r in sorted(latest.items())
                    },
                    indent=1,
                ),
            )
        return _file_response(buf.getvalue(), f"final_labels_{format}.zip")

    @app.get(f"{API}/orphans", tags=["api"])
    def orphans(_w: auth_.Caller = Depends(admin)) -> dict[str, Any]:
        return {"at_start": svc.orphans, "now": [o.as_dict() for o in svc.store.orphans()]}

    @app.post(f"{API}/users", tags=["api"])
    def add_user(
        body: UserRequest, request: Request, who: auth_.Caller = Depends(admin)
    ) -> dict[str, Any]:
        with svc.sessions.begin() as s:
            auth_.create_user(s, body.name, body.password, body.role)
            audit(s, who.user, "add_user", client=_client(request), name=body.name, role=body.role)
        return {"name": body.name, "role": body.role}

    @app.get(f"{API}/train/runs", tags=["api"])
    def train_runs(_w: auth_.Caller = Depends(reader)) -> list[dict[str, Any]]:
        with svc.sessions() as s:
            return [_task(r) for r in s.scalars(select(TrainRunRow).order_by(TrainRunRow.id))]

    @app.get(f"{API}/images/{{image_id}}/pixels", tags=["api"])
    def get_image_pixels(image_id: str, _w: auth_.Caller = Depends(reader)) -> Response:
        """The image's intensities as a raw array (layout in X-Shape / X-Dtype headers)."""
        with svc.sessions() as s:
            row = svc.store.image(s, image_id)
        arr = webui.raw_pixels(svc.store.image_bytes(row), row.ext, f"image {row.id!r}")
        return webui.pixels_response(arr)

    @app.get(f"{API}/progress", tags=["api"])
    def get_progress(_w: auth_.Caller = Depends(reader)) -> dict[str, Any]:
        """Labelled count over time and the validation metric of each training run."""
        with svc.sessions() as s:
            return webui.progress(s)

    @app.get(f"{API}/status", tags=["api"])
    def status(_w: auth_.Caller = Depends(reader)) -> dict[str, Any]:
        return {
            "import": {
                k: (len(v) if isinstance(v, list) else v) for k, v in svc.import_report.items()
            },
            "orphans_at_start": len(svc.orphans),
            "model_version": svc.background.model_version(),
            "training": svc.background.running(),
            "auth": settings.auth,
            "uptime_seconds": time.time() - svc.started,
        }

    return app
