"""Triplet preprocessing compatible with braai (Duev et al. 2019, MNRAS 489, 3582).

A triplet is three cutouts of the same sky position, channels first: science, reference
(template) and difference, each nominally 63×63 pixels. What the network sees:

1. cutouts smaller than 63×63 (alerts truncated at a CCD edge) are padded, centred, with NaN;
   larger ones are centre-cropped;
2. NaN, ±inf and absurd values (|x| > 1e20, a ZTF pipeline fill value) become 0;
3. each cutout is divided by its own L2 norm (an all-zero cutout stays zero).

Only NumPy here: the torch Dataset classes live in mlcore.data.

One model input for several surveys (``InputSpec``, ``model_stamps``, ``prepare_model_input``): before
step 1 the stamps are resampled to the model's pixel scale (default ~1″/px, ZTF's), so a Rubin stamp at
0.2″/px is rebinned 5× (exact 5×5 block sums) and ZTF's 1.01″/px stamps are left alone. The rebinning
is area-weighted on a grid centred on the stamp's centre, which conserves flux, keeps the candidate
centred and never interpolates (interpolation such as scipy.ndimage.zoom rings around sharp sources,
does not conserve flux and smears NaN masks). Optionally a fourth channel carries the difference
image's per-pixel uncertainty (σ, divided by the difference's own L2 norm, so that channel 3 / channel
4 is the pixel S/N).

Augmentation uses the eight symmetries of the square (flips and 90° rotations): sky cutouts have
no preferred orientation, and these maps move pixels exactly, unlike arbitrary-angle rotations
that would interpolate — smearing the PSF the classifier has to judge and bleeding NaN-masked
(zeroed) regions into real pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlcore import PREPROCESSING_VERSION

__all__ = [
    "CUTOUT_SIZE",
    "CHANNELS",
    "PREPROCESSING_VERSION",
    "DIHEDRAL_TRANSFORMS",
    "TripletShapeError",
    "pad_or_crop",
    "preprocess_cutout",
    "preprocess_triplet",
    "preprocess_batch",
    "channels_last_to_first",
    "as_channels_first_batch",
    "stack_triplet",
    "dihedral",
    "random_dihedral",
    "SURVEY_PIXEL_SCALES",
    "InputSpec",
    "pixel_scale_from_cd",
    "rebin_weights",
    "resample",
    "resample_variance",
    "model_stamps",
    "prepare_model_input",
    "prepare_subjects",
]

CUTOUT_SIZE = 63
CHANNELS = ("science", "reference", "difference")
# Values this large are fill values, not flux (braai/Kowalski treat them as masked too).
_ABSURD_VALUE = 1e20

# (k quarter turns, flip left-right first): the dihedral group D4 of the square.
DIHEDRAL_TRANSFORMS: tuple[tuple[int, bool], ...] = tuple(
    (k, flip) for flip in (False, True) for k in range(4)
)


class TripletShapeError(ValueError):
    """An array that cannot be a triplet (or batch of triplets); the message says why."""


def pad_or_crop(cutout: np.ndarray, size: int = CUTOUT_SIZE) -> np.ndarray:
    """Centre a 2-D cutout in a size×size frame: NaN padding where it is smaller, centre crop where larger."""
    cutout = np.asarray(cutout, dtype=np.float32)
    if cutout.ndim != 2:
        raise TripletShapeError(f"a cutout must be 2-D, got shape {cutout.shape}")
    height, width = cutout.shape
    if height == 0 or width == 0:
        raise TripletShapeError(f"empty cutout of shape {cutout.shape}")
    if (height, width) == (size, size):
        return cutout
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    cropped = cutout[top : top + size, left : left + size]
    out = np.full((size, size), np.nan, dtype=np.float32)
    h, w = cropped.shape
    row, col = (size - h) // 2, (size - w) // 2
    out[row : row + h, col : col + w] = cropped
    return out


def _clean_and_normalise(batch: np.ndarray) -> np.ndarray:
    """NaN/inf/absurd → 0, then each (sample, channel) cutout divided by its L2 norm. Works in place on float32."""
    bad = ~np.isfinite(batch)
    with np.errstate(invalid="ignore"):
        bad |= np.abs(batch) > _ABSURD_VALUE
    batch[bad] = 0.0
    # float64 accumulation: squares of raw fluxes (~1e5 counts) overflow float32 precision quickly.
    norms = np.sqrt(np.einsum("nchw,nchw->nc", batch, batch, dtype=np.float64))
    norms[norms == 0] = 1.0
    batch /= norms[:, :, None, None].astype(np.float32)
    return batch


def preprocess_cutout(cutout: np.ndarray, size: int = CUTOUT_SIZE) -> np.ndarray:
    """One 2-D cutout → padded/cropped, NaN-free, unit-L2-norm float32 (size, size)."""
    framed = pad_or_crop(cutout, size).copy()
    return _clean_and_normalise(framed[None, None])[0, 0]


def stack_triplet(science, reference, difference, size: int = CUTOUT_SIZE) -> np.ndarray:
    """Three raw cutouts of possibly different shapes → one raw (3, size, size) triplet (NaN where padded)."""
    return np.stack([pad_or_crop(c, size) for c in (science, reference, difference)])


def preprocess_triplet(triplet: np.ndarray, size: int = CUTOUT_SIZE) -> np.ndarray:
    """One channels-first (3, H, W) triplet → preprocessed float32 (3, size, size)."""
    triplet = np.asarray(triplet)
    if triplet.ndim != 3 or triplet.shape[0] != 3:
        hint = ""
        if triplet.ndim == 3 and triplet.shape[-1] == 3:
            hint = " (looks channels-last: convert with mlcore.prep.channels_last_to_first)"
        raise TripletShapeError(f"expected a (3, H, W) triplet, got shape {triplet.shape}{hint}")
    return preprocess_batch(triplet[None], size)[0]


def preprocess_batch(batch: np.ndarray, size: int = CUTOUT_SIZE) -> np.ndarray:
    """(N, 3, H, W) raw triplets (or one (3, H, W) triplet) → preprocessed float32 (N, 3, size, size).

    Always returns a new array; the input (possibly a read-only memory map) is never modified.
    """
    batch = np.asarray(batch)
    if batch.ndim == 3:
        return preprocess_triplet(batch, size)[None]
    if batch.ndim != 4 or batch.shape[1] != 3:
        hint = ""
        if batch.ndim == 4 and batch.shape[-1] == 3:
            hint = " (looks channels-last (N, H, W, 3): convert with mlcore.prep.channels_last_to_first)"
        raise TripletShapeError(f"expected (N, 3, H, W) triplets, got shape {batch.shape}{hint}")
    if not (np.issubdtype(batch.dtype, np.floating) or np.issubdtype(batch.dtype, np.integer)):
        raise TripletShapeError(f"triplets must be numeric, got dtype {batch.dtype}")
    n, _, height, width = batch.shape
    if (height, width) == (size, size):
        out = np.array(batch, dtype=np.float32, copy=True)
    else:
        if height == 0 or width == 0:
            raise TripletShapeError(f"empty cutouts of shape {batch.shape}")
        out = np.full((n, 3, size, size), np.nan, dtype=np.float32)
        top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
        cropped = batch[:, :, top : top + size, left : left + size]
        h, w = cropped.shape[2:]
        row, col = (size - h) // 2, (size - w) // 2
        out[:, :, row : row + h, col : col + w] = cropped
    return _clean_and_normalise(out)


def channels_last_to_first(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) channels-last → channels-first view. Explicit on purpose: guessing is unsafe."""
    batch = np.asanyarray(batch)  # keep np.memmap: rows are then read only when indexed
    if batch.ndim == 4 and batch.shape[-1] == 3:
        return np.moveaxis(batch, -1, 1)
    if batch.ndim == 3 and batch.shape[-1] == 3:
        return np.moveaxis(batch, -1, 0)
    raise TripletShapeError(f"expected channels-last (N, H, W, 3) or (H, W, 3), got shape {batch.shape}")


def as_channels_first_batch(batch: np.ndarray, layout: str = "auto") -> np.ndarray:
    """Accept (N, 3, H, W) ('nchw'), (N, H, W, 3) ('nhwc') or one (3, H, W) triplet; return (N, 3, H, W).

    layout='auto' recognises NHWC only when it is unambiguous (last axis 3, second axis not 3).
    Used by the CLI, which must read either layout from .npy files.
    """
    batch = np.asanyarray(batch)  # keep np.memmap: rows are then read only when indexed
    if layout not in {"auto", "nchw", "nhwc"}:
        raise ValueError(f"layout must be 'auto', 'nchw' or 'nhwc', not {layout!r}")
    if batch.ndim == 3 and layout != "nhwc":
        batch = batch[None]
    if batch.ndim != 4:
        raise TripletShapeError(f"expected (N, 3, H, W) or (N, H, W, 3) triplets, got shape {batch.shape}")
    if layout == "nhwc" or (layout == "auto" and batch.shape[1] != 3 and batch.shape[-1] == 3):
        return channels_last_to_first(batch)
    if batch.shape[1] != 3:
        raise TripletShapeError(
            f"expected 3 channels (science, reference, difference) on axis 1, got shape {batch.shape}"
        )
    return batch


def dihedral(batch: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Apply one of the 8 exact square symmetries to the last two axes (flip left-right, then k quarter turns)."""
    out = batch[..., ::-1] if flip else batch
    return np.ascontiguousarray(np.rot90(out, k, axes=(-2, -1)))


def random_dihedral(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each triplet of an (N, 3, H, W) batch gets its own random square symmetry (same for its 3 channels)."""
    choice = rng.integers(0, len(DIHEDRAL_TRANSFORMS), size=len(batch))
    out = np.empty_like(batch)
    for t, (k, flip) in enumerate(DIHEDRAL_TRANSFORMS):
        members = np.flatnonzero(choice == t)
        if len(members):
            out[members] = dihedral(batch[members], k, flip)
    return out


# ---------------------------------------------------------------------------------------------
# One model input for several surveys

# Arcseconds per pixel of each survey's alert stamps (a subject's WCS, when it has one, wins).
SURVEY_PIXEL_SCALES = {"ztf": 1.01, "rubin": 0.2}
DEFAULT_PIXEL_SCALE = 1.0
# Stamps whose scale is within 5 % of the model's are only padded or cropped: resampling ZTF's
# 1.01″ pixels to 1.0″ would blur every PSF for a 1 % change, and ZTF-trained models keep seeing
# exactly braai's input.
SCALE_TOLERANCE = 0.05
UNCERTAINTY_CHANNEL = "difference_sigma"


@dataclass(frozen=True)
class InputSpec:
    """What a model sees: size × size pixels at pixel_scale ″/px; three channels, or four with the
    difference image's uncertainty. Stored in the model's config (input_size, pixel_scale,
    in_channels), so a checkpoint knows how its input is made."""

    size: int = CUTOUT_SIZE
    pixel_scale: float = DEFAULT_PIXEL_SCALE
    uncertainty: bool = False

    def __post_init__(self):
        # 16 is the smallest input VGG6's two conv blocks reduce to a 1×1 feature map.
        if int(self.size) != self.size or not 16 <= self.size <= 512:
            raise ValueError(f"the model input size must be an integer from 16 to 512, got {self.size}")
        if not (math.isfinite(self.pixel_scale) and 0.01 <= self.pixel_scale <= 60):
            raise ValueError(f"the model pixel scale must be 0.01–60 arcsec/px, got {self.pixel_scale}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        object.__setattr__(self, "uncertainty", bool(self.uncertainty))

    @property
    def channels(self) -> int:
        return 4 if self.uncertainty else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def is_default(self) -> bool:
        return self == InputSpec()

    def key(self) -> str:
        """A short name for caches: 's63-p1-c3'."""
        return f"s{self.size}-p{self.pixel_scale:g}-c{self.channels}"

    @classmethod
    def from_model_config(cls, config) -> InputSpec:
        """The spec of a mlcore.models.ModelConfig (anything with input_size, pixel_scale, in_channels)."""
        channels = int(getattr(config, "in_channels", 3))
        if channels not in (3, 4):
            raise ValueError(f"a model input has 3 or 4 channels, not {channels}")
        return cls(
            size=int(config.input_size),
            pixel_scale=float(getattr(config, "pixel_scale", DEFAULT_PIXEL_SCALE)),
            uncertainty=channels == 4,
        )


def pixel_scale_from_cd(cd) -> float:
    """Arcseconds per pixel from a 2×2 FITS CD matrix in degrees per pixel (any rotation or flip):
    the square root of the pixel's area on the sky."""
    matrix = np.asarray(cd, dtype=np.float64).reshape(2, 2)
    return float(np.sqrt(abs(np.linalg.det(matrix))) * 3600.0)


def rebin_weights(n_in: int, n_out: int, factor: float) -> np.ndarray:
    """(n_out, n_in) overlaps, in input pixels, of output pixels `factor` input pixels wide with the
    input pixels, on an output grid whose centre is the input's centre ((n - 1) / 2 on both)."""
    centres = (n_in - 1) / 2.0 + (np.arange(n_out) - (n_out - 1) / 2.0) * factor
    low, high = centres - factor / 2.0, centres + factor / 2.0
    edges = np.arange(n_in) - 0.5
    overlap = np.minimum(high[:, None], edges[None, :] + 1.0) - np.maximum(low[:, None], edges[None, :])
    return np.clip(overlap, 0.0, None)


def _as_masked(image: np.ndarray) -> np.ndarray:
    image = np.array(image, dtype=np.float64)
    if image.ndim != 2 or 0 in image.shape:
        raise TripletShapeError(f"a stamp must be a non-empty 2-D array, got shape {image.shape}")
    with np.errstate(invalid="ignore"):
        image[~np.isfinite(image) | (np.abs(image) > _ABSURD_VALUE)] = np.nan
    return image


def _rebin(image: np.ndarray, factor: float, size: int, power: int) -> np.ndarray:
    """Sum of input pixels weighted by their overlap (to the `power`: 2 for variances), rescaled to
    the whole output pixel where part of it is masked or off the stamp; NaN where more than half is."""
    height, width = image.shape
    wy, wx = rebin_weights(height, size, factor), rebin_weights(width, size, factor)
    finite = np.isfinite(image)
    filled = np.where(finite, image, 0.0)
    total = (wy**power) @ filled @ (wx**power).T
    covered = wy @ finite.astype(np.float64) @ wx.T
    area = factor * factor
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = area / covered
        out = total * scale**power
    out[covered < 0.5 * area] = np.nan
    return out.astype(np.float32)


def resample(image: np.ndarray, factor: float, size: int | None = None) -> np.ndarray:
    """Rebin a 2-D stamp to pixels `factor` times as wide (5 for 0.2″ → 1″), centred, flux-conserving.

    Pixel values are fluxes per pixel (nJy, ADU), so an output pixel is the sum of the input area it
    covers: for an integer factor on an aligned grid that is exactly a block sum, and a source's
    total flux is unchanged. `size` (default: the input's extent in output pixels, rounded) is the
    output side; outside the stamp, or where more than half of an output pixel is masked, it is NaN
    (the same NaN padding braai gives truncated cutouts).
    """
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the resampling factor must be positive, got {factor}")
    image = _as_masked(image)
    if size is None:
        size = max(1, int(round(max(image.shape) / factor)))
    return _rebin(image, float(factor), int(size), power=1)


def resample_variance(variance: np.ndarray, factor: float, size: int | None = None) -> np.ndarray:
    """The variance plane that goes with `resample(image, factor, size)`: sums of variances with
    squared weights (independent pixels), rescaled the same way."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the resampling factor must be positive, got {factor}")
    variance = _as_masked(variance)
    variance[variance < 0] = np.nan
    if size is None:
        size = max(1, int(round(max(variance.shape) / factor)))
    return _rebin(variance, float(factor), int(size), power=2)


def _robust_sigma(image: np.ndarray) -> float:
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def model_stamps(
    triplet: np.ndarray,
    pixel_scale: float | None,
    spec: InputSpec | None = None,
    variance: np.ndarray | None = None,
) -> np.ndarray:
    """A raw triplet (3, H, W) at `pixel_scale` ″/px → the model's raw input (C, size, size), float32.

    Resampled to spec.pixel_scale unless the scales agree within SCALE_TOLERANCE (or pixel_scale is
    None: unknown, taken to be the model's), then padded or cropped to spec.size. With
    spec.uncertainty a fourth channel is the difference's σ: from `variance` ((3, H, W) or (H, W)
    for the difference, e.g. Rubin's variance planes) resampled alongside, or, for stamps without
    one (ZTF alerts carry none), the difference's robust noise (1.4826 × MAD) as a constant plane.
    NaN marks masked or padded pixels; prepare_model_input cleans and normalises.
    """
    spec = spec or InputSpec()
    triplet = np.asarray(triplet)
    if triplet.ndim != 3 or triplet.shape[0] != 3:
        raise TripletShapeError(f"expected a (3, H, W) triplet, got shape {triplet.shape}")
    factor = 1.0 if pixel_scale is None else spec.pixel_scale / float(pixel_scale)
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"pixel scale must be positive, got {pixel_scale}")
    same = abs(factor - 1.0) <= SCALE_TOLERANCE
    if same:
        planes = [pad_or_crop(_as_masked(c).astype(np.float32), spec.size) for c in triplet]
    else:
        planes = [resample(c, factor, spec.size) for c in triplet]
    if spec.uncertainty:
        sigma = None
        if variance is not None:
            variance = np.asarray(variance)
            plane = variance[2] if variance.ndim == 3 else variance
            if plane.shape != triplet.shape[1:]:
                raise TripletShapeError(
                    f"the variance plane {plane.shape} does not match the stamps {triplet.shape[1:]}"
                )
            if same:
                resampled = pad_or_crop(_as_masked(plane).astype(np.float32), spec.size)
                resampled[resampled < 0] = np.nan
            else:
                resampled = resample_variance(plane, factor, spec.size)
            sigma = np.sqrt(resampled)
        if sigma is None:
            sigma = np.full((spec.size, spec.size), _robust_sigma(planes[2]), dtype=np.float32)
            sigma[~np.isfinite(planes[2])] = np.nan
        planes.append(sigma.astype(np.float32))
    return np.stack(planes).astype(np.float32, copy=False)


def prepare_model_input(batch: np.ndarray) -> np.ndarray:
    """Raw model inputs (N, 3 or 4, S, S) from model_stamps → what the network sees, float32.

    The three image channels exactly as preprocess_batch (braai: NaN → 0, unit L2 norm each); the
    uncertainty channel NaN → 0 and divided by the *difference's* norm, so the S/N of every pixel
    survives normalisation.
    """
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[1] not in (3, 4) or batch.shape[2] != batch.shape[3]:
        raise TripletShapeError(f"expected model inputs (N, 3 or 4, S, S), got shape {batch.shape}")
    images = preprocess_batch(batch[:, :3], batch.shape[-1])
    if batch.shape[1] == 3:
        return images
    difference = np.array(batch[:, 2], dtype=np.float32)
    sigma = np.array(batch[:, 3], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(difference) | (np.abs(difference) > _ABSURD_VALUE)
        sigma_bad = ~np.isfinite(sigma) | (sigma > _ABSURD_VALUE) | (sigma < 0)
    difference[bad] = 0.0
    sigma[sigma_bad | bad] = 0.0
    norms = np.sqrt(np.einsum("nhw,nhw->n", difference, difference, dtype=np.float64))
    norms[norms == 0] = 1.0
    sigma /= norms[:, None, None].astype(np.float32)
    return np.concatenate([images, sigma[:, None]], axis=1)


def prepare_subjects(items, spec: InputSpec | None = None) -> np.ndarray:
    """(triplet, pixel_scale, variance or None) per subject → preprocessed (N, C, S, S) float32."""
    spec = spec or InputSpec()
    raws = [model_stamps(triplet, scale, spec, variance) for triplet, scale, variance in items]
    if not raws:
        return np.empty((0, *spec.shape), dtype=np.float32)
    return prepare_model_input(np.stack(raws))
