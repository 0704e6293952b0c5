"""Tiling large frames into cutouts and keeping tiles by entropy (mlcore.tiling)."""

import numpy as np
import pytest

from mlcore.galaxies import render_cutout
from mlcore.tiling import (
    DEFAULT_MIN_ENTROPY,
    GAUSSIAN_NOISE_ENTROPY,
    noise_stats,
    select_tiles,
    tile_entropy,
    tile_image,
    tile_starts,
)


def test_tile_starts_stride_overlap_and_edge_alignment():
    # 488 px with 10 % overlap: stride 439; the last tile is flush with the edge.
    assert tile_starts(1500, 488, 0.1) == [0, 439, 878, 1012]
    assert tile_starts(488, 488, 0.1) == [0]
    assert tile_starts(300, 488, 0.1) == [0]  # smaller than a tile: one tile of the whole image
    assert tile_starts(100, 50, 0.0) == [0, 50]
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 50, 1.0)


def test_tiles_cover_the_image_with_the_requested_overlap():
    image = np.arange(1000 * 1300, dtype=np.float32).reshape(1000, 1300)
    tiles = tile_image(image, tile_size=488, overlap=0.1)
    covered = np.zeros(image.shape, dtype=int)
    for tile in tiles:
        assert tile.shape == (488, 488)
        assert np.array_equal(tile.array, image[tile.y : tile.y + 488, tile.x : tile.x + 488])
        covered[tile.y : tile.y + 488, tile.x : tile.x + 488] += 1
    assert covered.min() >= 1  # nothing left out
    xs = sorted({t.x for t in tiles})
    assert xs[1] - xs[0] == 439 and (xs[0] + 488) - xs[1] == 49  # 10 % of 488 ≈ 49 px shared
    assert len(tile_image(np.zeros((600, 600, 3)), 488, 0.1)) == 4  # colour frames tile the same way


def test_pure_noise_entropy_is_the_gaussian_value_whatever_the_units():
    rng = np.random.default_rng(0)
    for scale, offset in ((1.0, 0.0), (250.0, 1e4)):
        frame = rng.normal(offset, scale, (600, 600))
        sky, sigma = noise_stats(frame)
        entropy, nan_fraction = tile_entropy(frame[:488, :488], sky, sigma)
        assert entropy == pytest.approx(GAUSSIAN_NOISE_ENTROPY, abs=0.05)
        assert nan_fraction == 0.0


def test_select_tiles_keeps_objects_and_drops_blank_sky_and_off_detector_tiles():
    rng = np.random.default_rng(1)
    frame = rng.normal(100.0, 5.0, (1400, 1400)).astype(np.float32)
    galaxy, _ = render_cutout("spiral", rng, 256)
    frame[100:356, 100:356] += galaxy / galaxy.max() * 200.0  # inside the first tile only
    frame[:, 1100:] = np.nan  # off the detector: the right-hand tiles are mostly NaN
    kept, dropped = select_tiles(frame, tile_size=488, overlap=0.1, min_entropy=DEFAULT_MIN_ENTROPY)
    assert [(t.y, t.x) for t in kept] == [(0, 0)]
    assert kept[0].entropy > DEFAULT_MIN_ENTROPY
    assert len(dropped) == len(tile_image(frame, 488, 0.1)) - 1
    blank = [t for t in dropped if t.nan_fraction == 0.0 and t.x + 488 <= 1100]
    assert blank and all(t.entropy < DEFAULT_MIN_ENTROPY for t in blank)
    assert any(t.nan_fraction > 0.5 for t in dropped)


def test_all_nan_frame_is_refused_clearly():
    with pytest.raises(ValueError, match="no finite pixels"):
        select_tiles(np.full((600, 600), np.nan))
