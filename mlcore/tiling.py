"""Tiling large images (a whole Hubble or Legacy Survey frame) into cutouts, keeping tiles by entropy.

Tiles: ``tile_size`` × ``tile_size`` (default 488, as the Hubble Image Similarity Project) with
``overlap`` (default 10 %) between neighbours, i.e. a stride of round(488 × 0.9) = 439 px. The last
row and column are aligned with the image edge (they overlap their neighbour a little more) so the
whole frame is covered and every tile is full size; an image smaller than a tile gives one tile of
the whole image.

Entropy: each tile's pixels are measured in units of the *frame's* sky noise —
z = (pixel − sky) / σ, sky = median of the frame, σ = 1.4826 × MAD — and binned into unit-width
levels (z clipped to [−8, 4096]). The Shannon entropy of that histogram is ≈ 2.10 bits for pure
Gaussian sky noise whatever the image's units or depth, and grows with every pixel that carries
signal (stars, galaxies, nebulosity spread over many levels). On a simulated 2000×2400 frame
(docs/similarity.md) blank tiles with a few faint stars measure 2.08–2.09 bits, a tile with faint
nebulosity (peak 6σ) 2.29 and one with a bright spiral 2.62. ``DEFAULT_MIN_ENTROPY`` = 2.2 bits
therefore keeps a tile only if it holds clearly more than blank sky; raise it (e.g. 2.5) to keep
fewer, busier tiles. Tiles with more than ``MAX_NAN_FRACTION`` (50 %) NaN pixels (off the detector) are dropped too.

Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

__all__ = [
    "DEFAULT_TILE_SIZE",
    "DEFAULT_OVERLAP",
    "DEFAULT_MIN_ENTROPY",
    "GAUSSIAN_NOISE_ENTROPY",
    "Tile",
    "tile_starts",
    "tile_image",
    "noise_stats",
    "tile_entropy",
    "select_tiles",
]

DEFAULT_TILE_SIZE = 488
DEFAULT_OVERLAP = 0.10
DEFAULT_MIN_ENTROPY = 2.2
# Entropy (bits) of unit-variance Gaussian noise in the unit bins [k, k+1) used here: 2.105.
_edges = np.arange(-9, 10)
_p = np.diff(ndtr(_edges))
GAUSSIAN_NOISE_ENTROPY = float(-(_p * np.log2(_p)).sum())
MAX_NAN_FRACTION = 0.5
_Z_LOW, _Z_HIGH = -8, 4096


@dataclass
class Tile:
    y: int
    x: int
    array: np.ndarray  # a view into the image: (h, w) or (h, w, 3)
    entropy: float = float("nan")
    nan_fraction: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape[0], self.array.shape[1]


def tile_starts(length: int, tile_size: int, overlap: float) -> list[int]:
    """Start offsets along one axis: stride round(tile·(1 − overlap)), last tile flush with the edge."""
    if tile_size < 1:
        raise ValueError("tile_size must be positive")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length <= tile_size:
        return [0]
    stride = max(1, int(round(tile_size * (1.0 - overlap))))
    starts = list(range(0, length - tile_size + 1, stride))
    if starts[-1] != length - tile_size:
        starts.append(length - tile_size)
    return starts


def tile_image(
    image: np.ndarray, tile_size: int = DEFAULT_TILE_SIZE, overlap: float = DEFAULT_OVERLAP
) -> list[Tile]:
    """All tiles of an (H, W) or (H, W, 3) image, row by row (views, not copies)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    return [
        Tile(y=y, x=x, array=image[y : y + tile_size, x : x + tile_size])
        for y in tile_starts(height, tile_size, overlap)
        for x in tile_starts(width, tile_size, overlap)
    ]


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image.mean(axis=2) if image.ndim == 3 else image


def noise_stats(image: np.ndarray, max_samples: int = 2_000_000, seed: int = 0) -> tuple[float, float]:
    """(sky, σ) of a frame: median and 1.4826·MAD of its finite pixels (subsampled for speed)."""
    values = _grey(image).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("the image has no finite pixels")
    if values.size > max_samples:
        values = np.random.default_rng(seed).choice(values, max_samples, replace=False)
    sky = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - sky)))
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(values.std()) or 1.0
    return sky, sigma


def tile_entropy(tile: np.ndarray, sky: float, sigma: float) -> tuple[float, float]:
    """(entropy in bits of the tile's noise-unit histogram, NaN fraction)."""
    grey = _grey(tile)
    finite = np.isfinite(grey)
    nan_fraction = 1.0 - float(finite.mean()) if grey.size else 1.0
    if not finite.any():
        return 0.0, nan_fraction
    z = np.clip(np.floor((grey[finite] - sky) / sigma), _Z_LOW, _Z_HIGH).astype(np.int64) - _Z_LOW
    counts = np.bincount(z)
    p = counts[counts > 0] / z.size
    return float(-(p * np.log2(p)).sum()), nan_fraction


def select_tiles(
    image: np.ndarray,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: float = DEFAULT_OVERLAP,
    min_entropy: float = DEFAULT_MIN_ENTROPY,
) -> tuple[list[Tile], list[Tile]]:
    """(kept, dropped) tiles; each Tile carries its entropy and NaN fraction."""
    sky, sigma = noise_stats(image)
    kept, dropped = [], []
    for tile in tile_image(image, tile_size, overlap):
        tile.entropy, tile.nan_fraction = tile_entropy(tile.array, sky, sigma)
        keep = tile.entropy >= min_entropy and tile.nan_fraction <= MAX_NAN_FRACTION
        (kept if keep else dropped).append(tile)
    return kept, dropped
