"""Rendering cutouts to PNG: size, NaN mask, diverging difference, caching."""

import io
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from PIL import Image

from core import rendering
from core.ingest import add_subject
from core.models import Project, Subject, Workflow
from core.rendering import NAN_RGB, render_image_png, render_subject, render_triplet_pngs

SCALE = 4  # 63 → 252


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def pixel(rgb: np.ndarray, row: int, col: int, height: int = 63) -> np.ndarray:
    """RGB of array pixel (row, col): arrays are in FITS order, so row 0 is the bottom of the PNG."""
    return rgb[(height - 1 - row) * SCALE + 1, col * SCALE + 1]


def noisy_triplet(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 5, size=(3, 63, 63)).astype(np.float32)


def test_triplet_pngs_are_252_px_and_crisp():
    pngs = render_triplet_pngs(noisy_triplet())
    assert set(pngs) == {"science", "reference", "difference"}
    for png in pngs.values():
        rgb = decode(png)
        assert rgb.shape == (252, 252, 3)
        # Nearest-neighbour: every 4×4 block is one colour.
        blocks = rgb.reshape(63, SCALE, 63, SCALE, 3)
        assert (blocks == blocks[:, :1, :, :1, :]).all()


def test_nan_pixels_get_the_mask_colour_and_only_they_do():
    array = noisy_triplet()
    array[0, 3, 40] = np.nan
    array[2, 50, 5] = np.nan
    pngs = render_triplet_pngs(array)
    science, difference = decode(pngs["science"]), decode(pngs["difference"])
    assert tuple(pixel(science, 3, 40)) == NAN_RGB
    assert tuple(pixel(difference, 50, 5)) == NAN_RGB
    mask_pixels = (science.reshape(-1, 3) == NAN_RGB).all(axis=1).sum()
    assert mask_pixels == SCALE * SCALE  # exactly the one NaN pixel
    # Grey data never looks like the mask.
    assert (science[..., 0] == science[..., 1]).sum() == science.shape[0] * science.shape[1] - mask_pixels


def test_difference_uses_a_diverging_scale_around_zero():
    array = noisy_triplet()
    diff = np.random.default_rng(1).normal(0, 1, size=(63, 63)).astype(np.float32)
    diff[10, 10] = -40.0
    diff[20, 30] = 40.0
    diff[40, 40] = 0.0
    array[2] = diff
    rgb = decode(render_triplet_pngs(array)["difference"]).astype(int)
    negative, positive, zero = pixel(rgb, 10, 10), pixel(rgb, 20, 30), pixel(rgb, 40, 40)
    assert negative[2] > negative[0] + 100  # bluish
    assert positive[0] > positive[2] + 100  # reddish/orange
    assert zero.sum() < 30  # dark at zero


def test_row_zero_is_shown_at_the_bottom():
    array = np.zeros((63, 63), dtype=np.float32)
    array[0, :] = 100.0
    rgb = decode(render_image_png(array))
    assert rgb[-1, 0, 0] > rgb[0, 0, 0]


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_and_all_nan_arrays_do_not_crash(value):
    constant = np.full((3, 63, 63), value, dtype=np.float32)
    pngs = render_triplet_pngs(constant)
    assert decode(pngs["science"]).shape == (252, 252, 3)
    all_nan = np.full((3, 63, 63), np.nan, dtype=np.float32)
    for png in render_triplet_pngs(all_nan).values():
        assert (decode(png).reshape(-1, 3) == NAN_RGB).all()


def test_single_and_colour_images():
    grey = render_image_png(np.arange(100, dtype=np.float32).reshape(10, 10), size=50)
    assert Image.open(io.BytesIO(grey)).size == (50, 50)
    colour = np.zeros((20, 40, 3), dtype=np.float32)
    colour[..., 0] = 255.0
    rgb = decode(render_image_png(colour))
    assert rgb.shape == (126, 252, 3) and tuple(rgb[5, 5]) == (255, 0, 0)
    big = render_image_png(np.ones((300, 280), dtype=np.float32))
    assert Image.open(io.BytesIO(big)).size == (280, 300)  # large images keep their size
    with pytest.raises(ValueError, match="shape"):
        render_image_png(np.ones((2, 3, 4, 5)))


# --- render_subject: once, cached, re-rendered on version change ---------------------------------


@pytest.fixture
def subject(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    owner = get_user_model().objects.create_user("o", password="pw-owner-123")
    project = Project.objects.create(slug="p", name="P", owner=owner)
    workflow = Workflow.objects.create(project=project, slug="rb", name="RB")
    subject, _ = add_subject(
        project=project, workflow=workflow, subject_set=None, external_id="s1", array=noisy_triplet(),
        metadata={}, source="synthetic",
    )  # fmt: skip
    return subject


def test_render_is_cached(subject, settings):
    media = Path(settings.MEDIA_ROOT)
    assert subject.render_version == rendering.RENDER_VERSION
    stamps = {name: (media / name).stat().st_mtime_ns for name in subject.images.values()}
    fresh = Subject.objects.get(pk=subject.pk)
    assert render_subject(fresh) is False
    assert {name: (media / name).stat().st_mtime_ns for name in fresh.images.values()} == stamps


def test_version_bump_re_renders_and_removes_old_pngs(subject, settings, monkeypatch):
    media = Path(settings.MEDIA_ROOT)
    old_names = set(subject.images.values())
    monkeypatch.setattr(rendering, "RENDER_VERSION", rendering.RENDER_VERSION + 1)
    fresh = Subject.objects.get(pk=subject.pk)
    assert render_subject(fresh) is True
    fresh.refresh_from_db()
    assert fresh.render_version == rendering.RENDER_VERSION
    assert set(fresh.images) == {"science", "reference", "difference"}
    assert not (set(fresh.images.values()) & old_names)
    assert all((media / name).is_file() for name in fresh.images.values())
    assert not any((media / name).exists() for name in old_names)
    assert render_subject(fresh) is False
    assert render_subject(fresh, force=True) is True


def test_subject_rendered_later_when_ingested_without_render(subject):
    other, created = add_subject(
        project=subject.project, workflow=subject.workflow, subject_set=None, external_id="s2",
        array=noisy_triplet(2), metadata={}, source="synthetic", render=False,
    )  # fmt: skip
    assert created and other.images == {} and other.render_version == 0
    assert render_subject(other) is True
    assert set(Subject.objects.get(pk=other.pk).images) == {"science", "reference", "difference"}
