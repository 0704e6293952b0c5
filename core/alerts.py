"""Alert packets of the two surveys: which one a packet comes from, Rubin's packets, light curves,
plain metadata and the filters of the live feed (`manage.py ingest --watch`).

ZTF and Rubin are told apart by content, never by file name: a ZTF alert has `candid`, `candidate`
and the three cutouts, a Rubin alert `diaSource` and the three cutouts. Rubin's own Kafka stream
sends the Confluent wire format (byte 0, a 4-byte big-endian schema id, then one Avro record without
its schema); the schema comes from the pinned `lsst-alert-packet` package, which ships every
published alert schema under `schema/<major>/<minor>/lsst.v<major>_<minor>.alert.avsc`, and whose
`Schema.get_schema_id` numbers them major·100 + minor (1000 is 10.0).

Photometry: Rubin fluxes are in nJy, and an AB magnitude is 31.4 − 2.5 log10(|flux| / nJy). ZTF's
magpsf is the AB magnitude of |difference flux| too (isdiffpos gives the sign), so both surveys'
light curves carry flux and magnitude with the same meaning (docs/ingestion.md).
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import operator
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import stamps as stamp_tools

AB_ZERO_POINT = 31.4  # AB magnitude of 1 nJy
MAG_PER_LN_FLUX = 2.5 / math.log(10.0)
ZTF_BANDS = {1: "g", 2: "r", 3: "i"}
RUBIN_CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
TRIPLET_ROLES = ("science", "reference", "difference")
RUBIN_NEEDS = {"diaSource", *RUBIN_CUTOUTS}
ZTF_NEEDS = {"candid", "candidate", *RUBIN_CUTOUTS}
# Oldest alert schema whose layout this reader knows (diaSource with psfFlux, band, midpointMjdTai).
OLDEST_RUBIN_MAJOR = 7
ZTF, RUBIN = "ztf", "rubin"


class AlertError(ValueError):
    """One alert cannot be used; the message says why (its file goes on with the next alert)."""


def survey_of_fields(names) -> str | None:
    """'ztf', 'rubin' or None from the field (or column) names of an alert record."""
    names = set(names)
    if ZTF_NEEDS <= names:
        return ZTF
    if RUBIN_NEEDS <= names:
        return RUBIN
    return None


def missing_fields(names) -> str:
    names = set(names)
    return (
        f"not a ZTF alert (missing {', '.join(sorted(ZTF_NEEDS - names))}) "
        f"nor a Rubin alert (missing {', '.join(sorted(RUBIN_NEEDS - names))})"
    )


def version_from_name(text) -> str:
    """'10.0' from 'lsst.v10_0', 'lsst.v10_0.alert' or '10.0'; '' when there is none."""
    match = re.search(r"v?(\d+)[._](\d+)", str(text or ""))
    return f"{int(match[1])}.{int(match[2])}" if match else ""


# ---------------------------------------------------------------------------------------------
# Rubin schemas from lsst-alert-packet, and the Confluent wire format


def _schema_root() -> Path:
    from lsst.alert.packet import get_schema_root

    return Path(str(get_schema_root()))


def known_rubin_versions() -> list[str]:
    """Alert schema versions the installed lsst-alert-packet ships, e.g. ['7.0', ..., '11.1']."""
    found = []
    for path in _schema_root().glob("*/*/lsst.v*_*.alert.avsc"):
        version = version_from_name(path.name)
        if version:
            found.append(version)
    return sorted(set(found), key=lambda v: tuple(int(n) for n in v.split(".")))


def schema_id_version(schema_id: int) -> str:
    major, minor = divmod(int(schema_id), 100)
    return f"{major}.{minor}"


@functools.lru_cache(maxsize=32)
def rubin_schema(schema_id: int):
    """(version, parsed reader schema) for a Confluent schema id; AlertError for an unknown id."""
    from lsst.alert.packet import Schema, get_schema_path

    major, minor = divmod(int(schema_id), 100)
    path = Path(get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"
    if not path.is_file():
        raise AlertError(
            f"schema id {schema_id} ({major}.{minor}) is not a Rubin alert schema lsst-alert-packet ships "
            f"({', '.join(known_rubin_versions())})"
        )
    if major < OLDEST_RUBIN_MAJOR:
        raise AlertError(
            f"Rubin alert schema {major}.{minor} is older than this reader understands "
            f"({OLDEST_RUBIN_MAJOR}.0 and later)"
        )
    return f"{major}.{minor}", Schema.from_file(str(path)).definition


def looks_like_confluent(head: bytes) -> bool:
    return len(head) >= 5 and head[0] == 0


def read_confluent(handle, size: int) -> Iterator[tuple[str, dict]]:
    """(schema version, alert) for each Confluent-framed message in a stream (a Kafka message saved
    to a file, or several written one after another)."""
    import fastavro

    while handle.tell() < size:
        header = handle.read(5)
        if len(header) < 5 or header[0] != 0:
            raise AlertError(
                f"bytes at offset {handle.tell() - len(header)} are not a Confluent wire-format message "
                "(byte 0 and a 4-byte schema id)"
            )
        version, schema = rubin_schema(int.from_bytes(header[1:5], "big"))
        yield version, fastavro.schemaless_reader(handle, schema)


def confluent_message(alert: dict, schema_id: int) -> bytes:
    """One alert in the Confluent wire format with the package's schema (tests, and replays)."""
    import fastavro

    _, schema = rubin_schema(schema_id)
    buffer = io.BytesIO()
    buffer.write(b"\x00" + int(schema_id).to_bytes(4, "big"))
    fastavro.schemaless_writer(buffer, schema, alert)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Photometry and light curves


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def flux_to_mag(flux) -> float | None:
    """AB magnitude of |flux| (nJy); None for zero or missing flux."""
    flux = _number(flux)
    if flux is None or flux == 0:
        return None
    return AB_ZERO_POINT - 2.5 * math.log10(abs(flux))


def flux_err_to_mag_err(flux, error) -> float | None:
    flux, error = _number(flux), _number(error)
    if flux is None or error is None or flux == 0:
        return None
    return MAG_PER_LN_FLUX * error / abs(flux)


def mag_to_flux(mag) -> float | None:
    mag = _number(mag)
    return None if mag is None else 10.0 ** ((AB_ZERO_POINT - mag) / 2.5)


def _point(mjd, band, flux, flux_err, mag, mag_err, kind: str, current: bool = False) -> dict | None:
    mjd = _number(mjd)
    if mjd is None:
        return None
    point = {
        "mjd": mjd,
        "band": str(band or ""),
        "flux_njy": _number(flux),
        "flux_err_njy": _number(flux_err),
        "mag": _number(mag),
        "mag_err": _number(mag_err),
        "kind": kind,
    }
    if current:
        point["current"] = True
    return point


def _sorted(points: list[dict | None]) -> list[dict]:
    """Oldest first, without repeats; some packets list the current detection among the earlier
    ones too, and the copy marked current is the one kept."""
    seen, out = set(), []
    points = sorted((p for p in points if p is not None), key=lambda p: not p.get("current", False))
    for point in points:
        if point is None:
            continue
        key = (point["mjd"], point["band"], point["kind"], point["flux_njy"], point["mag"])
        if key in seen:
            continue
        seen.add(key)
        out.append(point)
    return sorted(out, key=lambda p: (p["mjd"], not p.get("current", False)))


def ztf_band(fid) -> str:
    try:
        return ZTF_BANDS.get(int(fid), str(fid))
    except (TypeError, ValueError):
        return str(fid or "")


def _ztf_detection(candidate: dict, current: bool = False) -> dict | None:
    jd = _number(candidate.get("jd"))
    mag, sigma = _number(candidate.get("magpsf")), _number(candidate.get("sigmapsf"))
    if jd is None or mag is None:
        return None
    sign = -1.0 if stamp_tools.is_negative_flag(candidate.get("isdiffpos", "t")) else 1.0
    flux = sign * mag_to_flux(mag)
    flux_err = abs(flux) * sigma / MAG_PER_LN_FLUX if sigma is not None else None
    band = ztf_band(candidate.get("fid"))
    return _point(jd - 2400000.5, band, flux, flux_err, mag, sigma, "detection", current)


def ztf_light_curve(alert: dict) -> list[dict]:
    """prv_candidates (detections; rows with diffmaglim and no magpsf are upper limits), forced
    photometry (fp_hists, schema 4.x) and the current candidate."""
    points: list[dict | None] = []
    for prv in alert.get("prv_candidates") or []:
        if not isinstance(prv, dict):
            continue
        if _number(prv.get("magpsf")) is not None:
            points.append(_ztf_detection(prv))
            continue
        limit, jd = _number(prv.get("diffmaglim")), _number(prv.get("jd"))
        if limit is not None and jd is not None:
            points.append(_point(jd - 2400000.5, ztf_band(prv.get("fid")), None, None, limit, None, "limit"))
    for forced in alert.get("fp_hists") or []:
        if not isinstance(forced, dict):
            continue
        flux, error = _number(forced.get("forcediffimflux")), _number(forced.get("forcediffimfluxunc"))
        zero_point, jd = _number(forced.get("magzpsci")), _number(forced.get("jd"))
        if flux is None or flux <= -99999 or zero_point is None or jd is None:
            continue
        # DN → nJy with the image's zero point (AB): 1 DN is 10^((31.4 − magzpsci)/2.5) nJy.
        factor = 10.0 ** ((AB_ZERO_POINT - zero_point) / 2.5)
        flux_njy = flux * factor
        error_njy = error * factor if error is not None and error > -99999 else None
        points.append(
            _point(
                jd - 2400000.5, ztf_band(forced.get("fid")), flux_njy, error_njy,
                flux_to_mag(flux_njy), flux_err_to_mag_err(flux_njy, error_njy), "forced",
            )
        )  # fmt: skip
    candidate = alert.get("candidate") or {}
    points.append(_ztf_detection(candidate, current=True))
    return _sorted(points)


def _rubin_source_point(source: dict, kind: str, current: bool = False) -> dict | None:
    if not isinstance(source, dict):
        return None
    flux, error = source.get("psfFlux"), source.get("psfFluxErr")
    return _point(
        source.get("midpointMjdTai"), source.get("band"), flux, error,
        flux_to_mag(flux), flux_err_to_mag_err(flux, error), kind, current,
    )  # fmt: skip


def rubin_light_curve(alert: dict) -> list[dict]:
    """prvDiaSources (detections), prvDiaForcedSources (forced photometry on the difference images),
    prvDiaNondetectionLimits (schema 7: 5σ limits from the difference image's noise) and the
    current diaSource."""
    points: list[dict | None] = []
    for source in alert.get("prvDiaSources") or []:
        points.append(_rubin_source_point(source, "detection"))
    for source in alert.get("prvDiaForcedSources") or []:
        points.append(_rubin_source_point(source, "forced"))
    for limit in alert.get("prvDiaNondetectionLimits") or []:
        if isinstance(limit, dict):
            noise = _number(limit.get("diaNoise"))
            mag = flux_to_mag(5.0 * noise) if noise else None
            points.append(
                _point(limit.get("midpointMjdTai"), limit.get("band"), None, noise, mag, None, "limit")
            )
    points.append(_rubin_source_point(alert.get("diaSource") or {}, "detection", current=True))
    return _sorted(points)


# ---------------------------------------------------------------------------------------------
# Rubin alerts → the parts of a subject


@dataclass
class AlertParts:
    external_id: str
    object_id: str
    array: np.ndarray
    metadata: dict
    survey: str
    schema_version: str
    light_curve: list[dict] = field(default_factory=list)
    stamps: dict[str, np.ndarray] | None = None


def _scalars(record: dict | None) -> dict:
    if not isinstance(record, dict):
        return {}
    return {k: v for k, v in record.items() if not isinstance(v, bytes | bytearray | dict | list | tuple)}


def _gunzip(data: bytes, limit: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            out = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise AlertError(f"corrupt gzip data ({exc})")
    if len(out) > limit:
        raise AlertError(f"decompressed data exceeds {limit // (1024 * 1024)} MiB (decompression bomb?)")
    return out


def _rubin_stamp(alert: dict, field_name: str, *, max_bytes: int, max_pixels: int) -> stamp_tools.Stamp:
    raw = alert.get(field_name)
    if not raw:
        raise AlertError(f"{field_name}: missing (the alert has no such stamp)")
    raw = bytes(raw)
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, max_bytes)
    if not raw.startswith(b"SIMPLE"):
        raise AlertError(f"{field_name}: not a FITS file (no SIMPLE card)")
    try:
        stamp = stamp_tools.read_multi_extension_stamp(raw, max_pixels=max_pixels)
    except stamp_tools.StampError as exc:
        raise AlertError(f"{field_name}: {exc}")
    stamp.image[~np.isfinite(stamp.image)] = np.nan
    if not np.isfinite(stamp.image).any():
        raise AlertError(f"{field_name}: all pixels are NaN (no data)")
    return stamp


def rubin_alert(alert: dict, schema_version: str, *, max_bytes: int, max_pixels: int) -> AlertParts:
    """A Rubin alert (any schema from 7.0, from Avro, Confluent or a broker's Parquet) → its parts."""
    dia = alert.get("diaSource")
    if not isinstance(dia, dict):
        raise AlertError("alert has no diaSource record")
    source_id = alert.get("diaSourceId") or dia.get("diaSourceId") or alert.get("alertId")
    if source_id is None:
        raise AlertError("alert has no diaSourceId")
    stamps = [_rubin_stamp(alert, f, max_bytes=max_bytes, max_pixels=max_pixels) for f in RUBIN_CUTOUTS]
    shapes = [s.image.shape for s in stamps]
    if len(set(shapes)) != 1:
        sizes = ", ".join(f"{role} {h}×{w}" for role, (h, w) in zip(TRIPLET_ROLES, shapes, strict=True))
        raise AlertError(f"the three cutouts differ in size ({sizes}); they must share one pixel grid")
    array = np.stack([s.image for s in stamps]).astype(np.float32)
    uncertainty = np.stack(
        [
            s.uncertainty if s.uncertainty is not None else np.full(s.image.shape, np.nan, np.float32)
            for s in stamps
        ]
    ).astype(np.float32)
    extra = {"uncertainty": uncertainty}
    for role, stamp in zip(TRIPLET_ROLES, stamps, strict=True):
        if stamp.psf is not None:
            extra[f"psf_{role}"] = stamp.psf.astype(np.float32)

    # The three stamps share the visit's pixel grid (the template is warped onto it), so one WCS
    # turns all three; the science stamp's, else the difference's, else the template's.
    orientation = None
    for stamp in (stamps[0], stamps[2], stamps[1]):
        orientation = stamp_tools.orientation_from_wcs(stamp.header)
        if orientation is not None:
            break
    if orientation is None:
        orientation = stamp_tools.no_orientation("as delivered: the cutouts carry no WCS")

    metadata = _scalars(dia)
    for key, value in _scalars(alert).items():
        metadata.setdefault(key, value)
    dia_object = alert.get("diaObject") if isinstance(alert.get("diaObject"), dict) else {}
    object_id = dia.get("diaObjectId") or dia_object.get("diaObjectId")
    metadata["diaObjectId"] = object_id
    ss_source = alert.get("ssSource") if isinstance(alert.get("ssSource"), dict) else {}
    ss_object = alert.get("ssObject") if isinstance(alert.get("ssObject"), dict) else {}
    orbit = alert.get("mpc_orbits") or alert.get("MPCORB") or {}
    ss_id = dia.get("ssObjectId") or ss_source.get("ssObjectId") or ss_object.get("ssObjectId")
    known_ss = bool(_number(ss_id))
    designation = ss_source.get("designation") or (
        orbit.get("designation") or orbit.get("mpcDesignation") if isinstance(orbit, dict) else None
    )
    flux, flux_err = _number(dia.get("psfFlux")), _number(dia.get("psfFluxErr"))
    if flux is not None and flux != 0:
        sign = "positive" if flux > 0 else "negative"
    elif dia.get("isNegative") is not None:
        sign = "negative" if dia.get("isNegative") else "positive"
    else:
        sign = ""
    reliability = _number(dia.get("reliability"))
    metadata.update(
        {
            "mjd": _number(dia.get("midpointMjdTai")),
            "band": str(dia.get("band") or ""),
            "mag": flux_to_mag(flux),
            "mag_err": flux_err_to_mag_err(flux, flux_err),
            "snr": _number(dia.get("snr")),
            "difference_sign": sign,
            "is_dipole": dia.get("isDipole") if isinstance(dia.get("isDipole"), bool) else None,
            "known_ss_object": known_ss,
            "ss_designation": str(designation) if designation else None,
            "survey_score": reliability,
            "survey_score_name": "reliability" if reliability is not None else None,
            "n_prv_dia_sources": len(alert.get("prvDiaSources") or []),
            "n_prv_dia_forced_sources": len(alert.get("prvDiaForcedSources") or []),
            "stamp_shape": list(array.shape[1:]),
            "cutout_format": "fits",
            "orientation": orientation,
            "wcs": {role: s.header for role, s in zip(TRIPLET_ROLES, stamps, strict=True)},
        }
    )
    # What each UNCERT plane held before it was stored as 1σ, and why a plane is missing (NaN).
    metadata["uncertainty_was"] = {
        role: s.uncertainty_was for role, s in zip(TRIPLET_ROLES, stamps, strict=True)
    }
    notes = {
        role: s.uncertainty_note for role, s in zip(TRIPLET_ROLES, stamps, strict=True) if s.uncertainty_note
    }
    if notes:
        metadata["uncertainty_notes"] = notes
    if known_ss and not object_id:
        # Parquet dumps carry ssSource.ssObjectId as a double, which cannot hold 17 digits: the
        # diaSource's integer is preferred above.
        object_key = f"ss{ss_id if isinstance(ss_id, int) else int(_number(ss_id))}"
    else:
        object_key = str(object_id or "")
    return AlertParts(
        external_id=str(source_id),
        object_id=object_key,
        array=array,
        metadata=metadata,
        survey=RUBIN,
        schema_version=schema_version,
        light_curve=rubin_light_curve(alert),
        stamps=extra,
    )


def rubin_alert_label(alert, index: int) -> str:
    source_id = None
    if isinstance(alert, dict):
        dia = alert.get("diaSource") if isinstance(alert.get("diaSource"), dict) else {}
        source_id = alert.get("diaSourceId") or dia.get("diaSourceId")
    return f"alert {index}" + (f" (diaSourceId {source_id})" if source_id else "")


def ztf_alert_label(alert, index: int) -> str:
    candid = None
    if isinstance(alert, dict):
        candidate = alert.get("candidate") if isinstance(alert.get("candidate"), dict) else {}
        candid = alert.get("candid") or candidate.get("candid")
    return f"alert {index}" + (f" (candid {candid})" if candid else "")


def ztf_plain_metadata(candidate: dict, cutout_format: str) -> dict:
    """Survey-independent keys for a ZTF candidate, the same as a Rubin alert's (docs/ingestion.md)."""
    mag, sigma = _number(candidate.get("magpsf")), _number(candidate.get("sigmapsf"))
    jd = _number(candidate.get("jd"))
    sign = ""
    if candidate.get("isdiffpos") is not None:
        sign = "negative" if stamp_tools.is_negative_flag(candidate["isdiffpos"]) else "positive"
    drb, rb = _number(candidate.get("drb")), _number(candidate.get("rb"))
    score, score_name = (drb, "drb") if drb is not None else (rb, "rb") if rb is not None else (None, None)
    ss_name = candidate.get("ssnamenr")
    known_ss = isinstance(ss_name, str) and ss_name.strip().lower() not in ("", "null", "none")
    return {
        "mjd": jd - 2400000.5 if jd is not None else None,
        "band": ztf_band(candidate.get("fid")) if candidate.get("fid") is not None else "",
        "mag": mag,
        "mag_err": sigma,
        # magpsf's error is 1.0857/SNR for a PSF fit.
        "snr": MAG_PER_LN_FLUX / sigma if sigma else None,
        "difference_sign": sign,
        "is_dipole": None,
        "known_ss_object": known_ss,
        "ss_designation": ss_name.strip() if known_ss else None,
        "survey_score": score,
        "survey_score_name": score_name,
        "orientation": (
            stamp_tools.ztf_orientation()
            if cutout_format == "fits"
            else stamp_tools.no_orientation("as delivered: the 2016 test alerts' JPEG cutouts carry no WCS")
        ),
    }


# ---------------------------------------------------------------------------------------------
# Filters of the live feed


FILTER_OPERATORS = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq,
    "=": operator.eq, ">": operator.gt, "<": operator.lt,
}  # fmt: skip
FILTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|!=|==|=|>|<)\s*(.+?)\s*$")
FILTER_WORDS = {
    "no-ssobject": ("known_ss_object", False),
    "ssobject": ("known_ss_object", True),
    "no-dipole": ("is_dipole", False),
    "dipole": ("is_dipole", True),
    "positive": ("difference_sign", "positive"),
    "negative": ("difference_sign", "negative"),
}


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class AlertFilter:
    """One condition on an alert's metadata: `FIELD OP VALUE` or one of FILTER_WORDS."""

    text: str
    key: str
    op: str
    value: object

    def accepts(self, metadata: dict) -> bool:
        if self.op == "is":
            actual = metadata.get(self.key)
            if self.key == "is_dipole":  # an alert that cannot say is not a dipole
                actual = bool(actual)
            return actual == self.value
        actual = _lookup(metadata, self.key)
        if actual is None:
            return False  # a field the alert does not have never passes
        compare = FILTER_OPERATORS[self.op]
        if isinstance(self.value, bool):
            return compare(_as_bool(actual), self.value)
        if isinstance(self.value, float):
            number = _number(actual)
            return number is not None and compare(number, self.value)
        if self.op not in ("=", "==", "!="):
            return False
        return compare(str(actual).strip().lower(), str(self.value).lower())


def _as_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    return str(value).strip().lower() in ("t", "true", "1", "yes", "y")


def _lookup(metadata: dict, key: str):
    if key in metadata:
        return metadata[key]
    lowered = {k.lower(): v for k, v in metadata.items() if isinstance(k, str)}
    return lowered.get(key.lower())


def parse_filter(text: str) -> AlertFilter:
    """`reliability>0.5`, `snr>=10`, `band=r`, `isdiffpos=t`, `no-ssobject`, `no-dipole`, `positive`..."""
    cleaned = (text or "").strip()
    word = cleaned.lower().replace("_", "-")
    if word in FILTER_WORDS:
        key, value = FILTER_WORDS[word]
        return AlertFilter(cleaned, key, "is", value)
    match = FILTER_RE.match(cleaned)
    if match is None:
        raise FilterError(
            f"cannot read the filter {text!r}: write FIELD OP VALUE (OP one of > >= < <= = !=), "
            f"or one of {', '.join(FILTER_WORDS)}"
        )
    key, op, raw = match[1], match[2], match[3].strip().strip("'\"")
    value: object
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw
    if isinstance(value, str) and op not in ("=", "==", "!="):
        raise FilterError(f"the filter {text!r} compares {key} with {raw!r}: only numbers take > or <")
    return AlertFilter(cleaned, key, op, value)


def parse_filters(texts) -> list[AlertFilter]:
    return [parse_filter(text) for text in texts or [] if str(text).strip()]
