"""Triplet preprocessing compatible with braai (Duev et al. 2019, MNRAS 489, 3582).

A triplet is three cutouts of the same sky position, channels first: science, reference
(template) and difference, each nominally 63×63 pixels. What the network sees:

1. cutouts smaller than 63×63 (alerts truncated at a CCD edge) are padded, centred, with NaN;
   larger ones are centre-cropped;
2. NaN, ±inf and absurd values (|x| > 1e20, a ZTF pipeline fill value) become 0;
3. each cutout is divided by its own L2 norm (an all-zero cutout stays zero).

Only NumPy here: the torch Dataset classes live in mlcore.data.

Augmentation uses the eight symmetries of the square (flips and 90° rotations): sky cutouts have
no preferred orientation, and these maps move pixels exactly, unlike arbitrary-angle rotations
that would interpolate — smearing the PSF the classifier has to judge and bleeding NaN-masked
(zeroed) regions into real pixels.
"""

from __future__ import annotations

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
