"""Image and label files of the annotation service, kept in step with their database rows.

Layout of the data folder (``Settings.data_dir``)::

    service.db                      the SQLite database (unless --db names another one)
    images/<id>.<rand><ext>         uploaded images (imported ones stay where they are)
    labels/<tag>/<id>/v<k>-<rand><ext>   every label version, never overwritten
    models/                         trained checkpoints and the published-model pointer
    scores/                         suggestion scores per strategy and model

Every file is written atomically (temp file in the same folder, fsync, rename, fsync of the
folder) *before* its row is committed, and the row and the file are one unit: the file name
holds a random part, so a concurrent save can never replace a file that another transaction
committed, and a failed commit removes the file it had just written. A crash between the
rename and the commit leaves a file without a row; :meth:`Store.orphans` finds such files (and
temp files, and rows whose file is missing) on start. They are logged and listed by
``GET /api/v1/orphans``, never deleted: an operator decides.

Ids and tags reach the file system only after :func:`check_id` / :func:`check_tag`, and every
path is checked to stay inside the data folder (path traversal is refused with a 400).

Scope: the service works on 2D images (PNG, JPEG, TIFF, BMP, a one-slice NIfTI or a
single-frame DICOM). A 3D volume is skipped at import with a warning and refused at upload.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import io
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from activesynth.errors import ActivesynthError, ConfigError, DataError
from activesynth.service.db import AuditRow, ImageRow, LabelRow, LeaseRow, utcnow
from activesynth.utils import PRIVATE_MODE, atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".dcm")
LABEL_EXTS = (".png", ".tif", ".tiff", ".nii", ".nii.gz")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$")
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
FINAL = "final"
MAX_SIDE = 16384
"""Largest image side (pixels) the service decodes."""


class RequestError(ActivesynthError):
    """A request the service refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def compound_ext(name: str) -> str:
    """The extension of a file name, compound ones included (``.nii.gz``, ``.seg.nrrd``)."""
    low = name.lower()
    for ext in (".nii.gz", ".seg.nrrd"):
        if low.endswith(ext):
            return ext
    return Path(low).suffix


def check_id(value: str | None, what: str = "image id") -> str:
    """An id safe to use in a file name, or a 400 naming the value and the rule."""
    if value is None or not _ID.match(value) or ".." in value:
        raise RequestError(
            400,
            f"{what} {value!r} is not allowed: use 1-160 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/' and no '..').",
        )
    return value


def check_tag(value: str | None) -> str:
    if value is None or not _TAG.match(value):
        raise RequestError(400, f"label tag {value!r} is not allowed: use [A-Za-z0-9_-]{{1,40}}.")
    return value


def id_from_name(rel: str) -> str:
    """An image id from a relative file path: the path without extension, '/' -> '__'."""
    stem = rel[: len(rel) - len(compound_ext(rel))] if compound_ext(rel) else rel
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem.replace("/", "__")).strip("._-") or "image"
    safe = safe.replace("..", "_")
    if len(safe) > 150:
        safe = safe[:140] + "-" + hashlib.sha256(stem.encode()).hexdigest()[:8]
    return safe


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- decoding ---------------------------------------------------------------------------------
def _nifti_2d(data: bytes, ext: str, what: str) -> np.ndarray:
    """NIfTI bytes -> (H, W) array; NIfTI's (x, y[, 1]) is transposed so x = column."""
    import nibabel as nib

    with tempfile.NamedTemporaryFile(suffix=ext) as fh:
        fh.write(data)
        fh.flush()
        try:
            img = nib.load(fh.name)
            shape = tuple(int(n) for n in img.shape)
        except Exception as exc:
            raise RequestError(400, f"{what} is not a readable NIfTI file ({exc}).") from exc
        plane = shape
        while len(plane) > 2 and plane[-1] == 1:
            plane = plane[:-1]
        # checked from the header before any voxel is read (a small .gz can declare GBs)
        if len(plane) != 2:
            raise RequestError(
                400, f"{what} has shape {shape}; the service takes 2D images (one slice)."
            )
        if max(plane) > MAX_SIDE:
            raise RequestError(
                400, f"{what} is {plane[0]} x {plane[1]}; at most {MAX_SIDE} a side."
            )
        try:
            arr = np.asarray(img.dataobj).reshape(plane)
        except Exception as exc:
            raise RequestError(400, f"{what} is not a readable NIfTI file ({exc}).") from exc
    return np.ascontiguousarray(arr.T)


def decode_image(data: bytes, ext: str, what: str) -> np.ndarray:
    """Image bytes -> (H, W) or (H, W, 3) uint8, through the project's loaders' conventions.

    Raises:
        RequestError: 400 for an unknown extension or a file that does not decode as a 2D image.
    """
    from activesynth.data.sources.folder import _to_uint8, read_image

    if ext not in IMAGE_EXTS:
        raise RequestError(
            400,
            f"{what}: extension {ext or '(none)'!r} is not an image type; use one of "
            f"{', '.join(IMAGE_EXTS)}.",
        )
    if ext in (".nii", ".nii.gz"):
        return _to_uint8(_nifti_2d(data, ext, what), Path(what))
    if ext == ".dcm":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            arr = np.asarray(ds.pixel_array)
        except Exception as exc:
            raise RequestError(400, f"{what} is not a readable DICOM file ({exc}).") from exc
        if arr.ndim != 2:
            raise RequestError(400, f"{what} has shape {arr.shape}; one 2D frame is needed.")
        return _to_uint8(arr.astype(np.float64), Path(what))
    with tempfile.NamedTemporaryFile(suffix=ext) as fh:
        fh.write(data)
        fh.flush()
        try:
            return read_image(fh.name)
        except ActivesynthError as exc:
            raise RequestError(400, f"{what} is not a readable 2D image ({exc}).") from exc


def decode_label(data: bytes, ext: str, what: str) -> np.ndarray:
    """Label bytes -> (H, W) non-negative integer class ids (values kept as saved).

    Raises:
        RequestError: 400 for an unknown extension, an unreadable file or non-integer values.
    """
    from activesynth.data.sources.folder import read_mask

    if ext not in LABEL_EXTS:
        raise RequestError(
            400,
            f"{what}: extension {ext or '(none)'!r} is not a label type; use one of "
            f"{', '.join(LABEL_EXTS)}.",
        )
    if ext in (".nii", ".nii.gz"):
        arr = _nifti_2d(data, ext, what)
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
                raise RequestError(400, f"{what} has non-integer values; labels are class ids.")
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iub" or (arr.size and arr.min() < 0):
            raise RequestError(400, f"{what} must hold class ids 0, 1, 2, ... ({arr.dtype}).")
        return arr.astype(np.int64)
    with tempfile.NamedTemporaryFile(suffix=ext) as fh:
        fh.write(data)
        fh.flush()
        try:
            return read_mask(fh.name).astype(np.int64)
        except ActivesynthError as exc:
            raise RequestError(400, f"{what} is not a readable label ({exc}).") from exc


def class_ids(label: np.ndarray) -> np.ndarray:
    """(H, W) class ids 0..K-1 as uint8; a 0/255 mask (the common PNG convention) becomes 0/1."""
    values = np.unique(label)
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        return (label > 0).astype(np.uint8)
    if values.size and values.max() > 255:
        raise RequestError(400, f"label values up to {values.max()}; labels hold class ids 0..255.")
    return label.astype(np.uint8)


# ---- the store --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Orphan:
    kind: str  # "file without row" | "row without file" | "temp file"
    path: str
    row: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "row": self.row}


def audit(
    s: Session,
    user: str,
    action: str,
    *,
    image_id: str | None = None,
    client_id: str | None = None,
    client: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit row to the open transaction ``s``."""
    s.add(
        AuditRow(
            ts=utcnow(),
            user=user,
            client_id=client_id,
            client=client,
            action=action,
            image_id=image_id,
            detail=detail,
        )
    )


class Store:
    """Files and rows of images and labels (see the module docstring).

    Args:
        root: the data folder (must be writable).
        sessions: session factory of the service database.
    """

    def __init__(self, root: Path, sessions: sessionmaker) -> None:
        self.root = root.resolve()
        self.sessions = sessions
        self.images_dir = self.root / "images"
        self.labels_dir = self.root / "labels"
        for d in (self.images_dir, self.labels_dir):
            d.mkdir(parents=True, exist_ok=True)

    # paths
    def inside(self, path: Path) -> Path:
        """``path`` resolved, refused (400) unless it lies inside the data folder."""
        p = path.resolve()
        if p != self.root and self.root not in p.parents:
            raise RequestError(400, f"path {path} leaves the data folder {self.root}; refused.")
        return p

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def file_of(self, stored: str) -> Path:
        """The file of a row's ``path`` (relative to the data folder, or absolute if imported)."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    def _write(self, path: Path, data: bytes) -> None:
        self.inside(path.parent)
        # patient images and labels: readable by the service's user only, whatever the umask
        atomic_write(path, lambda fh: fh.write(data), durable=True, mode=PRIVATE_MODE)

    # images
    def add_image(
        self,
        image_id: str,
        data: bytes,
        filename: str,
        *,
        user: str,
        client_id: str | None = None,
        client: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> ImageRow:
        """Store an uploaded image and its row in one unit.

        Raises:
            RequestError: 400 bad id or not a 2D image; 409 the id exists already.
        """
        check_id(image_id)
        ext = compound_ext(filename)
        arr = decode_image(data, ext, f"upload {Path(filename).name!r}")
        # a random part: a concurrent upload of the same id can never replace this file
        path = self.inside(self.images_dir / f"{image_id}.{secrets.token_hex(4)}{ext}")
        with self.sessions() as s:
            if s.get(ImageRow, image_id) is not None:
                raise RequestError(
                    409, f"image {image_id!r} exists already; upload it as another id."
                )
        self._write(path, data)
        row = ImageRow(
            id=image_id,
            name=f"{image_id}{ext}",
            ext=ext,
            path=self._rel(path),
            sha256=sha256(data),
            height=int(arr.shape[0]),
            width=int(arr.shape[1]),
            patient=image_id,
            source="upload",
            info=dict(info or {}),
            created_at=utcnow(),
        )
        try:
            with self.sessions.begin() as s:
                s.add(row)
                audit(
                    s,
                    user,
                    "upload_image",
                    image_id=image_id,
                    client_id=client_id,
                    client=client,
                    sha256=row.sha256,
                )
        except IntegrityError as exc:
            path.unlink(missing_ok=True)
            raise RequestError(409, f"image {image_id!r} exists already.") from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return row

    def image(self, s: Session, image_id: str) -> ImageRow:
        """The row of ``image_id``; a 400 for an id no image can have, else a 404 if unknown."""
        row = s.get(ImageRow, check_id(image_id))
        if row is None:
            raise RequestError(404, f"no image with id {image_id!r}; GET /datastore/ lists them.")
        return row

    def image_bytes(self, row: ImageRow) -> bytes:
        path = self.file_of(row.path)
        if not path.is_file():
            raise RequestError(404, f"the file of image {row.id!r} ({path}) is missing.")
        return path.read_bytes()

    def pixels(self, row: ImageRow) -> np.ndarray:
        return decode_image(self.image_bytes(row), row.ext, f"image {row.id!r}")

    # labels
    def save_label(
        self,
        image_id: str,
        data: bytes,
        filename: str,
        *,
        tag: str = FINAL,
        user: str,
        holder: str,
        client_id: str | None = None,
        client: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> LabelRow:
        """Add a new version of the ``tag`` label of ``image_id`` (earlier versions are kept).

        The label file is written durably before the row is committed; the saver's lease on the
        image is released in the same transaction.

        Raises:
            RequestError: 404 unknown image; 409 the image is leased to someone else (names
                them); 400 bad tag, unreadable label or a shape different from the image's.
        """
        check_tag(tag)
        ext = compound_ext(filename)
        name = Path(filename).name
        label = decode_label(data, ext, f"label {name!r}")
        class_ids(label)  # values must be class ids 0..255 (0/255 masks are read as 0/1)
        digest = sha256(data)
        for _attempt in range(5):
            with self.sessions() as s:
                img = self.image(s, image_id)
                if label.shape != (img.height, img.width):
                    raise RequestError(
                        400,
                        f"label {name!r} has shape {label.shape[0]} x {label.shape[1]} (H x W) but "
                        f"image {image_id!r} is {img.height} x {img.width}; save a label of the "
                        "image's size.",
                    )
                lease = s.get(LeaseRow, image_id)
                now = utcnow()
                if lease is not None and lease.expires_at > now and lease.holder != holder:
                    raise RequestError(
                        409,
                        f"image {image_id!r} is leased to {lease.holder!r} until "
                        f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC; take another image.",
                    )
                version = (
                    s.scalar(
                        select(func.max(LabelRow.version)).where(
                            LabelRow.image_id == image_id, LabelRow.tag == tag
                        )
                    )
                    or 0
                ) + 1
            folder = self.inside(self.labels_dir / tag / image_id)
            path = folder / f"v{version}-{secrets.token_hex(4)}{ext}"
            self._write(path, data)
            row = LabelRow(
                image_id=image_id,
                tag=tag,
                version=version,
                ext=ext,
                path=self._rel(path),
                sha256=digest,
                user=user,
                client_id=client_id,
                info=dict(info or {}),
                created_at=utcnow(),
            )
            try:
                with self.sessions.begin() as s:
                    s.add(row)
                    lease = s.get(LeaseRow, image_id)
                    if lease is not None:
                        if lease.expires_at > utcnow() and lease.holder != holder:
                            raise RequestError(
                                409, f"image {image_id!r} was just leased to {lease.holder!r}."
                            )
                        s.delete(lease)
                    audit(
                        s,
                        user,
                        "save_label",
                        image_id=image_id,
                        client_id=client_id,
                        client=client,
                        tag=tag,
                        version=version,
                        sha256=digest,
                    )
                return row
            except IntegrityError:  # another save took this version number: try the next
                path.unlink(missing_ok=True)
                continue
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        raise RequestError(503, f"too many concurrent saves of image {image_id!r}; retry.")

    def label(self, s: Session, image_id: str, tag: str, version: int | None = None) -> LabelRow:
        """The latest (or the given) version of a label, or a 404."""
        q = select(LabelRow).where(LabelRow.image_id == image_id, LabelRow.tag == tag)
        if version is not None:
            q = q.where(LabelRow.version == version)
        row = s.scalars(q.order_by(LabelRow.version.desc()).limit(1)).first()
        if row is None:
            v = "" if version is None else f" version {version}"
            raise RequestError(404, f"image {image_id!r} has no {tag!r} label{v}.")
        return row

    def label_bytes(self, row: LabelRow) -> bytes:
        path = self.file_of(row.path)
        if not path.is_file():
            raise RequestError(
                404, f"the file of label {row.image_id!r} v{row.version} is missing."
            )
        return path.read_bytes()

    # import
    def import_folder(
        self,
        images: Path,
        labels: Path | None = None,
        mask_pattern: str = "{stem}_mask{ext}",
        data_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a folder's (or a dataset spec's) images; their masks become ``final`` v1.

        Images stay where they are (their absolute path is stored); masks are copied into the
        store byte for byte. Already registered ids are skipped, so a restart re-imports nothing.

        Returns:
            ``{"images": new images, "labels": new labels, "skipped": [(path, why)]}``.
        """
        from activesynth.data.spec import plan_spec, read_spec

        over: dict[str, Any] = dict(data_options or {})
        images = Path(images)
        if images.is_dir():
            rule: dict[str, Any] = {"pattern": mask_pattern}
            if labels is not None:
                rule["folder"] = str(Path(labels).resolve())
            over.setdefault("masks", rule)
        try:
            try:
                items = plan_spec(read_spec(images, over)).items
            except DataError as exc:  # a folder without any mask yet: images only
                if "matches no file" not in str(exc) or not over.get("masks"):
                    raise
                log.info("import: %s", exc)
                # files named like masks stay out of the images even when no mask matches yet
                like_mask = mask_pattern.replace("{stem}", "*").replace("{ext}", ".*")
                exclude = list(over.get("exclude", []))
                if images.is_dir() and any(  # the spec refuses a glob that matches nothing
                    fnmatch.fnmatch(p.name, like_mask) for p in images.rglob("*") if p.is_file()
                ):
                    exclude.append(like_mask)
                items = plan_spec(
                    read_spec(images, {**over, "masks": None, "exclude": exclude})
                ).items
        except ConfigError:
            if not images.is_dir():
                raise
            # the spec reads NIfTI as volumes in case folders; a flat folder of one-slice
            # NIfTI files (what the service serves) is scanned here with the same mask rule
            items = _nifti_slices(images, labels, mask_pattern)
        new_images = new_labels = 0
        skipped: list[tuple[str, str]] = []
        with self.sessions() as s:
            known = set(s.scalars(select(ImageRow.id)))
        for it in items:
            path = Path(it.path).resolve()
            if not path.is_file():
                skipped.append((str(path), "not a single file (a case folder or a series)"))
                continue
            image_id = id_from_name(Path(it.rel_image).as_posix())
            if image_id in known:
                continue
            ext = compound_ext(path.name)
            data = path.read_bytes()
            try:
                arr = decode_image(data, ext, str(path))
            except RequestError as exc:
                skipped.append((str(path), str(exc)))
                continue
            mask_data = None
            if it.mask is not None:
                mask_data = Path(it.mask).read_bytes()
                mext = compound_ext(Path(it.mask).name)
                try:
                    m = decode_label(mask_data, mext, str(it.mask))
                except RequestError as exc:
                    skipped.append((str(it.mask), str(exc)))
                    mask_data = None
                else:
                    if m.shape != arr.shape[:2]:
                        skipped.append((str(it.mask), f"shape {m.shape} != image {arr.shape[:2]}"))
                        mask_data = None
            lpath = None
            if mask_data is not None:
                lpath = self.labels_dir / FINAL / image_id / f"v1-{secrets.token_hex(4)}{mext}"
                self._write(lpath, mask_data)
            try:
                with self.sessions.begin() as s:
                    s.add(
                        ImageRow(
                            id=image_id,
                            name=f"{image_id}{ext}",
                            ext=ext,
                            path=str(path),
                            sha256=sha256(data),
                            height=int(arr.shape[0]),
                            width=int(arr.shape[1]),
                            patient=it.group or image_id,
                            source="import",
                            info={"source_path": str(path)},
                            created_at=utcnow(),
                        )
                    )
                    s.flush()
                    if lpath is not None and mask_data is not None:
                        s.add(
                            LabelRow(
                                image_id=image_id,
                                tag=FINAL,
                                version=1,
                                ext=mext,
                                path=self._rel(lpath),
                                sha256=sha256(mask_data),
                                user="import",
                                client_id=None,
                                info={"source_path": str(it.mask)},
                                created_at=utcnow(),
                            )
                        )
            except BaseException:
                if lpath is not None:
                    lpath.unlink(missing_ok=True)
                raise
            known.add(image_id)
            new_images += 1
            new_labels += lpath is not None
        with self.sessions.begin() as s:
            audit(
                s,
                "system",
                "import",
                source=str(images),
                images=new_images,
                labels=new_labels,
                skipped=len(skipped),
            )
        for p, why in skipped:
            log.warning("import: skipped %s: %s", p, why)
        return {"images": new_images, "labels": new_labels, "skipped": skipped}

    # crash recovery
    def orphans(self) -> list[Orphan]:
        """Files without a row, rows without a file and temp files (nothing is deleted)."""
        with self.sessions() as s:
            img_paths = {r[0]: r[1] for r in s.execute(select(ImageRow.path, ImageRow.id))}
            lab_paths = {
                r[0]: f"{r[1]}/{r[2]}/v{r[3]}"
                for r in s.execute(
                    select(LabelRow.path, LabelRow.image_id, LabelRow.tag, LabelRow.version)
                )
            }
        found: list[Orphan] = []
        known = {self.file_of(p).resolve() for p in (*img_paths, *lab_paths)}
        for folder in (self.images_dir, self.labels_dir):
            for dirpath, _dirs, files in os.walk(folder):
                for f in files:
                    p = Path(dirpath) / f
                    if f.startswith(".") and f.endswith(".tmp"):
                        found.append(Orphan("temp file", self._rel(p)))
                    elif p.resolve() not in known:
                        found.append(Orphan("file without row", self._rel(p)))
        for table, paths in (("images", img_paths), ("labels", lab_paths)):
            for p, key in paths.items():
                if not self.file_of(p).is_file():
                    found.append(Orphan("row without file", p, f"{table}:{key}"))
        return found


@dataclass
class _SliceItem:
    path: Path
    rel_image: Path
    mask: Path | None
    group: str


def _nifti_slices(images: Path, labels: Path | None, pattern: str) -> list[_SliceItem]:
    """NIfTI files under ``images`` (not hidden, natural order) with their masks, if any.

    The mask of ``x.nii.gz`` is ``pattern.format(stem="x", ext=".nii.gz")`` in ``labels`` (same
    sub-folder, then directly) or beside it; files that are some image's mask are not images.
    """
    from activesynth.data.sources.folder import natural_key

    files = sorted(
        (
            p
            for p in images.rglob("*")
            if p.is_file()
            and compound_ext(p.name) in (".nii", ".nii.gz")
            and not any(part.startswith(".") for part in p.relative_to(images).parts)
        ),
        key=lambda p: natural_key(p.relative_to(images).as_posix()),
    )

    def mask_of(p: Path) -> Path:
        ext = compound_ext(p.name)
        name = pattern.format(stem=p.name[: -len(ext)], ext=ext)
        rel = p.relative_to(images)
        for d in [labels / rel.parent, labels] if labels is not None else [p.parent]:
            if (d / name).is_file():
                return d / name
        return p.parent / name

    masks = {mask_of(p).resolve() for p in files}
    out = []
    for p in files:
        if p.resolve() in masks:
            continue
        m = mask_of(p)
        rel = p.relative_to(images)
        group = rel.parts[0] if len(rel.parts) > 1 else p.name[: -len(compound_ext(p.name))]
        out.append(_SliceItem(p, rel, m if m.is_file() else None, group))
    return out


def expiry(seconds: float) -> dt.datetime:
    return utcnow() + dt.timedelta(seconds=seconds)
