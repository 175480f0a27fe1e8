"""DICOM Segmentation objects of the service's final labels (issue 12, item 3), through highdicom.

:func:`build_seg` turns one single-frame source image and its label (class ids) into a BINARY
DICOM-SEG (``Segmentation`` IOD) that references the source: same study, patient and frame of
reference, the source's Study/Series/SOP Instance UIDs in the Referenced Series and Source Image
sequences, and its pixel spacing / orientation / position (highdicom derives the plane
position, orientation and pixel measures from the source when none are given, as its docs show
for single-frame images). The new series and SOP instance get fresh UIDs from highdicom's
generator (``highdicom.UID``); nothing is deterministic about them.

Segments: segment number ``k`` is class id ``k``, for ``k = 1..K`` where ``K`` is the larger of
the highest named class and the highest class in the label (highdicom's label-map input needs
every segment ``1..max`` described). A class with no pixels in the label still gets its
segment, with an empty frame (``omit_empty_frames=False``): "the annotator marked nothing of
this class" is kept, and every segment can be read back. Segment labels are the service's label
names (``class <k>`` for a class without a name). The algorithm type is MANUAL (an annotator's
label). Because the service does not know what its classes mean anatomically, the segmented
property category and type use a private coding scheme (``99ACTIVESYNTH``, declared in the
Coding Scheme Identification sequence) instead of guessing a SNOMED CT code.

Sources: the Patient and General Study modules' type 2 attributes (PatientName, PatientID,
PatientBirthDate, PatientSex, StudyDate, StudyTime, StudyID, AccessionNumber,
ReferringPhysicianName) may be absent in a secondary capture; highdicom needs them present, so
they are added empty (the standard's "unknown") to a copy of the source. What cannot be made up
without breaking the reference (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID,
SOPClassUID, a FrameOfReferenceUID that the source's IOD requires, and the SliceThickness that
a SEG in a frame of reference must carry in its Pixel Measures (PS3.3 C.7.6.16.2.1, CP 1426),
which some MR files leave empty) makes :func:`build_seg` raise a :class:`~activesynth.errors.DataError` naming the attribute; the export lists such an
image as skipped with that reason.

Scope: 2D single-frame sources only (the service's scope); a multi-frame source is refused.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset

from activesynth import __version__
from activesynth.errors import ActivesynthError, ConfigError, DataError
from activesynth.service.store import RequestError, class_ids, decode_label

if TYPE_CHECKING:
    from activesynth.service.db import ImageRow, LabelRow
    from activesynth.service.store import Store

CODING_SCHEME = "99ACTIVESYNTH"
"""Private coding scheme of the segments' property category and type."""
SERIES_NUMBER = 99
"""Series Number of every SEG this module writes (a new series per SEG; the UID is fresh)."""
CONTENT_LABEL = "ANNOTATION"
NOT_DICOM = "not a DICOM input: export as png or nifti"

#: Type 2 attributes of the Patient / General Study modules that highdicom reads from the source.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
#: Attributes without which the SEG cannot reference its source.
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_BAD_TEXT = re.compile(r"[\\\x00-\x1f\x7f]")


def _lo(text: str, limit: int = 64) -> str:
    """``text`` as a DICOM LO value: no backslash or control characters, at most ``limit``."""
    return _BAD_TEXT.sub(" ", text).strip()[:limit].strip()


def check_available() -> None:
    """Raise a ConfigError naming the fix when highdicom is not installed."""
    try:
        import highdicom  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "DICOM-SEG export needs highdicom; install it: pip install 'activesynth[service]'."
        ) from exc


def segment_names(names: dict[int, str], mask: np.ndarray) -> dict[int, str]:
    """``{k: label}`` for the segments ``1..K`` of ``mask`` (see the module docstring).

    Args:
        names: class id -> name (the service's label names; background 0 is ignored).
        mask: (H, W) integer class ids.

    Returns:
        Segment number (= class id) -> segment label, for every k in 1..K; empty when K is 0.
    """
    top = max([int(k) for k in names if int(k) > 0] + [int(mask.max()) if mask.size else 0])
    out = {}
    for k in range(1, top + 1):
        out[k] = _lo(str(names.get(k, ""))) or f"class {k}"
    return out


def build_seg(
    source: Dataset,
    mask: np.ndarray,
    names: dict[int, str],
    *,
    creator: str | None = None,
    what: str = "the source DICOM",
) -> Dataset:
    """A BINARY DICOM-SEG of ``mask`` referencing the single-frame image ``source``.

    Args:
        source: the source image's ``pydicom.Dataset`` (pixel data not needed); not modified.
        mask: (H, W) non-negative integer class ids, H x W = the source's Rows x Columns
            (row-major, as ``source.pixel_array``).
        names: class id -> name of the service's classes (1..K); unnamed classes present in
            ``mask`` get ``class <k>``.
        creator: who saved the label (the service's user name), recorded as the family name of
            Content Creator's Name (None: left empty).
        what: how error messages name the source (e.g. ``"image 'ct_1' (ct_1.dcm)"``).

    Returns:
        A ``highdicom.seg.Segmentation`` (a ``pydicom.Dataset``): one segment per class
        1..K, segment ``k`` = the pixels of class ``k``, algorithm type MANUAL.

    Raises:
        DataError: the mask is not (Rows, Columns) class ids, the source lacks what the
            reference needs (the message names the attribute), or highdicom refuses it.
    """
    check_available()
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iub" or (mask.size and mask.min() < 0):
        raise DataError(
            f"the label of {what} must be (H, W) class ids 0, 1, 2, ...; got shape "
            f"{mask.shape}, dtype {mask.dtype}."
        )
    missing = [k for k in _REQUIRED if not str(source.get(k, "") or "").strip()]
    if missing:
        raise DataError(
            f"{what} has no {', '.join(missing)}; a DICOM-SEG must reference its source by "
            "them: add them to the source file, or export as png or nifti."
        )
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(f"{what} has {frames} frames; DICOM-SEG export handles single frames.")
    shape = (int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0))
    if mask.shape != shape:
        raise DataError(
            f"the label of {what} has shape {mask.shape} but the source has Rows x Columns "
            f"{shape}; save a label of the image's size."
        )
    # a single frame is placed in the patient coordinate system (as highdicom decides) when it
    # has a frame of reference and a position
    in_space = "FrameOfReferenceUID" in source and "ImagePositionPatient" in source
    if in_space and not str(source.get("SliceThickness") or "").strip("\x00 "):
        raise DataError(
            f"{what} has no SliceThickness, which a DICOM-SEG in the source's frame of "
            "reference must carry (PS3.3 C.7.6.16.2.1): add it to the source file, or export "
            "as png or nifti."
        )
    seg_names = segment_names(names, mask)
    if not seg_names:
        raise DataError(f"the label of {what} has no foreground class and the service names none.")
    if max(seg_names) > 255:
        raise DataError(f"the label of {what} has class ids up to {max(seg_names)}; at most 255.")

    # a new top-level dataset sharing the (unmodified) elements: what is added here for
    # highdicom never reaches the caller's dataset (copy.copy would share its element dict)
    src = Dataset()
    for element in source:
        src.add(element)
    if getattr(source, "file_meta", None) is not None:
        src.file_meta = source.file_meta
    for keyword in _TYPE2:
        if keyword not in src:
            setattr(src, keyword, None)

    scheme = hd.sr.CodedConcept  # the segments' codes: see the module docstring
    category = scheme("label-class", CODING_SCHEME, "Annotated class")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=scheme(f"class-{k}", CODING_SCHEME, label),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for k, label in seg_names.items()
    ]
    schemes = [
        CodingSchemeIdentificationItem(
            designator=CODING_SCHEME,
            name="activesynth annotation classes",
            responsible_organization="activesynth",
        )
    ]
    # the user name as the family-name component; the trailing caret is how highdicom's
    # person-name check accepts a one-component name
    person = _BAD_TEXT.sub(" ", re.sub(r"[=^]", " ", creator or "")).strip()[:63]
    try:
        seg = hd.seg.Segmentation(
            source_images=[src],
            pixel_array=mask.astype(np.uint8),  # label-map style: value k -> segment k
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="activesynth",
            manufacturer_model_name="activesynth annotation service",
            software_versions=__version__,
            device_serial_number="none",  # software: no device serial number
            content_label=CONTENT_LABEL,
            content_description="Final label from the activesynth annotation service",
            content_creator_name=f"{person}^" if person else None,
            series_description="activesynth final labels",
            omit_empty_frames=False,
            coding_schemes=schemes,
        )
    # highdicom refuses a source with ValueError, TypeError, AttributeError or KeyError
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line
        if isinstance(exc, KeyError) and exc.args and exc.args[0] == source.SOPClassUID:
            reason = f"SOP Class UID {source.SOPClassUID} is not a standard image class"
        raise DataError(
            f"highdicom cannot build a DICOM-SEG for {what} ({type(exc).__name__}: {reason}); "
            "export as png or nifti."
        ) from exc
    return seg


def seg_bytes(seg: Dataset, what: str = "the DICOM-SEG") -> bytes:
    """The DICOM file (Part 10, with file meta) of ``seg``.

    Raises:
        DataError: pydicom cannot write it (e.g. a value a copied source attribute made invalid).
    """
    import pydicom

    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, seg, enforce_file_format=True)
    except Exception as exc:
        raise DataError(
            f"cannot write the DICOM-SEG of {what} ({type(exc).__name__}: {exc})."
        ) from exc
    return buf.getvalue()


def export_zip(
    store: Store,
    latest: dict[str, LabelRow],
    images: dict[str, ImageRow],
    names: dict[int, str],
) -> bytes:
    """The zip of ``GET /api/v1/export?format=dicom-seg``.

    Args:
        store: the service's files.
        latest: image id -> its latest final label row.
        images: image id -> image row (at least every id of ``latest``).
        names: class id -> name (the service's label names).

    Returns:
        Zip bytes: ``<image_id>.seg.dcm`` per DICOM image whose SEG could be built, and
        ``manifest.json`` = ``{"exported": {id: {version, user, sha256_of_saved_file, file,
        sop_instance_uid, series_instance_uid, referenced_sop_instance_uid, segments}},
        "skipped": {id: reason}}`` (a non-DICOM image, an unreadable source or label, a source
        lacking what the SEG needs: each reason names the fix).

    Raises:
        RequestError: 400 (one line) when no image qualifies.
        ConfigError: highdicom is not installed.
    """
    import pydicom

    check_available()
    exported: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for image_id, label in sorted(latest.items()):
            image = images[image_id]
            if image.ext != ".dcm":
                skipped[image_id] = NOT_DICOM
                continue
            what = f"image {image_id!r} ({image.name})"
            try:
                raw = store.image_bytes(image)
                try:
                    source = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
                except Exception as exc:
                    raise DataError(f"{what} is not a readable DICOM file ({exc}).") from exc
                mask = class_ids(decode_label(store.label_bytes(label), label.ext, label.path))
                seg = build_seg(source, mask, names, creator=label.user, what=what)
                data = seg_bytes(seg, what)
            except ActivesynthError as exc:
                skipped[image_id] = " ".join(str(exc).split())
                continue
            zf.writestr(f"{image_id}.seg.dcm", data)
            exported[image_id] = {
                "version": label.version,
                "user": label.user,
                "sha256_of_saved_file": label.sha256,
                "file": f"{image_id}.seg.dcm",
                "sop_instance_uid": str(seg.SOPInstanceUID),
                "series_instance_uid": str(seg.SeriesInstanceUID),
                "referenced_sop_instance_uid": str(source.SOPInstanceUID),
                "segments": {
                    int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence
                },
            }
        if not exported:
            if not latest:
                raise RequestError(
                    400, "format=dicom-seg: there are no final labels yet; save labels first."
                )
            some = "; ".join(f"{i}: {r.rstrip('.')}" for i, r in list(skipped.items())[:3])
            more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
            raise RequestError(
                400,
                f"format=dicom-seg: none of the {len(latest)} finally labelled images can be "
                f"exported as DICOM-SEG ({some}{more}); export them with format=png or nifti.",
            )
        zf.writestr(
            "manifest.json", json.dumps({"exported": exported, "skipped": skipped}, indent=1)
        )
    return buf.getvalue()
