"""Alert cutouts as stamps: their planes, their sky orientation, and the triplet volunteers see.

A subject's stored array is the triplet as the survey delivered it (science, reference,
difference; FITS row order, row 0 at the bottom). What the classify page shows is derived from it
by `display_triplet`, at rendering time, so that a change of these rules reaches old subjects by
re-rendering (`manage.py rerender`) without touching their data:

* **North up, east left.** Each stamp is turned with the transform its metadata records
  (`metadata["orientation"]`, worked out at ingest from the stamp's WCS). A quarter turn or a flip
  moves pixels exactly; any other angle resamples (cubic spline; NaN where the turned stamp has no
  data, e.g. the corners of a 45° turn). Rubin stamps follow the visit's rotation; ZTF cutouts carry
  no WCS, but ZTF images lie north down, east left (fitted from the positions of alerts on one
  readout channel), so ZTF FITS cutouts are flipped top to bottom.
* **The sign of the difference.** ZTF sends the difference of a negative detection (isdiffpos
  false) multiplied by −1, so that the candidate is always bright; it is negated back, so that
  orange means brighter now and blue fainter, as it does for Rubin, whose differences are signed.

This module imports no Django model: rendering, ingestion and model code can all use it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np

# A turn this close to a quarter turn (at the stamp's edge: well under a pixel) moves pixels
# exactly instead of resampling them.
SNAP_DEGREES = 0.5
# Header cards kept in metadata: enough to rebuild each stamp's WCS and place it on the detector.
WCS_CARDS = (
    "NAXIS1", "NAXIS2", "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2",
    "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CD1_1", "CD1_2",
    "CD2_1", "CD2_2", "CROTA2", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "ROTPA",
    "CUTMINX", "CUTMINY", "BUNIT",
)  # fmt: skip
NEGATIVE_FLAGS = ("f", "0", "false", "n", "no")
# ZTF readout-channel images lie east left, north down: dE/dx = −1″/px and dN/dy = −1″/px, fitted
# from the positions (xpos, ypos, ra, dec) of five alerts on one channel of one exposure. A flip top
# to bottom puts north up.
ZTF_TRANSFORM = ((1, 0), (0, -1))


class StampError(ValueError):
    """A cutout that cannot be used; the message says which plane and why."""


@dataclass
class Stamp:
    """One cutout: the image, its 1σ uncertainty (None if absent), the PSF model, header cards."""

    image: np.ndarray
    uncertainty: np.ndarray | None
    psf: np.ndarray | None
    header: dict
    uncertainty_note: str = ""  # why there is no uncertainty plane ("" when there is one)
    uncertainty_was: str = ""  # what the file held: "sigma", "variance" or "inverse variance"


def _header_cards(header) -> dict:
    cards = {}
    for key in WCS_CARDS:
        if key in header:
            value = header[key]
            if isinstance(value, bool | int | float | str):
                cards[key] = value
    return cards


def _plane(data, name: str) -> np.ndarray:
    array = np.squeeze(np.asarray(data, dtype=np.float32))
    if array.ndim != 2:
        raise StampError(f"{name} has shape {tuple(np.shape(data))}, expected a 2-D image")
    return array.astype(np.float32, copy=True)


def read_multi_extension_stamp(raw: bytes, *, max_pixels: int) -> Stamp:
    """A plain (not gzipped) FITS cutout with the image in the primary HDU or the first image HDU,
    and optionally UNCERT (uncertainty; its UTYPE says whether it is a variance) and PSFIMAGE."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                image = uncertainty = psf = None
                header: dict = {}
                utype = ""
                for index, hdu in enumerate(hdul):
                    naxis = int(hdu.header.get("NAXIS", 0))
                    if naxis == 0 or not hdu.is_image:
                        continue
                    dims = [int(hdu.header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
                    if math.prod(dims) > max_pixels:
                        raise StampError(f"HDU {index} has {math.prod(dims)} pixels, over the limit")
                    name = str(hdu.header.get("EXTNAME", "")).strip().upper()
                    if name in ("UNCERT", "VARIANCE", "ERR", "SIGMA"):
                        uncertainty = _plane(hdu.data, name)
                        utype = str(
                            hdu.header.get("UTYPE", "VarianceUncertainty" if name == "VARIANCE" else "")
                        )
                    elif name in ("PSFIMAGE", "PSF"):
                        psf = _plane(hdu.data, name)
                    elif image is None and hdu.data is not None:
                        image = _plane(hdu.data, "the image")
                        header = _header_cards(hdu.header)
    except StampError:
        raise
    except Exception as exc:
        raise StampError(f"not a readable FITS file ({type(exc).__name__}: {exc})")
    if image is None:
        raise StampError("the FITS file has no image plane")
    note, was = "", ""
    if uncertainty is None:
        note = "no uncertainty plane"
    elif uncertainty.shape != image.shape:
        note = f"uncertainty plane {uncertainty.shape[0]}×{uncertainty.shape[1]} does not match the image; dropped"
        uncertainty = None
    elif "inverse" in utype.lower():
        with np.errstate(invalid="ignore", divide="ignore"):
            uncertainty = (1.0 / np.sqrt(uncertainty)).astype(np.float32)
        was = "inverse variance"
    elif "variance" in utype.lower():
        # Rubin labels its UNCERT plane a VarianceUncertainty, and its values are variances (their
        # square roots add up to the alert's psfFluxErr); stored as 1σ like every other plane.
        with np.errstate(invalid="ignore"):
            uncertainty = np.sqrt(uncertainty)
        was = "variance"
    else:
        was = "sigma"
    return Stamp(
        image=image,
        uncertainty=uncertainty,
        psf=psf,
        header=header,
        uncertainty_note=note,
        uncertainty_was=was,
    )


# ---------------------------------------------------------------------------------------------
# Orientation


def sky_jacobian(cards: dict) -> np.ndarray | None:
    """2×2 matrix: (east, north) offsets in degrees on the sky per (x, y) pixel step, at the
    reference pixel; None without a usable WCS.

    Rubin cutouts carry CRPIX/CRVAL/PC but no CTYPE. Their PC matrix is still the tangent-plane
    one (both rows have the 0.2″ pixel scale, whatever the declination), so the linear part is
    read as (RA, Dec) unless CTYPE says the axes are the other way round.
    """
    from astropy.wcs import WCS

    if not any(key in cards for key in ("PC1_1", "CD1_1", "CDELT1", "CROTA2")):
        return None
    from astropy.io import fits

    header = fits.Header()
    for key, value in cards.items():
        if key not in ("NAXIS1", "NAXIS2", "BUNIT", "ROTPA", "CUTMINX", "CUTMINY"):
            header[key] = value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
            matrix = np.array(wcs.pixel_scale_matrix, dtype=np.float64)
    except Exception:
        return None
    if matrix.shape != (2, 2) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix)) < 1e-20:
        return None
    ctype1 = str(cards.get("CTYPE1", "")).upper()
    if ctype1.startswith("DEC") or ctype1[1:4] == "LAT":
        matrix = matrix[::-1].copy()
    return matrix


def _describe(transform: np.ndarray, resampled: bool) -> str:
    """Words for what the transform (output offsets → input offsets) does to the picture."""
    t = np.asarray(transform, dtype=float)
    if np.allclose(t, np.eye(2)):
        return "already north up, east left (not turned)"
    if np.allclose(t, [[1, 0], [0, -1]]):
        return "flipped top to bottom to north up, east left"
    if np.allclose(t, [[-1, 0], [0, 1]]):
        return "flipped left to right to north up, east left"
    flipped = np.linalg.det(t) < 0
    # The picture moves by the inverse of the transform; with a flip, read the rest after a
    # left-right flip.
    inverse = np.linalg.inv(t)
    if flipped:
        inverse = inverse @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    angle = math.degrees(math.atan2(inverse[1, 0], inverse[0, 0]))
    turn = f"rotated {abs(angle):.0f}°" + (
        " clockwise" if angle < -0.5 else " anticlockwise" if angle > 0.5 else ""
    )
    if abs(abs(angle) - 180) < 0.5:
        turn = "rotated 180°"
    text = ("flipped left to right and " if flipped else "") + turn + " to north up, east left"
    return text + (" (resampled)" if resampled else "")


def orientation_from_wcs(cards: dict) -> dict | None:
    """The transform that puts north up and east left, from a stamp's WCS cards; None without one.

    Returns {"transform": [[a, b], [c, d]] (output pixel offsets from the centre → input offsets,
    x then y), "resampled": bool, "north_angle_deg": where north pointed before (degrees
    anticlockwise from up), "mirrored": the stamp was a mirror image of the sky, "text": words}.
    """
    jacobian = sky_jacobian(cards)
    if jacobian is None:
        return None
    scale = math.sqrt(abs(np.linalg.det(jacobian)))
    target = np.array([[-scale, 0.0], [0.0, scale]])
    transform = np.linalg.solve(jacobian, target)
    north = np.linalg.solve(jacobian, [0.0, 1.0])
    north_angle = math.degrees(math.atan2(-north[0], north[1]))
    snapped = np.rint(transform)
    exact = (
        np.abs(snapped).sum() == 2
        and abs(abs(np.linalg.det(snapped)) - 1) < 1e-9
        and np.abs(transform - snapped).max() < math.radians(SNAP_DEGREES)
    )
    final = snapped if exact else transform
    return {
        "transform": [[float(v) for v in row] for row in final],
        "resampled": not exact,
        "north_angle_deg": round(north_angle, 2),
        "mirrored": bool(np.linalg.det(jacobian) > 0),
        "pixel_scale_arcsec": round(scale * 3600.0, 4),
        "source": "wcs",
        "text": _describe(final, not exact),
    }


def ztf_orientation() -> dict:
    transform = [[float(v) for v in row] for row in ZTF_TRANSFORM]
    return {
        "transform": transform,
        "resampled": False,
        "north_angle_deg": 180.0,
        "mirrored": True,
        "pixel_scale_arcsec": 1.01,
        "source": "ztf",
        "text": _describe(np.array(transform), False)
        + " (ZTF cutouts carry no WCS; ZTF images lie north down)",
    }


def no_orientation(reason: str) -> dict:
    return {"transform": [[1.0, 0.0], [0.0, 1.0]], "resampled": False, "source": "none", "text": reason}


def _output_shape(shape: tuple[int, int], transform: np.ndarray) -> tuple[int, int]:
    h, w = shape
    # A quarter turn swaps the axes; a resampled turn keeps the stamp's frame.
    if np.allclose(transform, np.rint(transform)) and abs(transform[0, 0]) < 0.5:
        return w, h
    return h, w


def apply_orientation(planes: np.ndarray, orientation: dict | None, *, order: int = 3) -> np.ndarray:
    """Turn a (N, H, W) stack (or one (H, W) plane) by the orientation's transform, about the
    stamp's centre. Exact for quarter turns and flips; resampled otherwise (NaN outside the data)."""
    array = np.asarray(planes, dtype=np.float32)
    single = array.ndim == 2
    stack = array[None] if single else array
    if not orientation:
        return array
    transform = np.asarray(orientation.get("transform") or np.eye(2), dtype=np.float64)
    if transform.shape != (2, 2) or np.allclose(transform, np.eye(2)):
        return array
    h, w = stack.shape[1:]
    out_h, out_w = _output_shape((h, w), transform)
    yo, xo = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    dx, dy = xo - (out_w - 1) / 2.0, yo - (out_h - 1) / 2.0
    xi = transform[0, 0] * dx + transform[0, 1] * dy + (w - 1) / 2.0
    yi = transform[1, 0] * dx + transform[1, 1] * dy + (h - 1) / 2.0
    if np.allclose(transform, np.rint(transform)):
        rows = np.rint(yi).astype(int)
        cols = np.rint(xi).astype(int)
        out = stack[:, rows, cols]
    else:
        from scipy import ndimage

        out = np.full((stack.shape[0], out_h, out_w), np.nan, dtype=np.float32)
        for index, plane in enumerate(stack):
            finite = np.isfinite(plane)
            if not finite.any():
                continue
            filled = np.where(finite, plane, np.float32(np.median(plane[finite]))).astype(np.float64)
            values = ndimage.map_coordinates(filled, [yi, xi], order=order, mode="nearest")
            # Where the turned stamp reaches outside the data (or onto masked pixels) there is nothing
            # to show: NaN, drawn in the mask colour.
            support = ndimage.map_coordinates(finite.astype(np.float64), [yi, xi], order=1, mode="constant")
            inside = (yi >= -0.5) & (yi <= h - 0.5) & (xi >= -0.5) & (xi <= w - 0.5)
            values[~inside | (support < 0.999)] = np.nan
            out[index] = values.astype(np.float32)
    return out[0] if single else np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------
# What volunteers see


def is_negative_flag(value) -> bool:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return str(value).strip().lower() in NEGATIVE_FLAGS


def stored_difference_is_sign_flipped(survey: str, metadata: dict) -> bool:
    """ZTF negates the difference cutout of a negative detection (isdiffpos false) before sending
    it; every other source stores the difference with its true sign."""
    metadata = metadata or {}
    if survey not in ("ztf", "") or "isdiffpos" not in metadata:
        return False
    if metadata.get("cutout_format", "fits") != "fits":
        return False  # 2016 test alerts: unsigned 8-bit JPEGs, nothing to undo
    return is_negative_flag(metadata["isdiffpos"])


def orientation_for(survey: str, metadata: dict, source: str = "") -> dict | None:
    """The orientation stored at ingest, or for ZTF alerts ingested before orientation was recorded,
    ZTF's fixed one. None: shown as stored (FITS files, NumPy stacks, images, synthetic data)."""
    metadata = metadata or {}
    stored = metadata.get("orientation")
    if isinstance(stored, dict) and "transform" in stored:
        return stored
    is_ztf_alert = survey == "ztf" or (
        not survey and source in ("avro", "parquet") and "isdiffpos" in metadata
    )
    if is_ztf_alert and metadata.get("cutout_format", "fits") == "fits":
        return ztf_orientation()
    return None


def display_triplet(
    array: np.ndarray, *, survey: str = "", metadata: dict | None = None, source: str = ""
) -> np.ndarray:
    """The (3, H, W) triplet as volunteers see it: north up, east left, the difference signed (what
    the diverging palette colours: orange brighter now, blue fainter). Other arrays pass through."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        return array
    metadata = metadata or {}
    out = apply_orientation(array, orientation_for(survey, metadata, source))
    if stored_difference_is_sign_flipped(survey, metadata):
        out = out.copy()
        out[2] = -out[2]
    return out


def subject_display_triplet(subject, array: np.ndarray) -> np.ndarray:
    return display_triplet(
        array,
        survey=getattr(subject, "survey", "") or "",
        metadata=getattr(subject, "metadata", None) or {},
        source=getattr(subject, "source", "") or "",
    )
