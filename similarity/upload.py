"""Reading a query image uploaded for search by image: FITS (optionally gzipped), PNG or JPEG.

Bad input gets a ValueError with a message for the user. Limits: the upload size, the decompressed
size of a gzipped FITS file and the pixel count (decompression bombs are refused, not decoded).
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib

import numpy as np
from django.conf import settings

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# Whole frames (ingest_tiles cuts them into subjects) and query images (resized before embedding),
# so larger than one subject's plane (core.ingest.MAX_IMAGE_PIXELS); checked before decoding.
MAX_PIXELS = 40_000_000


class QueryImageError(ValueError):
    pass


def _fits_image(raw: bytes) -> np.ndarray:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdus:
                for hdu in hdus:
                    data = getattr(hdu, "data", None)
                    if data is None or getattr(data, "ndim", 0) < 2:
                        continue
                    array = np.asarray(data, dtype=np.float32)
                    if array.ndim == 3:
                        # (3, H, W) colour cube → (H, W, 3); other cubes: the first plane.
                        array = np.moveaxis(array, 0, -1) if array.shape[0] == 3 else array[0]
                    while array.ndim > 2 and array.shape[-1] != 3:
                        array = array[0]
                    return array
    except (OSError, ValueError, TypeError) as exc:
        raise QueryImageError(f"not a readable FITS file ({exc})") from None
    raise QueryImageError("the FITS file holds no 2-D image")


def _pil_image(raw: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise QueryImageError(f"the image is too large ({image.width}×{image.height} pixels)")
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F", "LA") else "RGB"
            return np.asarray(image.convert(mode), dtype=np.float32)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise QueryImageError(f"not a readable PNG or JPEG image ({exc})") from None


def read_query_image(upload) -> np.ndarray:
    """An uploaded file (Django UploadedFile or binary file) → (H, W) or (H, W, 3) float32."""
    size = getattr(upload, "size", None)
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise QueryImageError(f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    raw = upload.read(MAX_UPLOAD_BYTES + 1)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise QueryImageError(f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    if not raw:
        raise QueryImageError("the file is empty")
    if raw[:2] == b"\x1f\x8b":
        limit = settings.SKYVOTE_MAX_DECOMPRESSED_BYTES
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
                raw = handle.read(limit + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise QueryImageError(f"corrupt gzip data ({exc})") from None
        if len(raw) > limit:
            raise QueryImageError(f"the gzipped file decompresses to more than {limit // (1024 * 1024)} MB")
    if raw.startswith(b"SIMPLE  ="):
        array = _fits_image(raw)
    elif raw.startswith(b"\x89PNG") or raw.startswith(b"\xff\xd8"):
        array = _pil_image(raw)
    else:
        raise QueryImageError("unsupported file type: upload a FITS, PNG or JPEG image")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise QueryImageError(f"the image is too large ({array.shape[1]}×{array.shape[0]} pixels)")
    if min(array.shape[:2]) < 8:
        raise QueryImageError(f"the image is too small ({array.shape[1]}×{array.shape[0]} pixels)")
    if not np.isfinite(array).any():
        raise QueryImageError("all pixels are NaN (no data)")
    return array
