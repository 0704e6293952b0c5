"""Cutouts → PNGs, rendered once per subject and cached in storage (media for public projects,
private storage for private ones: core.storage.subject_storage).

Science and reference images: ZScale interval + linear stretch, grey scale.
Difference images: symmetric diverging scale around zero (blue negative, black zero,
orange/red positive), limits ± the 99th percentile of |diff|, so negative residuals
(bad subtractions, dipoles) are as visible as positive ones.
NaN pixels (masked, or padding of cutouts truncated at the CCD edge) get one muted
purple that neither palette produces. Upscaling is nearest-neighbour (63 → 252 px)
so pixels stay crisp: volunteers should see pixels, not interpolation artefacts.
Arrays are in FITS row order (row 0 = bottom); PNGs show row 0 at the bottom, like DS9.

Alert triplets are drawn as volunteers should see them (core.stamps.display_triplet): north up,
east left, and the difference with its true sign — ZTF's difference of a fading source (isdiffpos
false) arrives multiplied by −1 and is negated back, so orange is brighter now and blue fainter on
every survey, as the text beside the images says.

Contrast presets (STRETCHES, chosen by volunteers on the classify page): "zscale" is the look above and
the only one stored; "minmax" (science/reference: linear from the minimum to the maximum; difference:
linear, limits ± max |diff|) and "asinh" (science/reference: asinh from ZScale's lower limit, the sky,
to the maximum, so faint wings and bright cores both show; difference: limits ± max |diff| with a
strong asinh easing) are drawn from the stored array when asked for (render_subject_stretch). They are
real stretches of the data, not filters on the 8-bit PNG; the difference keeps its colours (orange
brighter, blue fainter) under every preset.

Bump RENDER_VERSION whenever the look changes: `render_subject` re-renders subjects
whose render_version differs, and `manage.py rerender` does it for every subject below the
current version, in batches.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.visualization import AsinhStretch, LinearStretch, ZScaleInterval
from PIL import Image

# 3: north up, east left, and ZTF's sign-flipped differences of fading sources negated back.
RENDER_VERSION = 3
TRIPLET_ROLES = ("science", "reference", "difference")
SINGLE_ROLE = "image"
DISPLAY_SIZE = 252
# Muted purple: R ≈ B > G. Grey pixels have R = G = B, the diverging palette has either
# B ≈ 0 (positive) or R < G < B (negative), so a NaN is never mistaken for data.
NAN_RGB = (150, 60, 150)
# Diverging palette end points (RGB at ±limit); black at zero.
NEGATIVE_RGB = np.array([70.0, 150.0, 255.0])
POSITIVE_RGB = np.array([255.0, 120.0, 20.0])
DIFF_PERCENTILE = 99.0
DIFF_NOISE_SIGMAS = 8.0
_ZSCALE = ZScaleInterval()
# Contrast presets; the first is the stored look and the default everywhere.
STRETCHES = ("zscale", "minmax", "asinh")
DEFAULT_STRETCH = STRETCHES[0]
# AsinhStretch's softening for science/reference (linear below ~a of the range, logarithmic above),
# and the difference's easing scale as a fraction of its limit (smaller: faint residuals brighter).
ASINH_A = 0.1
DIFF_ASINH_SCALE = 0.05


def _finite(array: np.ndarray) -> np.ndarray:
    return array[np.isfinite(array)]


def _zscale_limits(values: np.ndarray) -> tuple[float, float]:
    try:
        vmin, vmax = _ZSCALE.get_limits(values)
    except Exception:  # zscale can fail on degenerate inputs; fall back to min/max
        vmin, vmax = float(values.min()), float(values.max())
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax <= vmin:
        vmin, vmax = float(values.min()), float(values.max())
    return float(vmin), float(vmax)


def _grey_levels(image: np.ndarray, stretch: str = DEFAULT_STRETCH) -> np.ndarray:
    """(H, W) → (H, W) float in 0..1 via the `stretch` preset (ZScale + linear by default); NaN stays NaN."""
    values = _finite(image)
    levels = np.full(image.shape, np.nan, dtype=np.float64)
    if values.size == 0:
        return levels
    if stretch == "minmax":
        vmin, vmax = float(values.min()), float(values.max())
    elif stretch == "asinh":
        # From the sky (ZScale's lower limit) to the brightest pixel: nothing saturates.
        vmin, vmax = _zscale_limits(values)[0], float(values.max())
    else:
        vmin, vmax = _zscale_limits(values)
    finite = np.isfinite(image)
    if vmax <= vmin:
        # Constant image: mid grey rather than a division by zero.
        levels[finite] = 0.5
        return levels
    scaled = np.clip((image[finite].astype(np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    curve = AsinhStretch(a=ASINH_A) if stretch == "asinh" else LinearStretch()
    levels[finite] = curve(scaled, clip=True)
    return levels


def _rgb_from_levels(levels: np.ndarray) -> np.ndarray:
    """Grey levels (NaN = mask) → uint8 (H, W, 3)."""
    nan = ~np.isfinite(levels)
    grey = np.rint(np.nan_to_num(levels, nan=0.0) * 255.0).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[nan] = NAN_RGB
    return rgb


def _grey_rgb(image: np.ndarray, stretch: str = DEFAULT_STRETCH) -> np.ndarray:
    return _rgb_from_levels(_grey_levels(image, stretch))


def _diverging_rgb(diff: np.ndarray, stretch: str = DEFAULT_STRETCH) -> np.ndarray:
    """Difference image → uint8 (H, W, 3): blue < 0 < orange, black at 0, under the `stretch` preset."""
    finite = np.isfinite(diff)
    rgb = np.zeros(diff.shape + (3,), dtype=np.uint8)
    rgb[~finite] = NAN_RGB
    values = np.abs(_finite(diff)).astype(np.float64)
    if values.size == 0:
        return rgb
    if stretch in ("minmax", "asinh"):
        limit = float(values.max())
    else:
        # At least DIFF_NOISE_SIGMAS robust sigmas: a difference that is pure noise should look
        # dark, not like confetti, so that a real residual stands out (the percentile alone
        # scales pure noise up to full colour).
        centred = _finite(diff).astype(np.float64)
        sigma = 1.4826 * float(np.median(np.abs(centred - np.median(centred))))
        limit = max(float(np.percentile(values, DIFF_PERCENTILE)), DIFF_NOISE_SIGMAS * sigma)
        if not np.isfinite(limit) or limit <= 0.0:
            limit = float(values.max())
    if limit <= 0.0:
        return rgb  # all zeros: black, no division by zero
    t = np.clip(np.nan_to_num(diff.astype(np.float64), nan=0.0) / limit, -1.0, 1.0)
    if stretch == "minmax":
        magnitude = np.abs(t)
    elif stretch == "asinh":
        magnitude = np.arcsinh(np.abs(t) / DIFF_ASINH_SCALE) / np.arcsinh(1.0 / DIFF_ASINH_SCALE)
    else:
        # asinh-like easing so faint residuals are visible without saturating bright ones.
        magnitude = np.arcsinh(3.0 * np.abs(t)) / np.arcsinh(3.0)
    colour = np.where((t < 0)[:, :, None], NEGATIVE_RGB, POSITIVE_RGB) * magnitude[:, :, None]
    out = np.rint(np.clip(colour, 0, 255)).astype(np.uint8)
    out[~finite] = NAN_RGB
    return out


def _colour_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) colour image → uint8. 8-bit-range data is shown as is; other data zscaled."""
    values = _finite(image)
    nan = ~np.isfinite(image).all(axis=2)
    if values.size == 0:
        rgb = np.zeros(image.shape, dtype=np.uint8)
    elif values.min() >= 0.0 and values.max() <= 1.0:
        rgb = np.rint(np.nan_to_num(image, nan=0.0) * 255.0).astype(np.uint8)
    elif values.min() >= 0.0 and values.max() <= 255.0:
        rgb = np.rint(np.nan_to_num(image, nan=0.0)).astype(np.uint8)
    else:
        levels = _grey_levels(image.reshape(image.shape[0], -1)).reshape(image.shape)
        rgb = np.rint(np.nan_to_num(levels, nan=0.0) * 255.0).astype(np.uint8)
    rgb[nan] = NAN_RGB
    return rgb


def _target_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(width, height) for PIL: long side = size; size None → upscale small images to 252."""
    long_side = max(height, width)
    if size is None:
        if long_side >= DISPLAY_SIZE:
            return width, height
        size = DISPLAY_SIZE
    factor = size / long_side
    return max(1, round(width * factor)), max(1, round(height * factor))


def _png_bytes(rgb: np.ndarray, size: int | None) -> bytes:
    # Arrays follow the FITS convention (row 0 at the bottom, as DS9 shows them); PNG rows run top down.
    image = Image.fromarray(np.ascontiguousarray(np.flipud(rgb)))
    target = _target_size(rgb.shape[0], rgb.shape[1], size)
    if target != image.size:
        image = image.resize(target, resample=Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def render_triplet_pngs(array: np.ndarray) -> dict[str, bytes]:
    """(3, H, W) science/reference/difference → {"science", "reference", "difference"}: PNG bytes, 252 px."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"a triplet must have shape (3, H, W), got {array.shape}")
    return {
        "science": _png_bytes(_grey_rgb(array[0]), DISPLAY_SIZE),
        "reference": _png_bytes(_grey_rgb(array[1]), DISPLAY_SIZE),
        "difference": _png_bytes(_diverging_rgb(array[2]), DISPLAY_SIZE),
    }


def render_triplet_role_png(array: np.ndarray, role: str, stretch: str = DEFAULT_STRETCH) -> bytes:
    """One image of a (3, H, W) triplet (display orientation) as PNG bytes under a contrast preset."""
    if stretch not in STRETCHES:
        raise ValueError(f"unknown stretch {stretch!r}; one of {', '.join(STRETCHES)}")
    if role not in TRIPLET_ROLES:
        raise ValueError(f"unknown triplet role {role!r}")
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"a triplet must have shape (3, H, W), got {array.shape}")
    plane = array[TRIPLET_ROLES.index(role)]
    rgb = _diverging_rgb(plane, stretch) if role == "difference" else _grey_rgb(plane, stretch)
    return _png_bytes(rgb, DISPLAY_SIZE)


def render_image_png(array: np.ndarray, size: int | None = None) -> bytes:
    """One image, (H, W) grey or (H, W, 3) colour → PNG bytes.

    size: long side in pixels; None keeps images ≥ 252 px as they are and upscales smaller ones to 252.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        rgb = _grey_rgb(array)
    elif array.ndim == 3 and array.shape[2] == 3:
        rgb = _colour_rgb(array)
    else:
        raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {array.shape}")
    return _png_bytes(rgb, size)


def is_triplet(array: np.ndarray) -> bool:
    """(3, H, W) is a science/reference/difference triplet; (H, W, 3) is a colour image."""
    return array.ndim == 3 and array.shape[0] == 3


def render_array_pngs(array: np.ndarray) -> dict[str, bytes]:
    """Role → PNG bytes for a stored subject array (triplet or single image)."""
    if is_triplet(array):
        return render_triplet_pngs(array)
    return {SINGLE_ROLE: render_image_png(array)}


def _png_name(subject, role: str) -> str:
    return f"subjects/{subject.project_id}/png/{subject.pk}-{role}-r{RENDER_VERSION}.png"


def write_subject_pngs(subject, array: np.ndarray) -> tuple[dict[str, str], list[str]]:
    """Render `array` and save its PNGs to storage. Returns (role → name, names written).

    Does not touch the database: callers set subject.images and save.
    """
    from django.core.files.base import ContentFile

    from core.stamps import subject_display_triplet
    from core.storage import delete_stored, subject_storage

    # A private project's PNGs never go to public media; the image view serves either storage.
    storage = subject_storage(subject.project)
    names: dict[str, str] = {}
    written: list[str] = []
    try:
        for role, png in render_array_pngs(subject_display_triplet(subject, array)).items():
            name = _png_name(subject, role)
            delete_stored(name)  # from both storages: an old copy in the other one would be served first
            saved = storage.save(name, ContentFile(png))
            written.append(saved)
            names[role] = saved
    except BaseException:
        for name in written:
            delete_stored(name)
        raise
    return names, written


def render_subject_stretch(subject, role: str, stretch: str) -> bytes:
    """The subject's `role` image under a contrast preset, drawn now from its stored array.

    Not stored: a preset's PNG costs a few milliseconds from the small array, only volunteers who
    pick a preset ask for it, and browsers cache it (the image view's Cache-Control); storing it would
    mean a database write per first view, files to clean up on every re-render and deletion, and a
    copy of private projects' data in one more place. Raises ValueError (not a triplet, unknown role or
    stretch) and core.ingest.IngestError / OSError (no stored array).
    """
    from core.ingest import load_subject_array
    from core.stamps import subject_display_triplet

    array = load_subject_array(subject)
    if not is_triplet(array):
        raise ValueError("contrast presets exist for science/reference/difference triplets only")
    return render_triplet_role_png(subject_display_triplet(subject, array), role, stretch)


def render_subject(subject, force: bool = False) -> bool:
    """Render a subject's PNGs into storage once.

    Re-renders only when subject.render_version != RENDER_VERSION (or force). Returns True
    when it rendered. Updates subject.images and render_version with save(update_fields=...).
    """
    from core.ingest import load_subject_array
    from core.storage import delete_stored

    if not force and subject.render_version == RENDER_VERSION and subject.images:
        return False
    array = load_subject_array(subject)
    old_names = set((subject.images or {}).values())
    names, _ = write_subject_pngs(subject, array)
    subject.images = names
    subject.render_version = RENDER_VERSION
    subject.save(update_fields=["images", "render_version"])
    for stale in old_names - set(names.values()):
        delete_stored(stale)
    return True
