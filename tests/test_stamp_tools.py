"""Contrast presets of the classify page's stamps: real stretches of the data (core.rendering), served by
the access-checked image view (core.views_files) with `?stretch=`, signed per preset."""

import io
import re
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from core.ingest import add_subject
from core.models import Project, ProjectMembership, Workflow
from core.rendering import STRETCHES, render_triplet_pngs, render_triplet_role_png
from core.views_files import _signature, subject_image_url

PNG = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def star_field(seed=0) -> np.ndarray:
    """Sky noise with one bright star at the centre of every plane (a positive residual in the difference)."""
    array = np.random.default_rng(seed).normal(100.0, 5.0, size=(3, 63, 63)).astype(np.float32)
    yy, xx = np.mgrid[:63, :63]
    star = 4000.0 * np.exp(-((yy - 31) ** 2 + (xx - 31) ** 2) / (2 * 2.0**2))
    array[0] += star
    array[1] += 0.5 * star
    array[2] = np.random.default_rng(seed + 1).normal(0.0, 5.0, size=(63, 63)) + 0.5 * star
    return array


# --- rendering: the presets are stretches of the data --------------------------------------------


def test_zscale_is_the_stored_look_and_the_presets_differ():
    array = star_field()
    stored = render_triplet_pngs(array)
    for role in ("science", "reference", "difference"):
        assert render_triplet_role_png(array, role, "zscale") == stored[role]
        looks = {render_triplet_role_png(array, role, s) for s in STRETCHES}
        assert len(looks) == 3, role
    with pytest.raises(ValueError, match="stretch"):
        render_triplet_role_png(array, "science", "linear")


def test_minmax_and_asinh_do_not_saturate_the_star_and_asinh_lifts_the_faint_wings():
    science = {s: decode(render_triplet_role_png(star_field(), "science", s))[..., 0] for s in STRETCHES}
    # ZScale is tuned to the sky: the star's core is a block of white.
    assert (science["zscale"] == 255).sum() > 16 * 9
    # Min–max and asinh reach white only at the brightest pixel (one 4×4 block at 252 px).
    assert (science["minmax"] == 255).sum() == 16
    assert (science["asinh"] == 255).sum() == 16
    # A pixel in the star's wing (3 px from the centre): asinh shows it far brighter than linear min–max.
    wing = (63 - 1 - 31) * 4 + 1, (31 + 3) * 4 + 1
    assert science["asinh"][wing] > science["minmax"][wing] + 60
    # Same order as the data under every preset: the centre is brightest.
    for look in science.values():
        assert look[(63 - 1 - 31) * 4 + 1, 31 * 4 + 1] == look.max()


def test_the_difference_keeps_its_colours_under_every_preset():
    for stretch in STRETCHES:
        rgb = decode(render_triplet_role_png(star_field(), "difference", stretch))
        centre = rgb[(63 - 1 - 31) * 4 + 1, 31 * 4 + 1]
        assert centre[0] > centre[2] + 100, stretch  # positive residual: orange


# --- the image view --------------------------------------------------------------------------------


def add_triplets(project, workflow, n, prefix):
    return [
        add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=f"{prefix}-{i}",
            array=star_field(i), metadata={}, source="synthetic",
        )[0]
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture
def world(django_user_model):
    users = {
        name: django_user_model.objects.create_user(name, password=f"pw-{name}-123456")
        for name in ("owner", "scientist", "expert", "viewer", "rival")
    }
    secret = Project.objects.create(slug="secret", name="Secret", owner=users["owner"], is_public=False)
    for role in ("scientist", "expert", "viewer"):
        ProjectMembership.objects.create(project=secret, user=users[role], role=role)
    rb = Workflow.objects.create(project=secret, slug="rb", name="Real or bogus?")
    public = Project.objects.create(slug="open", name="Open", owner=users["rival"])
    open_rb = Workflow.objects.create(project=public, slug="rb", name="Real or bogus?")
    return SimpleNamespace(
        users=users,
        secret=secret,
        rb=rb,
        subject=add_triplets(secret, rb, 2, "sec")[0],
        open_subject=add_triplets(public, open_rb, 1, "pub")[0],
    )


def client_for(world, who) -> Client:
    client = Client()
    if who != "anonymous":
        client.force_login(world.users[who])
    return client


def bare(subject, role="science") -> str:
    return reverse("core:subject_image", args=[subject.pk, role])


@pytest.mark.django_db
def test_each_allowed_stretch_is_served_as_a_png_and_differs(world):
    anonymous = Client()
    bodies = {}
    for stretch in STRETCHES:
        response = anonymous.get(bare(world.open_subject), {"stretch": stretch})
        assert response.status_code == 200, stretch
        assert response["Content-Type"] == "image/png" and response["Cache-Control"].startswith("public")
        bodies[stretch] = b"".join(response.streaming_content) if response.streaming else response.content
        assert bodies[stretch].startswith(PNG)
    assert len(set(bodies.values())) == 3
    # zscale is the stored PNG itself.
    assert bodies["zscale"] == b"".join(anonymous.get(bare(world.open_subject)).streaming_content)
    for role in ("reference", "difference"):
        assert anonymous.get(bare(world.open_subject, role), {"stretch": "asinh"}).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["linear", "", "ASINH", "asinh ", "zscale,asinh", "../x", "a" * 500])
def test_any_other_stretch_is_a_400(world, value):
    for subject in (world.open_subject, world.subject):
        response = client_for(world, "owner").get(bare(subject), {"stretch": value})
        assert response.status_code == 400
    assert Client().get(bare(world.subject), {"stretch": value}).status_code == 400


@pytest.mark.django_db
def test_a_preset_of_an_image_without_presets_is_a_400_and_a_subject_without_an_array_a_404(world):
    single, _ = add_subject(
        project=world.open_subject.project, workflow=None, subject_set=None, external_id="one",
        array=np.ones((20, 20), dtype=np.float32), metadata={}, source="synthetic",
    )  # fmt: skip
    assert set(single.images) == {"image"}
    assert Client().get(bare(single, "image")).status_code == 200
    assert Client().get(bare(single, "image"), {"stretch": "asinh"}).status_code == 400
    assert subject_image_url(single, "image", "asinh") is None

    lost = world.open_subject
    lost.data.storage.delete(lost.data.name)
    assert Client().get(bare(lost), {"stretch": "minmax"}).status_code == 404


@pytest.mark.django_db
def test_a_private_projects_presets_need_a_membership_or_a_url_signed_for_that_preset(world):
    subject = world.subject
    for who in ("owner", "scientist", "expert", "viewer"):
        response = client_for(world, who).get(bare(subject), {"stretch": "asinh"})
        assert response.status_code == 200, who
        assert response["Cache-Control"].startswith("private") and response.content.startswith(PNG)
    for who in ("rival", "anonymous"):
        assert client_for(world, who).get(bare(subject), {"stretch": "asinh"}).status_code == 404, who

    anonymous = Client()
    signed = subject_image_url(subject, "science", "asinh")
    assert "stretch=asinh" in signed
    assert anonymous.get(signed).status_code == 200
    query = parse_qs(urlsplit(signed).query)
    expires = query["e"][0]
    # The default preset's signature does not open another preset, nor one preset another.
    default = parse_qs(urlsplit(subject_image_url(subject, "science")).query)
    assert (
        anonymous.get(
            bare(subject), {"stretch": "asinh", "e": default["e"][0], "t": default["t"][0]}
        ).status_code
        == 404
    )
    assert (
        anonymous.get(bare(subject), {"stretch": "minmax", "e": expires, "t": query["t"][0]}).status_code
        == 404
    )
    # ... nor another role or subject, and it expires.
    assert (
        anonymous.get(
            bare(subject, "reference"), {"stretch": "asinh", "e": expires, "t": query["t"][0]}
        ).status_code
        == 404
    )
    past = int(time.time()) - 10
    expired = {"stretch": "asinh", "e": past, "t": _signature(subject.pk, "science", past, "asinh")}
    assert anonymous.get(bare(subject), expired).status_code == 404
    assert anonymous.get(bare(subject), {"stretch": "asinh", "e": expires, "t": "0" * 32}).status_code == 404
    # URLs signed before presets existed (no stretch in the message) still open the default image.
    assert anonymous.get(subject_image_url(subject, "science")).status_code == 200


@pytest.mark.django_db
def test_the_classify_page_gives_each_stamp_a_signed_url_per_preset(world):
    viewer = client_for(world, "viewer")
    html = viewer.get(reverse("labeling:classify", args=["secret", "rb"])).content.decode()
    assert 'id="stamp-tools"' in html and "skyvote/stamp_tools.js" in html
    roles = re.findall(r'data-role="(science|reference|difference)"', html)
    assert roles == ["science", "reference", "difference"]
    anonymous = Client()  # signed: they load without the session too
    for stretch in STRETCHES:
        urls = [u.replace("&amp;", "&") for u in re.findall(rf'data-stretch-{stretch}="([^"]+)"', html)]
        assert len(urls) == 3
        for url in urls:
            assert ("stretch=" + stretch in url) == (stretch != "zscale")
            assert anonymous.get(url).status_code == 200, url
