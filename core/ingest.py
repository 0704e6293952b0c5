"""Ingestion: files → Subjects (float32 .npy array + PNGs rendered once, in media storage for public
projects and private storage for private ones).

Formats (see docs/ingestion.md): ZTF alert packets in Avro (2016 test alerts to schema 4.x),
Rubin alert packets (Avro containers of lsst.v7 on, Kafka messages in the Confluent wire format),
broker Parquet of either (one alert per row; ZTF or Rubin told by content, core.alerts), FITS
triplets (three files, three HDUs or a 3-plane cube), NumPy .npy/.npz stacks and PNG/JPEG images.
In alert files each alert stands alone: a bad one is its own error line and the others go in.

Every file (or FITS triplet group) is one unit: it is ingested atomically (one transaction,
files written to storage deleted again if it rolls back) and a bad unit becomes one error
line naming the file and the reason while the run goes on. Re-ingesting a subject whose
external_id its subject set already has is a no-op counted as a duplicate (every ingest goes into a
set: the workflow's "default" one when none is named).

Stored arrays follow the FITS convention: row 0 is the bottom row (rendering flips them so
north-ish is up, as in DS9). PNG/JPEG inputs are flipped on the way in to match.
"""

from __future__ import annotations

import contextvars
import gzip
import hashlib
import io
import math
import os
import random
import re
import shutil
import tempfile
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils.text import get_valid_filename, slugify

from core import alerts as alert_tools
from core.formats import json_safe
from core.models import Project, Subject, SubjectSet, Workflow, subject_upload_path
from core.rendering import RENDER_VERSION, is_triplet, write_subject_pngs
from core.storage import delete_stored, open_stored, private_storage, subject_storage
from jobs.models import Job
from jobs.services import SHORT, JobRun, on_sweep, queue_job, register

CUTOUT_SIZE = 63
# ZTF readout-channel (quadrant) images are 3072 × 3080 pixels; cutouts of sources within
# 31 px of an edge are truncated on that side.
ZTF_QUADRANT_SHAPE = (3080, 3072)  # (ny, nx)
# Caps against decompression bombs and absurd inputs. A whole gzipped file, and the arrays of an
# .npz together, may expand to settings.SKYVOTE_MAX_DECOMPRESSED_BYTES (shared with search-by-image
# uploads); one alert cutout is a few kB, so far less is plenty.
MAX_CUTOUT_DECOMPRESSED_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096  # per plane
MAX_ARRAY_ELEMENTS = 64 * 1024 * 1024  # per .npy array (256 MiB of float32)
MAX_NPY_HEADER_BYTES = 64 * 1024  # numpy writes a few hundred bytes (and itself refuses over 10 kB)
MAX_EXTERNAL_ID = 100

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED_SUFFIXES = (".avro", ".parquet", ".parq", ".npy", ".npz") + FITS_SUFFIXES + IMAGE_SUFFIXES
ROLE_ALIASES = {
    "sci": "science", "science": "science", "new": "science",
    "ref": "reference", "reference": "reference", "template": "reference", "tmpl": "reference",
    "diff": "difference", "difference": "difference", "sub": "difference",
    "scimref": "difference", "refmsci": "difference",
}  # fmt: skip
ROLE_RE = re.compile(r"^(?P<stem>.+?)[_\-.](?P<role>" + "|".join(ROLE_ALIASES) + r")$", re.IGNORECASE)
CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
TRIPLET_ROLES = ("science", "reference", "difference")


class IngestError(ValueError):
    """A unit of input cannot be ingested; the message is the reason shown to the user."""


class BrokenOff(IngestError):
    """A file broke off after some good records (a truncated Avro container): the records read
    before the break are kept and the rest of the file is this one error."""


# ---------------------------------------------------------------------------------------------
# Arrays in storage


def load_subject_array(subject) -> np.ndarray:
    """The subject's float32 array from storage (NaNs kept): private storage (private projects),
    else media."""
    if not subject.data:
        raise IngestError(f"subject {subject.external_id} has no stored array")
    with open_stored(subject.data.name) as handle:
        raw = handle.read()
    return np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32, copy=False)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buffer.getvalue()


def load_subject_stamps(subject) -> dict[str, np.ndarray]:
    """The second file of an alert subject: {"uncertainty": (3, H, W) 1σ planes aligned with the
    stored array (NaN where the alert had none), "psf_science"/"psf_reference"/"psf_difference": the
    PSF models as delivered}; {} for subjects that have none (ZTF alerts, files, synthetic data)."""
    name = (subject.metadata or {}).get("stamps_file")
    if not name:
        return {}
    with open_stored(name) as handle:
        raw = handle.read()
    with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def validate_array(array, workflow=None) -> np.ndarray:
    """float32 copy of a subject array, or IngestError saying what is wrong with it."""
    try:
        array = np.array(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise IngestError(f"not a numeric array ({exc})")
    shape = tuple(array.shape)
    if array.ndim not in (2, 3) or (array.ndim == 3 and 3 not in (shape[0], shape[2])):
        raise IngestError(
            f"wrong shape {shape}: expected a (3, H, W) science/reference/difference triplet "
            "or a (H, W) / (H, W, 3) image"
        )
    plane = shape[1:] if is_triplet(array) else shape[:2]
    if min(plane) < 1 or plane[0] * plane[1] > MAX_IMAGE_PIXELS:
        raise IngestError(f"wrong image size {plane[0]}×{plane[1]} (at most {MAX_IMAGE_PIXELS} pixels)")
    if workflow is not None and workflow.kind == Workflow.REAL_BOGUS and not is_triplet(array):
        raise IngestError(
            f"shape {shape} is a single image, but the real/bogus workflow {workflow.slug!r} needs "
            "(3, H, W) science/reference/difference triplets"
        )
    array[np.isinf(array)] = np.nan
    if not np.isfinite(array).any():
        raise IngestError("all pixels are NaN (no data)")
    return array


# Names of files written to storage during the current ingestion unit, so that a unit
# whose transaction rolls back can delete them again.
_written_files: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "skyvote_ingest_written_files", default=None
)


def _delete_files(names: Iterable[str]) -> None:
    for name in names:
        delete_stored(name)


def add_subject(
    *,
    project,
    workflow,
    subject_set,
    external_id: str,
    array: np.ndarray,
    metadata: dict,
    source: str,
    object_id: str = "",
    truth_label: str = "",
    truth_subtype: str = "",
    render: bool = True,
    survey: str = "",
    schema_version: str = "",
    light_curve: list | None = None,
    stamps: dict[str, np.ndarray] | None = None,
) -> tuple[Subject, bool]:
    """Create one subject atomically; (subject, created).

    A duplicate external_id in the subject set returns (existing, False) and writes nothing; with no
    set the workflow's "default" set is used.
    The array is stored as float32 .npy (NaNs kept) and PNGs are rendered once (render=True).
    `stamps` (alert cutouts' uncertainty planes and PSFs) go to a second file, an .npz beside the
    array, whose storage name is metadata["stamps_file"] (`load_subject_stamps`).
    """
    external_id = str(external_id)
    if not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise IngestError(f"external id {external_id!r} must be 1 to {MAX_EXTERNAL_ID} characters")
    if subject_set is None and workflow is not None:
        # Every ingested subject is in a set: duplicates are told per set (the same alert may feed
        # two workflows through two sets), so a subject without one could never be a duplicate.
        from core.workflows import default_subject_set

        subject_set = default_subject_set(workflow)
    same = Subject.objects.filter(project=project, subject_set=subject_set, external_id=external_id)
    existing = same.first()
    if existing is not None:
        return existing, False
    array = validate_array(array, workflow)
    written: list[str] = []
    try:
        with transaction.atomic():
            subject = Subject.objects.create(
                project=project,
                workflow=workflow,
                subject_set=subject_set,
                external_id=external_id,
                object_id=str(object_id or "")[:100],
                source=source,
                metadata=json_safe(metadata or {}),
                truth_label=truth_label,
                truth_subtype=truth_subtype,
                random_key=random.random(),
                survey=survey,
                schema_version=str(schema_version or "")[:20],
                light_curve=json_safe(light_curve or []),
            )
            slug = slugify(external_id)[:60] or "subject"
            # A private project's array goes to private storage, never to public media.
            subject.data.name = subject_storage(project).save(
                subject_upload_path(subject, f"{subject.pk}-{slug}.npy"), ContentFile(_npy_bytes(array))
            )
            written.append(subject.data.name)
            fields = ["data"]
            if stamps:
                stamps_name = subject_storage(project).save(
                    subject_upload_path(subject, f"{subject.pk}-{slug}-stamps.npz"),
                    ContentFile(_npz_bytes(stamps)),
                )
                written.append(stamps_name)
                subject.metadata = {**subject.metadata, "stamps_file": stamps_name}
                fields.append("metadata")
            if render:
                names, pngs = write_subject_pngs(subject, array)
                written.extend(pngs)
                subject.images = names
                subject.render_version = RENDER_VERSION
                fields += ["images", "render_version"]
            subject.save(update_fields=fields)
    except IntegrityError:
        _delete_files(written)
        # Another writer created it between our check and our insert.
        existing = same.first()
        if existing is None:
            raise
        return existing, False
    except BaseException:
        _delete_files(written)
        raise
    tracker = _written_files.get()
    if tracker is not None:
        tracker.extend(written)
    return subject, True


# ---------------------------------------------------------------------------------------------
# Decoding helpers


def gunzip_limited(data: bytes, limit: int | None = None) -> bytes:
    if limit is None:
        limit = settings.SKYVOTE_MAX_DECOMPRESSED_BYTES
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            out = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"corrupt gzip data ({exc})")
    if len(out) > limit:
        raise IngestError(f"decompressed data exceeds {limit // (1024 * 1024)} MiB (decompression bomb?)")
    return out


def _fits_planes(raw: bytes) -> list[tuple[str, np.ndarray]]:
    """(EXTNAME, data) of every image HDU with data, pixel counts checked before reading."""
    from astropy.io import fits

    if raw[:2] == b"\x1f\x8b":
        raw = gunzip_limited(raw)
    if not raw.startswith(b"SIMPLE"):
        raise IngestError("not a FITS file (no SIMPLE card)")
    planes = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                for index, hdu in enumerate(hdul):
                    naxis = int(hdu.header.get("NAXIS", 0))
                    if naxis == 0 or not hdu.is_image:
                        continue
                    dims = [int(hdu.header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
                    if math.prod(dims) > 3 * MAX_IMAGE_PIXELS:
                        raise IngestError(f"FITS HDU {index} has {math.prod(dims)} pixels, over the limit")
                    if hdu.data is None:
                        continue
                    name = str(hdu.header.get("EXTNAME", "")).strip().lower()
                    planes.append((name, np.array(hdu.data, dtype=np.float32)))
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(f"not a readable FITS file ({type(exc).__name__}: {exc})")
    if not planes:
        raise IngestError("FITS file has no image data")
    return planes


def _pil_array(raw: bytes, *, grey: bool) -> np.ndarray:
    """PNG/JPEG bytes → float32 (H, W) or (H, W, 3), flipped to FITS row order."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
                if width * height > min(MAX_IMAGE_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS):
                    raise IngestError(
                        f"image is {width}×{height} pixels, over the limit (decompression bomb?)"
                    )
                if grey or image.mode in ("L", "I", "I;16", "F", "1", "LA"):
                    data = np.asarray(image.convert("F"), dtype=np.float32)
                else:
                    data = np.asarray(image.convert("RGB"), dtype=np.float32)
    except IngestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise IngestError(f"image too large (decompression bomb?): {exc}")
    except Exception as exc:
        raise IngestError(f"not a readable PNG/JPEG image ({type(exc).__name__}: {exc})")
    return np.ascontiguousarray(np.flipud(data))


def decode_cutout(stamp: bytes | None, field_name: str) -> tuple[np.ndarray, str]:
    """One alert cutout → ((H, W) float32, format)."""
    if not stamp:
        raise IngestError(f"{field_name}: missing or empty stampData")
    stamp = bytes(stamp)
    try:
        if stamp[:2] == b"\x1f\x8b":
            raw = gunzip_limited(stamp, MAX_CUTOUT_DECOMPRESSED_BYTES)
            return _single_plane(_fits_planes(raw)), "fits"
        if stamp.startswith(b"SIMPLE"):
            return _single_plane(_fits_planes(stamp)), "fits"
        if stamp[:3] == b"\xff\xd8\xff" or stamp[:8] == b"\x89PNG\r\n\x1a\n":
            return _pil_array(stamp, grey=True), "jpeg" if stamp[:1] == b"\xff" else "png"
    except IngestError as exc:
        raise IngestError(f"{field_name}: {exc}")
    raise IngestError(f"{field_name}: unknown cutout format (expected gzip-compressed FITS or JPEG)")


def _single_plane(planes: list[tuple[str, np.ndarray]]) -> np.ndarray:
    data = planes[0][1]
    if data.ndim != 2:
        data = np.squeeze(data)
    if data.ndim != 2:
        raise IngestError(f"cutout has shape {planes[0][1].shape}, expected a 2-D image")
    return data


def _pad_side(missing: int, position: float | None, axis_length: int, half: int) -> tuple[int, int]:
    """Split `missing` padding rows between the low and high side of one axis.

    position: the source's 1-based pixel coordinate on the CCD along this axis, if known.
    Near the low edge the cutout lost its low side, near the high edge its high side.
    """
    if position is not None and math.isfinite(position):
        if position - 1 < half:
            return missing, 0
        if position > axis_length - half:
            return 0, missing
    return missing // 2, missing - missing // 2


def pad_planes(
    planes: list[np.ndarray], xpos: float | None = None, ypos: float | None = None, size: int = CUTOUT_SIZE
) -> tuple[np.ndarray, dict]:
    """Stack planes into (3, H, W), NaN-padding any smaller than size × size (or the largest)."""
    target_h = max([size] + [p.shape[0] for p in planes])
    target_w = max([size] + [p.shape[1] for p in planes])
    ny, nx = ZTF_QUADRANT_SHAPE
    out = np.full((len(planes), target_h, target_w), np.nan, dtype=np.float32)
    padding = {}
    for index, plane in enumerate(planes):
        h, w = plane.shape
        top = _pad_side(target_h - h, ypos, ny, size // 2)
        left = _pad_side(target_w - w, xpos, nx, size // 2)
        out[index, top[0] : top[0] + h, left[0] : left[0] + w] = plane
        if h != target_h or w != target_w:
            padding[TRIPLET_ROLES[index] if len(planes) == 3 else str(index)] = {
                "original_shape": [h, w],
                "rows_before": top[0],
                "rows_after": top[1],
                "cols_before": left[0],
                "cols_after": left[1],
            }
    return out, padding


# ---------------------------------------------------------------------------------------------
# Records: what one input unit yields before it becomes subjects


@dataclass
class Record:
    external_id: str
    array: np.ndarray
    metadata: dict
    source: str
    object_id: str = ""
    truth_label: str = ""
    truth_subtype: str = ""
    survey: str = ""
    schema_version: str = ""
    light_curve: list | None = None
    stamps: dict[str, np.ndarray] | None = None


@dataclass
class AlertFailure:
    """One alert of a file that cannot be ingested: the file's other alerts go on."""

    label: str  # "alert 3 (diaSourceId 170094456272322680)"
    reason: str


def _candidate_value(alert: dict, key: str):
    candidate = alert.get("candidate") or {}
    return candidate.get(key)


def alert_record(alert: dict, source: str) -> Record:
    """A ZTF alert (dict from Avro or a Parquet row) → Record of its cutout triplet, stored as ZTF
    delivered it (core.stamps.display_triplet turns and signs it for volunteers)."""
    candidate = alert.get("candidate")
    if not isinstance(candidate, dict):
        raise IngestError("alert has no candidate record")
    candid = alert.get("candid", candidate.get("candid"))
    if candid is None:
        raise IngestError("alert has no candid")
    planes, formats, filenames = [], set(), {}
    for field_name in CUTOUT_FIELDS:
        cutout = alert.get(field_name)
        if not isinstance(cutout, dict):
            raise IngestError(f"{field_name}: missing")
        data, fmt = decode_cutout(cutout.get("stampData"), field_name)
        if not np.isfinite(data).any():
            raise IngestError(f"{field_name}: all pixels are NaN (no data)")
        planes.append(data)
        formats.add(fmt)
        filenames[field_name] = cutout.get("fileName")
    if "jpeg" in formats or "png" in formats:
        # 2016 test alerts: 8-bit renderings, the difference without sign. Subtract its median
        # so the background sits at zero and the diverging palette stays meaningful.
        planes[2] = planes[2] - np.nanmedian(planes[2])
    array, padding = pad_planes(planes, _as_float(candidate.get("xpos")), _as_float(candidate.get("ypos")))
    metadata = {k: v for k, v in candidate.items() if not isinstance(v, bytes | bytearray | dict | list)}
    for key in ("schemavsn", "publisher", "alertId", "objectId"):
        if alert.get(key) is not None:
            metadata[key] = alert[key]
    metadata["candid"] = candid
    metadata["cutout_format"] = "/".join(sorted(formats))
    metadata["cutout_files"] = filenames
    prv = alert.get("prv_candidates")
    if isinstance(prv, list):
        metadata["n_prv_candidates"] = len(prv)
    if padding:
        metadata["padding"] = padding
    metadata.update(alert_tools.ztf_plain_metadata(candidate, metadata["cutout_format"]))
    return Record(
        external_id=str(candid),
        array=array,
        metadata=metadata,
        source=source,
        object_id=str(alert.get("objectId") or ""),
        survey=Subject.ZTF,
        schema_version=str(alert.get("schemavsn") or ""),
        light_curve=alert_tools.ztf_light_curve(alert),
    )


def rubin_record(alert: dict, source: str, schema_version: str = "") -> Record:
    """A Rubin alert (Avro, Confluent wire format or a broker's Parquet row) → Record."""
    version = schema_version or alert_tools.version_from_name(alert.get("lsst_schema_version"))
    try:
        parts = alert_tools.rubin_alert(
            alert, version, max_bytes=MAX_CUTOUT_DECOMPRESSED_BYTES, max_pixels=MAX_IMAGE_PIXELS
        )
    except alert_tools.AlertError as exc:
        raise IngestError(str(exc))
    return Record(
        external_id=parts.external_id,
        array=parts.array,
        metadata=parts.metadata,
        source=source,
        object_id=parts.object_id,
        survey=parts.survey,
        schema_version=parts.schema_version,
        light_curve=parts.light_curve,
        stamps=parts.stamps,
    )


def _alert_or_failure(alert, index: int, survey: str, source: str, schema_version: str = ""):
    """The Record of one alert, or an AlertFailure naming it: a bad alert never stops its file."""
    name_of = alert_tools.ztf_alert_label if survey == Subject.ZTF else alert_tools.rubin_alert_label
    label = name_of(alert, index)
    try:
        if not isinstance(alert, dict):
            raise IngestError("not an alert record")
        if survey == Subject.ZTF:
            return alert_record(alert, source)
        return rubin_record(alert, source, schema_version)
    except IngestError as exc:
        return AlertFailure(label, str(exc))
    except Exception as exc:  # a malformed field of one alert is that alert's problem only
        return AlertFailure(label, f"unreadable alert ({type(exc).__name__}: {exc})")


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _broken_off(read: int, exc: Exception) -> IngestError:
    # Every alert decoded before the break is whole (fastavro decodes one record at a time from its
    # block), so a file cut short in transfer keeps what arrived.
    reason = f"corrupt or truncated Avro data ({type(exc).__name__}: {exc})"
    if read:
        return BrokenOff(
            f"the file breaks off after {read} alert{'s' if read != 1 else ''} (kept); "
            f"the rest could not be read: {reason}"
        )
    return IngestError(reason)


def read_avro(path: Path) -> Iterator[Record | AlertFailure]:
    """An Avro container (ZTF or Rubin, told by its schema's fields) or Kafka messages in the
    Confluent wire format (Rubin: byte 0, a 4-byte schema id, a schemaless record)."""
    import fastavro

    with open(path, "rb") as handle:
        head = handle.read(5)
        handle.seek(0)
        if head[:4] != b"Obj\x01" and alert_tools.looks_like_confluent(head):
            yield from _read_confluent(handle, path.stat().st_size)
            return
        try:
            reader = fastavro.reader(handle)
        except Exception as exc:
            raise IngestError(f"not an Avro file ({type(exc).__name__}: {exc})")
        schema = reader.writer_schema or {}
        fields = {f.get("name") for f in schema.get("fields", [])} if isinstance(schema, dict) else set()
        survey = alert_tools.survey_of_fields(fields)
        name = schema.get("name", "?") if isinstance(schema, dict) else "?"
        if survey is None:
            raise IngestError(f"unknown Avro schema {name!r}: {alert_tools.missing_fields(fields)}")
        # Rubin's own containers name the schema (lsst.v10_0.alert); brokers' files may say it per
        # alert instead (Fink's lsst_schema_version), which rubin_record reads.
        schema_version = alert_tools.version_from_name(name) if str(name).startswith("lsst") else ""
        read = 0
        try:
            for index, alert in enumerate(reader):
                read = index + 1
                yield _alert_or_failure(alert, index, survey, "avro", schema_version)
        except Exception as exc:
            raise _broken_off(read, exc)


def _read_confluent(handle, size: int) -> Iterator[Record | AlertFailure]:
    read = 0
    messages = alert_tools.read_confluent(handle, size)
    while True:
        try:
            version, alert = next(messages)
        except StopIteration:
            return
        except alert_tools.AlertError as exc:
            if read:
                raise BrokenOff(f"the file breaks off after {read} message(s) (kept): {exc}")
            raise IngestError(f"not an Avro file: no container header, and not a Rubin Kafka message ({exc})")
        except Exception as exc:
            raise _broken_off(read, exc)
        yield _alert_or_failure(alert, read, Subject.RUBIN, "kafka", version)
        read += 1


PARQUET_COLUMNS = (
    "objectId", "candid", "candidate", "schemavsn", "publisher", "prv_candidates", "fp_hists", *CUTOUT_FIELDS,
)  # fmt: skip
RUBIN_PARQUET_COLUMNS = (
    "diaSourceId", "alertId", "observation_reason", "target_name", "diaSource", "prvDiaSources",
    "prvDiaForcedSources", "prvDiaNondetectionLimits", "diaObject", "ssSource", "ssObject", "MPCORB",
    "mpc_orbits", "lsst_schema_version", *CUTOUT_FIELDS,
)  # fmt: skip


def read_parquet(path: Path) -> Iterator[Record | AlertFailure]:
    """A broker's Parquet dump, one alert per row: ZTF (Fink's `candidate` struct) or Rubin
    (`diaSource` struct), told by the columns."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise IngestError(f"not a Parquet file ({type(exc).__name__}: {exc})")
    names = set(parquet.schema_arrow.names)
    survey = alert_tools.survey_of_fields(names | ({"candid"} if "candidate" in names else set()))
    if survey is None:
        raise IngestError(f"Parquet file is not a table of alerts: {alert_tools.missing_fields(names)}")
    wanted = PARQUET_COLUMNS if survey == Subject.ZTF else RUBIN_PARQUET_COLUMNS
    columns = [c for c in wanted if c in names]
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            for alert in batch.to_pylist():
                result = _alert_or_failure(alert, row, survey, "parquet")
                if isinstance(result, AlertFailure):
                    result.label = f"row {row}" + result.label.removeprefix(f"alert {row}")
                yield result
                row += 1
    except Exception as exc:
        raise IngestError(f"corrupt Parquet data at row {row} ({type(exc).__name__}: {exc})")


def _read_limited_check(path: Path) -> None:
    limit = settings.SKYVOTE_MAX_UPLOAD_BYTES
    size = path.stat().st_size
    if size > limit:
        raise IngestError(f"file is {size} bytes, over the {limit}-byte limit")


def _read_limited(path: Path) -> bytes:
    _read_limited_check(path)
    return path.read_bytes()


def fits_file_array(path: Path, workflow) -> np.ndarray:
    """One FITS file: a 3-plane cube, three image HDUs, or (similarity only) one image."""
    planes = _fits_planes(_read_limited(path))
    if len(planes) == 1:
        data = np.squeeze(planes[0][1])
        if data.ndim == 3 and data.shape[0] == 3:
            return data
        if data.ndim == 3 and data.shape[2] == 3:
            return np.moveaxis(data, 2, 0)
        if data.ndim == 2:
            if workflow is not None and workflow.kind == Workflow.REAL_BOGUS:
                raise IngestError(
                    "one 2-D image is not a triplet: give three files named *_sci/*_ref/*_diff, "
                    "one file with three image HDUs, or a (3, H, W) cube"
                )
            return data
        raise IngestError(f"FITS image has shape {data.shape}; expected (3, H, W) or (H, W)")
    by_name = {name: data for name, data in planes}
    named = [_role_plane(by_name, role) for role in TRIPLET_ROLES]
    if all(p is not None for p in named):
        chosen = named
    elif len(planes) == 3:
        chosen = [data for _, data in planes]
    else:
        raise IngestError(
            f"FITS file has {len(planes)} image HDUs; expected 3 (science, reference, difference)"
        )
    chosen = [np.squeeze(p) for p in chosen]
    if any(p.ndim != 2 for p in chosen):
        raise IngestError("FITS triplet HDUs must be 2-D images")
    return pad_planes(chosen, size=max(max(p.shape) for p in chosen))[0]


def _role_plane(by_name: dict, role: str):
    for name, data in by_name.items():
        if ROLE_ALIASES.get(name) == role:
            return data
    return None


def fits_triplet_array(files: dict[str, Path]) -> np.ndarray:
    planes = []
    for role in TRIPLET_ROLES:
        try:
            file_planes = _fits_planes(_read_limited(files[role]))
        except IngestError as exc:
            raise IngestError(f"{files[role].name}: {exc}")
        data = np.squeeze(file_planes[0][1])
        if data.ndim != 2:
            raise IngestError(f"{files[role].name}: expected a 2-D image, got shape {data.shape}")
        planes.append(data)
    shapes = {p.shape for p in planes}
    size = max(max(s) for s in shapes)
    return pad_planes(planes, size=size)[0]


@dataclass
class _NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(handle, available: int) -> _NpyHeader:
    """Shape and dtype from a .npy header, refusing absurd arrays before any data is read.

    available: bytes from the start of the .npy to its end (file size or zip member size). A
    header that declares more data than that is refused here: numpy would allocate the declared
    array before finding the data missing.
    """
    try:
        version = np.lib.format.read_magic(handle)
        # The header's own length comes first: numpy would ask the file for that many bytes at once.
        after_magic = handle.tell()
        declared = int.from_bytes(handle.read(2 if version == (1, 0) else 4), "little")
        if declared > MAX_NPY_HEADER_BYTES:
            raise IngestError(f"not a readable .npy array (a {declared}-byte header)")
        handle.seek(after_magic)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        header_bytes = handle.tell()
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(f"not a readable .npy array ({type(exc).__name__}: {exc})")
    header = _NpyHeader(tuple(int(n) for n in shape), dtype)
    if dtype.hasobject:
        raise IngestError("object arrays are not accepted")
    if math.prod(header.shape) > MAX_ARRAY_ELEMENTS:
        raise IngestError(f"array of shape {header.shape} is over the {MAX_ARRAY_ELEMENTS}-element limit")
    if header.nbytes > available - header_bytes:
        raise IngestError(
            f"the header declares a {header.shape} {dtype} array ({header.nbytes} bytes) "
            f"but the file holds {max(available - header_bytes, 0)} bytes of data"
        )
    return header


def _read_npy(handle, available: int) -> np.ndarray:
    """One .npy from an open file or zip member: header checked first, then only its data read."""
    start = handle.tell()
    _npy_header(handle, available)
    handle.seek(start)
    try:
        return np.lib.format.read_array(handle, allow_pickle=False)
    except Exception as exc:
        raise IngestError(f"not a readable .npy array ({type(exc).__name__}: {exc})")


def _read_npy_file(path: Path) -> np.ndarray:
    _read_limited_check(path)
    with open(path, "rb") as handle:
        return _read_npy(handle, path.stat().st_size)


def _stack_items(stack: np.ndarray, workflow) -> list[np.ndarray]:
    """(N, 63, 63, 3) or (N, 3, 63, 63) → list of (3, H, W); similarity also takes image stacks."""
    similarity = workflow is not None and workflow.kind == Workflow.SIMILARITY
    if stack.ndim == 4 and stack.shape[1] == 3:
        return list(stack)
    if stack.ndim == 4 and stack.shape[3] == 3:
        return list(stack) if similarity else [np.moveaxis(item, 2, 0) for item in stack]
    if stack.ndim == 3 and similarity:
        return list(stack) if stack.shape[2] != 3 else [stack]
    if stack.ndim == 3 and (stack.shape[0] == 3 or stack.shape[2] == 3):
        return [stack if stack.shape[0] == 3 else np.moveaxis(stack, 2, 0)]
    if stack.ndim == 2 and similarity:
        return [stack]
    raise IngestError(f"wrong shape {stack.shape}: expected (N, 63, 63, 3) or (N, 3, 63, 63)")


NPZ_ARRAY_KEYS = ("images", "cutouts", "triplets", "arrays", "data", "x", "X")
NPZ_ID_KEYS = ("ids", "external_ids", "candid", "candids")
NPZ_LABEL_KEYS = ("labels", "truth_labels", "y")


def _npz_headers(archive: zipfile.ZipFile) -> dict[str, tuple[zipfile.ZipInfo, _NpyHeader]]:
    """Every .npy member's zip entry and header, refusing the archive before any array is read.

    The sizes the zip directory declares are added up first (a few kB of zeros can declare
    gigabytes), then each member's header is read (the decompressor inflates its first block only).
    """
    infos = [info for info in archive.infolist() if info.filename.endswith(".npy")]
    if not infos:
        raise IngestError(".npz archive holds no arrays")
    limit = settings.SKYVOTE_MAX_DECOMPRESSED_BYTES
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise IngestError(
            f".npz arrays decompress to {total} bytes in all, over the {limit}-byte limit "
            "(decompression bomb?)"
        )
    headers = {}
    for info in infos:
        try:
            # ZipExtFile never reads more than the declared file_size.
            with archive.open(info) as member:
                headers[info.filename[:-4]] = (info, _npy_header(member, info.file_size))
        except IngestError as exc:
            raise IngestError(f"{info.filename}: {exc}")
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
            raise IngestError(f"{info.filename}: corrupt archive member ({exc})")
    return headers


def _npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        with archive.open(info) as member:
            return _read_npy(member, info.file_size)
    except IngestError as exc:
        raise IngestError(f"{info.filename}: {exc}")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
        raise IngestError(f"{info.filename}: corrupt archive member ({exc})")


def _npz_stack(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(images, ids or None, labels or None) of an .npz; no other member is read."""
    _read_limited_check(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError(f"not a readable .npz archive ({exc})")
    with archive:
        headers = _npz_headers(archive)
        key = next((k for k in NPZ_ARRAY_KEYS if k in headers), None)
        if key is None:
            candidates = [k for k, (_, h) in headers.items() if len(h.shape) >= 3 and h.dtype.kind in "fiu"]
            if len(candidates) != 1:
                raise IngestError(
                    f"cannot tell which array holds the images (keys: {', '.join(sorted(headers))}); "
                    f"name it one of {', '.join(NPZ_ARRAY_KEYS[:4])}"
                )
            key = candidates[0]
        id_key = next((k for k in NPZ_ID_KEYS if k in headers), None)
        label_key = next((k for k in NPZ_LABEL_KEYS if k in headers), None)
        stack = _npz_member(archive, headers[key][0])
        ids = _npz_member(archive, headers[id_key][0]) if id_key else None
        labels = _npz_member(archive, headers[label_key][0]) if label_key else None
    return stack, ids, labels


def _label_text(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int) or (isinstance(value, float) and value in (0.0, 1.0)):
        return Subject.REAL if int(value) == 1 else Subject.BOGUS
    return str(value)[:20]


def read_numpy(path: Path, workflow) -> Iterator[Record]:
    ids = labels = None
    if path.suffix.lower() == ".npz":
        stack, ids, labels = _npz_stack(path)
    else:
        stack = _read_npy_file(path)
    if stack.dtype.kind not in "fiub":
        raise IngestError(f"array dtype {stack.dtype} is not numeric")
    items = _stack_items(stack, workflow)
    for name, extra in (("ids", ids), ("labels", labels)):
        if extra is not None and len(extra) != len(items):
            raise IngestError(f"{len(extra)} {name} for {len(items)} arrays")
    for index, item in enumerate(items):
        external_id = f"{path.name}:{index}" if ids is None else str(np.asarray(ids[index]).item())
        record = Record(
            external_id=external_id,
            array=item,
            metadata={"file": path.name, "index": index},
            source="npy",
            truth_label=_label_text(labels[index]) if labels is not None else "",
        )
        try:
            record.array = validate_array(item, workflow)
        except IngestError as exc:
            raise IngestError(f"array {index}: {exc}")
        yield record


def read_image(path: Path, workflow) -> Iterator[Record]:
    if workflow is not None and workflow.kind == Workflow.REAL_BOGUS:
        raise IngestError(
            "a single PNG/JPEG image cannot be a science/reference/difference triplet; "
            "ingest it into a similarity workflow"
        )
    array = _pil_array(_read_limited(path), grey=False)
    yield Record(
        external_id=path.name,
        array=array,
        metadata={"file": path.name, "width": int(array.shape[1]), "height": int(array.shape[0])},
        source="image",
    )


# ---------------------------------------------------------------------------------------------
# Units, results and the report


@dataclass
class FileResult:
    name: str
    ingested: int = 0
    duplicates: int = 0
    error: str = ""
    subject_ids: list[int] = field(default_factory=list)
    # Alerts of this file that failed on their own ("alert 3 (diaSourceId …)", reason), and alerts
    # left out by the run's filters.
    alert_errors: list[tuple[str, str]] = field(default_factory=list)
    filtered: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.error or self.alert_errors)


@dataclass
class IngestReport:
    ingested: int = 0
    duplicates: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    subject_ids: list[int] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    filtered: int = 0
    # With filters the summary says how many alerts they left out (even none).
    filtering: bool = False

    def add(self, result: FileResult) -> None:
        self.files.append(result)
        # Each failed alert of an alert file counts as one failure of its own, named in its line.
        for label, reason in result.alert_errors:
            self.failed += 1
            self.errors.append((result.name, f"{label}: {reason}"))
        if result.error:
            self.failed += 1
            self.errors.append((result.name, result.error))
        self.filtered += result.filtered
        # A failed unit has nothing ingested, except a file that broke off (BrokenOff): it keeps
        # what came before the break.
        self.ingested += result.ingested
        self.duplicates += result.duplicates
        self.subject_ids.extend(result.subject_ids)

    @property
    def subjects(self):
        return Subject.objects.filter(pk__in=self.subject_ids)

    def summary(self) -> str:
        text = f"ingested {self.ingested}, duplicates {self.duplicates}, failed {self.failed}"
        return text + (f", filtered {self.filtered}" if self.filtering else "")

    def error_lines(self) -> list[str]:
        return [f"{name}: {reason}" for name, reason in self.errors]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _records_for(path: Path, workflow) -> Iterator[Record]:
    if not path.exists():
        raise IngestError("no such file")
    if not path.is_file():
        raise IngestError("not a regular file")
    if path.stat().st_size == 0:
        raise IngestError("empty file (0 bytes)")
    suffix = _suffix(path)
    if suffix == ".avro":
        _read_limited_check(path)
        yield from read_avro(path)
    elif suffix in (".parquet", ".parq"):
        _read_limited_check(path)
        yield from read_parquet(path)
    elif suffix in FITS_SUFFIXES:
        stem = path.name[: -len(suffix)]
        yield Record(
            external_id=stem,
            array=fits_file_array(path, workflow),
            metadata={"file": path.name},
            source="fits",
        )
    elif suffix in (".npy", ".npz"):
        yield from read_numpy(path, workflow)
    elif suffix in IMAGE_SUFFIXES:
        yield from read_image(path, workflow)
    else:
        raise IngestError(
            f"unsupported file type {suffix or '(no extension)'!r} "
            "(expected .avro, .parquet, .fits[.gz], .npy, .npz, .png, .jpg)"
        )


def _ingest_records(
    name: str,
    records: Callable[[], Iterable[Record | AlertFailure]],
    *,
    project,
    workflow,
    subject_set,
    on_item=None,
    accept: Callable[[Record], bool] | None = None,
) -> FileResult:
    """Run one unit in one transaction; on any failure roll back and delete its stored files.

    Alert files are the exception: a bad alert (an AlertFailure, or a Record add_subject refuses)
    is one error line of its own and the file's other alerts go in. `accept(record)` False leaves
    a record out (counted as filtered)."""
    result = FileResult(name=name)
    token = _written_files.set([])
    try:
        with transaction.atomic():
            try:
                for record in records():
                    if isinstance(record, AlertFailure):
                        result.alert_errors.append((record.label, record.reason))
                        continue
                    if accept is not None and not accept(record):
                        result.filtered += 1
                        continue
                    try:
                        subject, created = add_subject(
                            project=project,
                            workflow=workflow,
                            subject_set=subject_set,
                            external_id=record.external_id,
                            array=record.array,
                            metadata=record.metadata,
                            source=record.source,
                            object_id=record.object_id,
                            truth_label=record.truth_label,
                            truth_subtype=record.truth_subtype,
                            survey=record.survey,
                            schema_version=record.schema_version,
                            light_curve=record.light_curve,
                            stamps=record.stamps,
                        )
                    except IngestError as exc:
                        if not record.survey:
                            raise
                        result.alert_errors.append((_record_label(record), str(exc)))
                        continue
                    if created:
                        result.ingested += 1
                        result.subject_ids.append(subject.pk)
                    else:
                        result.duplicates += 1
                    if on_item is not None:
                        on_item()
            except BrokenOff as exc:
                # What was read before the break commits; the break is the unit's one error.
                result.error = str(exc)
    except IngestError as exc:
        _delete_files(_written_files.get() or [])
        return FileResult(name=name, error=str(exc), alert_errors=result.alert_errors)
    except (MemoryError, OSError) as exc:
        _delete_files(_written_files.get() or [])
        return FileResult(name=name, error=f"{type(exc).__name__}: {exc}", alert_errors=result.alert_errors)
    except BaseException:
        _delete_files(_written_files.get() or [])
        raise
    finally:
        _written_files.reset(token)
    return result


def _record_label(record: Record) -> str:
    key = "diaSourceId" if record.survey == Subject.RUBIN else "candid"
    return f"alert ({key} {record.external_id})"


def alert_filter(filters) -> Callable[[Record], bool] | None:
    """accept(record) for ingest_paths from filter texts (core.alerts.parse_filter); None for none.
    Records that are not alerts (FITS, NumPy, images) are never filtered out."""
    parsed = alert_tools.parse_filters(filters)
    if not parsed:
        return None

    def accept(record: Record) -> bool:
        return not record.survey or all(f.accepts(record.metadata) for f in parsed)

    return accept


def ingest_file(
    path, *, project, workflow, subject_set=None, name: str | None = None, on_item=None, accept=None
) -> FileResult:
    """Ingest one file (any supported format) atomically; a FileResult, never an exception for bad input."""
    path = Path(path)
    return _ingest_records(
        name or str(path),
        lambda: _records_for(path, workflow),
        project=project,
        workflow=workflow,
        subject_set=subject_set,
        on_item=on_item,
        accept=accept,
    )


def ingest_fits_triplet(
    files: dict[str, Path], *, project, workflow, subject_set=None, name: str | None = None, stem: str = ""
) -> FileResult:
    """Three FITS files (science, reference, difference) → one subject whose external_id is the stem."""

    def records():
        yield Record(
            external_id=stem,
            array=fits_triplet_array(files),
            metadata={"files": {role: files[role].name for role in TRIPLET_ROLES}},
            source="fits",
        )

    return _ingest_records(name or stem, records, project=project, workflow=workflow, subject_set=subject_set)


@dataclass
class _Unit:
    name: str
    path: Path | None = None
    triplet: dict[str, Path] | None = None
    stem: str = ""
    error: str = ""


def _expand(paths: Iterable[str | Path], skipped: list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            for found in sorted(entry.rglob("*")):
                if found.is_file() and not any(
                    part.startswith(".") for part in found.relative_to(entry).parts
                ):
                    if _suffix(found) in SUPPORTED_SUFFIXES:
                        files.append(found)
                    else:
                        skipped.append(str(found))
        else:
            files.append(entry)
    return files


def _plan_units(files: list[Path], display) -> list[_Unit]:
    """Group FITS files named <stem>_<role>.fits into triplets; everything else is its own unit."""
    units: list[_Unit] = []
    groups: dict[tuple[Path, str], _Unit] = {}
    for path in files:
        suffix = _suffix(path)
        match = ROLE_RE.match(path.name[: -len(suffix)]) if suffix in FITS_SUFFIXES else None
        if match is None:
            units.append(_Unit(name=display(path), path=path))
            continue
        stem, role = match["stem"], ROLE_ALIASES[match["role"].lower()]
        key = (path.parent, stem.lower())
        unit = groups.get(key)
        if unit is None:
            unit = groups[key] = _Unit(name="", triplet={}, stem=stem)
            units.append(unit)
        if role in unit.triplet:
            unit.error = f"two {role} files for {stem!r}: {unit.triplet[role].name}, {path.name}"
        unit.triplet[role] = path
    for unit in groups.values():
        unit.name = display(unit.triplet[next(iter(unit.triplet))].parent / f"{unit.stem} [FITS triplet]")
        missing = [role for role in TRIPLET_ROLES if role not in unit.triplet]
        if missing and not unit.error:
            present = ", ".join(p.name for p in unit.triplet.values())
            unit.error = f"incomplete FITS triplet ({present}): missing {' and '.join(missing)}"
    return units


def ingest_paths(
    paths: list[str | Path],
    *,
    project,
    workflow,
    subject_set=None,
    progress: Callable[[int, int, IngestReport], None] | None = None,
    relative_to: str | Path | None = None,
    on_item: Callable[[], None] | None = None,
    filters: Iterable[str] = (),
) -> IngestReport:
    """Ingest files and directories (recursively). Bad files are reported, the run goes on.

    progress(files_done, files_total, report) is called before the first and after every unit.
    relative_to: show file names relative to this folder in the report (uploads).
    on_item() is called after every subject (ingested or duplicate), for progress within big files.
    filters: conditions every alert must meet (core.alerts.parse_filter, e.g. "reliability>0.5",
    "no-ssobject"); a bad one raises alerts.FilterError before anything is read.
    """
    accept = alert_filter(filters)
    if subject_set is None and workflow is not None:
        subject_set = subject_set_named(project, workflow, "")
    report = IngestReport(filtering=accept is not None)
    root = Path(relative_to) if relative_to else None

    def display(path: Path) -> str:
        if root is not None:
            try:
                return str(path.relative_to(root))
            except ValueError:
                pass
        return str(path)

    units = _plan_units(_expand(paths, report.skipped), display)
    if progress is not None:
        progress(0, len(units), report)
    for done, unit in enumerate(units, start=1):
        if unit.error:
            result = FileResult(name=unit.name, error=unit.error)
        elif unit.triplet is not None:
            result = ingest_fits_triplet(
                unit.triplet, project=project, workflow=workflow, subject_set=subject_set,
                name=unit.name, stem=unit.stem,
            )  # fmt: skip
        else:
            result = ingest_file(
                unit.path, project=project, workflow=workflow, subject_set=subject_set, name=unit.name,
                on_item=on_item, accept=accept,
            )  # fmt: skip
        report.add(result)
        if progress is not None:
            progress(done, len(units), report)
    return report


# ---------------------------------------------------------------------------------------------
# Upload jobs (the upload page): files saved to storage, a Job(kind=ingest) tracks progress.


def subject_set_named(project, workflow, name: str):
    """The project's subject set of that name (created if needed), linked to the workflow; for '' the
    workflow's "default" set (core.workflows), so every ingest has a set."""
    from core import workflows

    name = (name or "").strip()
    if not name:
        return workflows.default_subject_set(workflow) if workflow is not None else None
    # Names are unique per project except "default", which each workflow has one of: prefer the
    # workflow's own.
    same_name = SubjectSet.objects.filter(project=project, name=name).order_by("pk")
    subject_set = (
        same_name.filter(workflows=workflow).first() if workflow is not None else None
    ) or same_name.first()
    if subject_set is None:
        subject_set = SubjectSet.objects.create(project=project, name=name)
    if workflow is not None:
        workflows.attach(subject_set, workflow)
    return subject_set


def create_ingest_job(
    *, project: Project, workflow: Workflow, uploads, user=None, subject_set_name: str = ""
) -> Job:
    """Save uploaded files to private storage and queue a Job(kind=ingest) for them.

    The request returns at once; a worker on the short queue ingests the files and the job row
    carries its progress. Files that were only half saved leave neither a job nor files behind.
    """
    limit = settings.SKYVOTE_MAX_UPLOAD_BYTES
    for upload in uploads:
        if upload.size > limit:
            raise IngestError(f"{upload.name}: {upload.size} bytes, over the {limit}-byte limit")
    storage = private_storage()
    saved: list[str] = []
    folder = f"uploads/{project.pk}/{uuid.uuid4().hex}"
    files, seen = [], set()
    try:
        for upload in uploads:
            safe = get_valid_filename(os.path.basename(upload.name)) or "upload"
            while safe in seen:
                safe = f"_{safe}"
            seen.add(safe)
            stored = storage.save(f"{folder}/{safe}", upload)
            saved.append(stored)
            files.append({"name": safe, "storage": stored})
        with transaction.atomic():
            job, _ = queue_job(
                Job.INGEST,
                project=project,
                workflow=workflow,
                user=user,
                params={"subject_set": subject_set_name.strip()[:200], "files": files, "folder": folder},
                message=f"{len(uploads)} file(s) uploaded; waiting for a worker",
            )
    except BaseException:
        _delete_private(saved)
        raise
    return job


def _delete_private(names: Iterable[str]) -> None:
    storage = private_storage()
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            pass


def _workdir_prefix(job_id: int) -> str:
    # The installation's private folder is part of the name: two installations (or test runs) on one
    # host share the system's temporary folder and must not remove each other's work.
    install = hashlib.sha256(str(settings.PRIVATE_ROOT).encode()).hexdigest()[:8]
    return f"skyvote-ingest-{install}-{job_id}-"


def _remove_workdirs(job: Job) -> None:
    """Temporary folders of earlier attempts at this job (a killed worker leaves its folder behind)."""
    for path in Path(tempfile.gettempdir()).glob(_workdir_prefix(job.pk) + "*"):
        shutil.rmtree(path, ignore_errors=True)


def _delete_uploads(job: Job) -> None:
    _remove_workdirs(job)
    _delete_private(item["storage"] for item in (job.params or {}).get("files", []))


@register(Job.INGEST, queue=SHORT, label="Ingestion", on_abandon=_remove_workdirs, on_failed=_delete_uploads)
def ingest_job(run: JobRun) -> None:
    """Ingest the files of an upload. A retry after a killed worker starts over: subjects the dead
    attempt already made are found again as duplicates, so nothing is stored twice."""
    job = run.job
    if job.params.get("watch"):
        return _watched_folder_job(run)
    files = job.params.get("files", [])
    _remove_workdirs(job)
    workdir = Path(tempfile.mkdtemp(prefix=_workdir_prefix(job.pk)))
    storage = private_storage()

    def progress(done: int, total: int, report: IngestReport) -> None:
        run.update(
            progress=done / total if total else 1.0,
            message=f"{done} / {total} files — {report.summary()}"[:300],
        )

    try:
        paths = []
        for item in files:
            target = workdir / item["name"]
            with storage.open(item["storage"], "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            paths.append(target)
        subject_set = subject_set_named(job.project, job.workflow, job.params.get("subject_set", ""))
        report = ingest_paths(
            paths, project=job.project, workflow=job.workflow, subject_set=subject_set,
            progress=progress, on_item=run.heartbeat, relative_to=workdir,
        )  # fmt: skip
        result = {
            "ingested": report.ingested,
            "duplicates": report.duplicates,
            "failed": report.failed,
            "errors": [{"file": name, "error": error} for name, error in report.errors],
            "subject_ids": report.subject_ids,
        }
        run.finish(
            Job.SUCCEEDED,
            report.summary(),
            # Appended: the log keeps what the sweep wrote about earlier attempts.
            log=Concat(F("log"), Value("".join(f"{line}\n" for line in report.error_lines()))),
            params={**job.params, "result": result},
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _delete_private(item["storage"] for item in files)


def _watched_folder_job(run: JobRun) -> None:
    """The periodic job of a watched folder (core.watch): ingest the files that are ready, once."""
    from core import watch

    job = run.job

    def progress(done: int, total: int, report: IngestReport) -> None:
        run.update(
            progress=done / total if total else 1.0,
            message=f"{done} / {total} files — {report.summary()}"[:300],
        )

    result = watch.poll(watch.watch_config_from_params(job), progress=progress, on_item=run.heartbeat)
    report = result.report or IngestReport()
    if result.busy:
        message = "Another poll of this folder was running; its files are left to it"
    elif not result.ready:
        message = "No file ready (still being written, or already ingested)"
    else:
        message = f"{len(result.ready)} file(s) — {report.summary()}"
    run.finish(
        Job.SUCCEEDED,
        message[:300],
        log=Concat(F("log"), Value("".join(f"{line}\n" for line in report.error_lines()))),
        params={
            **job.params,
            "result": {
                "files": [path.name for path in result.ready],
                "ingested": report.ingested,
                "duplicates": report.duplicates,
                "failed": report.failed,
                "filtered": report.filtered,
                "errors": [{"file": name, "error": error} for name, error in report.errors],
                "subject_ids": report.subject_ids,
            },
        },
    )


# An upload whose web process died while it was saving the files has no job to delete them: the sweep
# removes upload folders that no open ingest job names once they are older than this.
ORPHAN_UPLOAD_AGE_S = 3600


@on_sweep
def remove_orphan_uploads(report, now: float | None = None) -> None:
    root = Path(settings.PRIVATE_ROOT) / "uploads"
    if not root.is_dir():
        return
    cutoff = (now or time.time()) - ORPHAN_UPLOAD_AGE_S
    for folder in root.glob("*/*"):
        try:
            if not folder.is_dir() or folder.stat().st_mtime > cutoff:
                continue
        except OSError:
            continue
        name = folder.relative_to(settings.PRIVATE_ROOT).as_posix()
        # A finished job has deleted its files already; only an open one still needs its folder.
        if not Job.objects.filter(kind=Job.INGEST, params__folder=name, status__in=Job.OPEN).exists():
            shutil.rmtree(folder, ignore_errors=True)
