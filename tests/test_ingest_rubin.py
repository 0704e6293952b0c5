"""Rubin alerts, and difference images that tell the truth.

Every real alert in ../shared/data (ZTF and Rubin; Avro, Parquet and Kafka's wire format) is ingested
or named in a per-alert error; the sign of the difference as drawn matches the words beside it; stamps
are turned north up, east left from their WCS; bad stamps fail alone; the watched folder reads a file
once, whole, and applies its filters; the survey's own real/bogus score reaches scientists, never
volunteers before they answer.
"""

import copy
import io
import json
import math
import os
from pathlib import Path

import fastavro
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from PIL import Image

from core import alerts, rendering, stamps
from core.ingest import ingest_file, ingest_paths, load_subject_array, load_subject_stamps
from core.models import Subject
from core.storage import open_stored
from jobs.models import Job
from labeling.templatetags.skyvote_tags import plain_facts
from tests.browser_support import SCREENSHOTS

pytestmark = pytest.mark.django_db

V9_ALERT = "169298432618921989_169298432618921989.avro"
V10_CONTAINER = "part-2-918301.avro"
RUBIN_PARQUET = "rubin_sample_data_10_0.parquet"
REPO = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------------------------


def shared_alerts(ztf_dir: Path, rubin_dir: Path) -> dict[str, dict]:
    """external id → {"file", "survey", "alert"} for every alert in the shared folders, read straight
    from the files (not through the code under test)."""
    found = {}
    for path in sorted(ztf_dir.rglob("*.avro")):
        with open(path, "rb") as handle:
            for alert in fastavro.reader(handle):
                found[str(alert["candid"])] = {"file": path, "survey": "ztf", "alert": alert}
    for path in sorted(ztf_dir.rglob("*.parquet")):
        for alert in pq.read_table(path).to_pylist():
            found[str(alert["candid"])] = {"file": path, "survey": "ztf", "alert": alert}
    for path in sorted(rubin_dir.rglob("*.avro")):
        with open(path, "rb") as handle:
            for alert in fastavro.reader(handle):
                found[str(alert["diaSourceId"])] = {"file": path, "survey": "rubin", "alert": alert}
    for path in sorted(rubin_dir.rglob("*.parquet")):
        for alert in pq.read_table(path).to_pylist():
            found[str(alert["diaSourceId"])] = {"file": path, "survey": "rubin", "alert": alert}
    return found


def rubin_container(rubin_dir: Path, name: str = V9_ALERT) -> tuple[dict, dict]:
    """(writer schema, first alert) of a shared Rubin Avro file."""
    with open(rubin_dir / "avro" / name, "rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, next(reader)


def write_container(path: Path, schema: dict, alerts_: list[dict]) -> Path:
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), alerts_)
    return path


def rubin_stamp(
    image: np.ndarray, cards: dict | None = None, *, uncert: bool = True, psf: bool = True
) -> bytes:
    """A cutout laid out as Rubin's: PRIMARY image (nJy) with the WCS, UNCERT (a variance), PSFIMAGE."""
    primary = fits.PrimaryHDU(np.asarray(image, dtype=np.float32))
    for key, value in (cards or {}).items():
        primary.header[key] = value
    hdus = [primary]
    if uncert:
        variance = fits.ImageHDU(np.full(image.shape, 25.0, np.float32), name="UNCERT")
        variance.header["UTYPE"] = "VarianceUncertainty"
        hdus.append(variance)
    if psf:
        hdus.append(fits.ImageHDU(gaussian((21, 21), 2.0), name="PSFIMAGE"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


def gaussian(shape, sigma: float, centre=None) -> np.ndarray:
    h, w = shape
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float64)


def with_id(alert: dict, source_id: int) -> dict:
    alert = copy.deepcopy(alert)
    alert["diaSourceId"] = source_id
    alert["diaSource"]["diaSourceId"] = source_id
    return alert


def centre_flux(difference: np.ndarray, sigma: float) -> float:
    """PSF-weighted (matched-filter) flux at the stamp's centre."""
    weights = gaussian(difference.shape, sigma)
    return float(np.nansum(difference * weights) / np.nansum(weights * weights))


def psf_sigma(subject) -> float:
    """The PSF's width in pixels: Rubin's PSF model (second moment), ZTF's fwhm."""
    if subject.survey == "rubin":
        psf = load_subject_stamps(subject)["psf_difference"]
        psf = psf / psf.sum()
        yy, xx = np.mgrid[: psf.shape[0], : psf.shape[1]]
        cy, cx = (psf * yy).sum(), (psf * xx).sum()
        return float(np.sqrt((psf * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / 2))
    return max((subject.metadata.get("fwhm") or 2.0) / 2.355, 0.8)


def png_rgb(name: str) -> np.ndarray:
    with open_stored(name) as handle:
        return np.asarray(Image.open(io.BytesIO(handle.read())).convert("RGB")).astype(np.float64)


def sign_words(subject) -> str:
    facts = " ".join(plain_facts(subject))
    said = {word for word in ("brighter now", "fainter now", "dipole") if word in facts}
    assert len(said) <= 1, facts
    return said.pop() if said else ""


# --- every shared alert, through the command -----------------------------------------------------------


def test_every_shared_alert_is_ingested_or_named_and_the_command_exits_as_documented(
    project, workflow, ztf_dir, rubin_dir, tmp_path, capsys
):
    expected = shared_alerts(ztf_dir, rubin_dir)
    assert sum(a["survey"] == "rubin" for a in expected.values()) == 14 + 7 + 25

    # Both folders: all alerts go in, the last line is the summary, the exit status 0.
    call_command(
        "ingest", "--project", "ztf", "--workflow", "rb", "--no-progress", str(ztf_dir), str(rubin_dir)
    )
    out, err = capsys.readouterr()
    subjects = {s.external_id: s for s in Subject.objects.filter(project=project)}
    failed_lines = [line for line in err.splitlines() if line.startswith("FAILED ")]
    for external_id, info in expected.items():
        named = [line for line in failed_lines if external_id in line]
        assert external_id in subjects or named, (
            f"{info['file'].name}: alert {external_id} went missing silently"
        )
    assert (
        out.strip().splitlines()[-1] == f"ingested {len(subjects)}, duplicates 0, failed {len(failed_lines)}"
    )
    assert len(subjects) == len(expected) and failed_lines == []

    for external_id, subject in subjects.items():
        info = expected[external_id]
        assert subject.survey == info["survey"], external_id
        assert subject.light_curve and sum(p.get("current", False) for p in subject.light_curve) == 1
        assert [p["mjd"] for p in subject.light_curve] == sorted(p["mjd"] for p in subject.light_curve)
        assert set(subject.images) == {"science", "reference", "difference"}
        assert subject.render_version == rendering.RENDER_VERSION
        if info["survey"] == "rubin":
            alert = info["alert"]
            assert subject.schema_version == (
                "9.0" if alert["lsst_schema_version"] == "lsst.v9_0" else "10.0"
            )
            assert subject.source in ("avro", "parquet")
            h, w = load_subject_array(subject).shape[1:]
            assert 30 <= h <= 71 and h == w == subject.metadata["stamp_shape"][0]
            planes = load_subject_stamps(subject)
            assert planes["uncertainty"].shape == (3, h, w) and np.isfinite(planes["uncertainty"]).all()
            assert set(subject.metadata["wcs"]) == {"science", "reference", "difference"}
            assert "PC1_1" in subject.metadata["wcs"]["science"]
            assert subject.metadata["orientation"]["text"].endswith("to north up, east left (resampled)")
            flux = alert["diaSource"]["psfFlux"]
            assert math.isclose(subject.metadata["mag"], 31.4 - 2.5 * math.log10(abs(flux)), rel_tol=1e-6)
            assert subject.metadata["survey_score"] == pytest.approx(alert["diaSource"]["reliability"])
            n_prv = len(alert["prvDiaSources"] or []) + len(alert["prvDiaForcedSources"] or [])
            assert n_prv + 1 >= len(subject.light_curve) >= min(n_prv, 1) + 1
            assert subject.metadata["known_ss_object"] == bool(alert["diaSource"]["ssObjectId"])
        else:
            assert subject.schema_version == str(info["alert"].get("schemavsn") or "")
            assert load_subject_array(subject).shape == (3, 63, 63)
    # A light curve with 300-odd earlier detections and forced photometry, in the documented format.
    curve = subjects["170094456272322680"].light_curve
    kinds = {p["kind"] for p in curve}
    assert kinds == {"detection", "forced"} and len(curve) > 600
    current = next(p for p in curve if p.get("current"))
    assert current["flux_njy"] < 0 and current["band"] == "i" and current["mag"] > 0
    assert set(current) == {"mjd", "band", "flux_njy", "flux_err_njy", "mag", "mag_err", "kind", "current"}
    ztf_curve = subjects["1661382530015060001"].light_curve
    assert {"detection", "limit"} <= {p["kind"] for p in ztf_curve}
    limit = next(p for p in ztf_curve if p["kind"] == "limit")
    assert limit["flux_njy"] is None and limit["mag"] > 15

    # Again: everything is a duplicate, still exit status 0.
    call_command(
        "ingest", "--project", "ztf", "--workflow", "rb", "--no-progress", str(ztf_dir), str(rubin_dir)
    )
    assert (
        capsys.readouterr()[0].strip().splitlines()[-1] == f"ingested 0, duplicates {len(expected)}, failed 0"
    )

    # A file with one bad alert among good ones: the good ones go in, the bad one is a FAILED line
    # naming it, and the exit status is 1.
    schema, alert = rubin_container(rubin_dir)
    bad = with_id(alert, 1)
    bad["cutoutTemplate"] = None
    write_container(tmp_path / "mixed.avro", schema, [with_id(alert, 2), bad])
    with pytest.raises(CommandError) as caught:
        call_command(
            "ingest", "--project", "ztf", "--workflow", "rb", "--no-progress", str(tmp_path / "mixed.avro")
        )
    assert caught.value.returncode == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "ingested 1, duplicates 0, failed 1"
    assert "FAILED " in err and "alert 1 (diaSourceId 1): cutoutTemplate: missing" in err


# --- the sign of the difference as drawn ----------------------------------------------------------------


def test_the_difference_as_drawn_has_the_sign_the_words_say_on_every_shared_alert(
    project, workflow, ztf_dir, rubin_dir
):
    report = ingest_paths([ztf_dir, rubin_dir], project=project, workflow=workflow)
    assert report.failed == 0, report.errors
    seen = {"brighter now": 0, "fainter now": 0, "dipole": 0}
    for subject in Subject.objects.filter(project=project):
        words = sign_words(subject)
        assert words, (subject.external_id, plain_facts(subject))
        seen[words] += 1
        # What the palette colours: the rendered array before colour mapping...
        shown = stamps.subject_display_triplet(subject, load_subject_array(subject))[2]
        sigma = psf_sigma(subject)
        flux = centre_flux(shown, sigma)
        # ...and the PNG itself: orange (R > B) brighter, blue (B > R) fainter, weighted by the PSF.
        rgb = png_rgb(subject.images["difference"])
        weights = np.flipud(gaussian(shown.shape, sigma)).astype(np.float32)  # PNG rows run top down
        weights = np.asarray(Image.fromarray(weights).resize(rgb.shape[1::-1], Image.Resampling.NEAREST))
        colour = float(((rgb[..., 0] - rgb[..., 2]) * weights).sum() / weights.sum())
        label = f"{subject.survey} {subject.external_id}"
        if words == "dipole":
            # A dipole is both: orange and blue lobes beside each other near the centre.
            centre = shown[tuple(slice(n // 2 - 8, n // 2 + 8) for n in shown.shape)]
            noise = 1.4826 * np.nanmedian(np.abs(shown - np.nanmedian(shown)))
            assert np.nanmax(centre) > 3 * noise and np.nanmin(centre) < -3 * noise, label
        elif words == "brighter now":
            assert flux > 0 and colour > 0, (label, flux, colour)
        else:
            assert flux < 0 and colour < 0, (label, flux, colour)
    # The shared data has all three: fading ZTF and Rubin sources, brightening ones, and dipoles.
    assert min(seen.values()) >= 3, seen
    ztf_negative = Subject.objects.filter(survey="ztf", metadata__isdiffpos="f").first()
    # ZTF sends a fading source's difference multiplied by −1; stored as sent, drawn negated back.
    assert centre_flux(load_subject_array(ztf_negative)[2], 1.0) > 0


# --- Kafka's wire format -----------------------------------------------------------------------------------


def stream_record(alert: dict) -> dict:
    """A broker's copy of an alert as Rubin's stream sends it: Spark writes a missing record as a record
    of nulls, which the official schema does not allow."""
    alert = dict(alert)
    for key, value in alert.items():
        if isinstance(value, dict) and all(v is None for v in value.values()):
            alert[key] = None
    return alert


def test_confluent_wire_format_with_the_packages_schema(project, workflow, rubin_dir, tmp_path):
    _, v9 = rubin_container(rubin_dir, V9_ALERT)
    _, v10 = rubin_container(rubin_dir, V10_CONTAINER)
    message = alerts.confluent_message(stream_record(v9), 900) + alerts.confluent_message(
        stream_record(v10), 1000
    )
    assert message[:5] == b"\x00\x00\x00\x03\x84"  # magic byte, schema id 900 big-endian
    path = tmp_path / "kafka-messages.avro"
    path.write_bytes(message)
    result = ingest_file(path, project=project, workflow=workflow)
    assert (result.error, result.alert_errors, result.ingested) == ("", [], 2)
    first, second = Subject.objects.order_by("pk")
    assert (first.external_id, first.schema_version, first.source) == (str(v9["diaSourceId"]), "9.0", "kafka")
    assert (second.external_id, second.schema_version, second.survey) == (
        str(v10["diaSourceId"]),
        "10.0",
        "rubin",
    )
    assert len(second.light_curve) > 600

    unknown = tmp_path / "unknown-schema.avro"
    unknown.write_bytes(b"\x00" + (4242).to_bytes(4, "big") + message[5:])
    result = ingest_file(unknown, project=project, workflow=workflow)
    assert "not an Avro file" in result.error and "4242 (42.42) is not a Rubin alert schema" in result.error
    cut = tmp_path / "cut.avro"
    cut.write_bytes(message[: len(message) - 5000])
    result = ingest_file(cut, project=project, workflow=workflow)
    assert (
        result.ingested == 0 and result.duplicates == 1 and "breaks off after 1 alert (kept)" in result.error
    )


def test_rubin_files_through_the_upload_api(
    client, owner, project, workflow, rubin_dir, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(owner)
    _, v10 = rubin_container(rubin_dir, V10_CONTAINER)
    files = [
        SimpleUploadedFile("message.avro", alerts.confluent_message(stream_record(v10), 1000)),
        SimpleUploadedFile(V9_ALERT, (rubin_dir / "avro" / V9_ALERT).read_bytes()),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/projects/{project.slug}/uploads/", {"workflow": workflow.pk, "files": files}
        )
    assert response.status_code == 202, response.content
    job = Job.objects.get(kind=Job.INGEST)
    assert job.status == Job.SUCCEEDED and job.params["result"]["ingested"] == 2, job.params
    assert sorted(Subject.objects.values_list("schema_version", "source")) == [
        ("10.0", "kafka"),
        ("9.0", "avro"),
    ]


# --- north up, east left ---------------------------------------------------------------------------------


def rotated_cards(north: tuple[int, int], east: tuple[int, int], size: int, *, ctype: bool = False) -> dict:
    """WCS cards whose +x/+y pixel steps go `north`/`east` as given: north=(1, 0) means north is +x."""
    scale = 0.2 / 3600
    # (dE, dN) per (dx, dy): columns are the sky offsets of one pixel step in x and in y.
    step_x = (east[0], north[0])
    step_y = (east[1], north[1])
    cards = {
        "CRPIX1": (size + 1) / 2, "CRPIX2": (size + 1) / 2, "CRVAL1": 150.0, "CRVAL2": 2.0,
        "CDELT1": 1.0, "CDELT2": 1.0,
        "PC1_1": scale * step_x[0], "PC1_2": scale * step_y[0], "PC2_1": scale * step_x[1], "PC2_2": scale * step_y[1],
    }  # fmt: skip
    if ctype:
        cards.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"})
    return cards


def marked_stamp(size: int, north_pixel: tuple[int, int], east_pixel: tuple[int, int]) -> np.ndarray:
    """A faint source at the centre, a bright blob toward north and a fainter one toward east."""
    image = np.full((size, size), 10.0, np.float32)
    c = (size - 1) // 2
    image += 500 * gaussian((size, size), 1.5, (c, c)).astype(np.float32)
    image[c + north_pixel[1], c + north_pixel[0]] += 1000.0
    image[c + east_pixel[1], c + east_pixel[0]] += 400.0
    return image


def peak_offset(image: np.ndarray, value_near: float) -> tuple[int, int]:
    c = (image.shape[0] - 1) // 2
    y, x = np.unravel_index(np.nanargmin(np.abs(image - value_near)), image.shape)
    return int(x - c), int(y - c)


@pytest.mark.parametrize(
    "north, east, words",
    [
        ((1, 0), (0, 1), "rotated 90° anticlockwise to"),  # north right, east up: a quarter turn clockwise
        ((-1, 0), (0, -1), "rotated 90° clockwise to"),  # north left, east down
        ((0, -1), (1, 0), "rotated 180° to"),  # north down, east right: upside down
        ((0, 1), (-1, 0), "already north up, east left"),
        ((0, -1), (-1, 0), "flipped top to bottom to"),  # ZTF's way round
        ((0, 1), (1, 0), "flipped left to right to"),  # a mirror image of the sky
        ((1, 0), (0, -1), "flipped left to right and rotated 90°"),  # a mirror, and turned a quarter
    ],
    ids=["north-right", "north-left", "north-down", "north-up", "ztf-way", "mirror", "mirror-north-right"],
)
def test_a_stamp_with_a_rotated_wcs_comes_out_north_up_east_left(north, east, words):
    size = 31
    cards = rotated_cards(north, east, size)
    orientation = stamps.orientation_from_wcs(cards)
    assert orientation["resampled"] is False
    assert orientation["text"].startswith(words), orientation["text"]
    image = marked_stamp(size, (5 * north[0], 5 * north[1]), (4 * east[0], 4 * east[1]))
    shown = stamps.apply_orientation(image, orientation)
    c = (size - 1) // 2
    assert shown[c + 5, c] == image.max()  # north blob straight above the centre (row up = north)
    assert shown[c, c - 4] == pytest.approx(10 + 400, abs=50)  # east blob to the left
    assert sorted(shown.ravel().tolist()) == sorted(image.ravel().tolist())  # pixels moved, not resampled


def test_an_oblique_wcs_is_resampled_north_up_and_says_so():
    size, angle = 41, math.radians(30)
    scale = 0.2 / 3600
    # North 30° anticlockwise from +y (towards −x), east 90° further.
    north = (-math.sin(angle), math.cos(angle))
    east = (-math.cos(angle), -math.sin(angle))
    # (dE, dN) per pixel step: the inverse of the matrix whose columns are east's and north's pixel
    # directions.
    jacobian = np.linalg.inv(np.array([east, north]).T) * scale
    cards = {
        "CRPIX1": 21.0, "CRPIX2": 21.0, "CRVAL1": 10.0, "CRVAL2": -40.0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "PC1_1": jacobian[0, 0], "PC1_2": jacobian[0, 1], "PC2_1": jacobian[1, 0], "PC2_2": jacobian[1, 1],
    }  # fmt: skip
    orientation = stamps.orientation_from_wcs(cards)
    assert orientation["resampled"] is True and orientation["north_angle_deg"] == pytest.approx(30, abs=0.01)
    assert orientation["text"] == "rotated 30° clockwise to north up, east left (resampled)"
    image = np.zeros((size, size), np.float32)
    c = (size - 1) / 2
    image += gaussian((size, size), 1.2, (c + 8 * north[1], c + 8 * north[0])).astype(np.float32)
    shown = stamps.apply_orientation(image, orientation)
    y, x = np.unravel_index(np.nanargmax(shown), shown.shape)
    assert (x - c, y - c) == (0, 8)  # the blob toward north is now straight up
    assert np.isnan(shown[0, 0]) and np.isfinite(shown[20, 20])  # the corners outside the stamp: no data


def test_a_rubin_alert_with_a_quarter_turned_wcs_is_shown_north_up(project, workflow, rubin_dir, tmp_path):
    schema, alert = rubin_container(rubin_dir)
    size = 31
    north, east = (1, 0), (0, 1)  # north is +x, east +y: the sky turned a quarter clockwise
    cards = rotated_cards(north, east, size, ctype=True)
    image = marked_stamp(size, (5, 0), (0, 4))
    alert = with_id(alert, 77)
    alert["cutoutScience"] = rubin_stamp(image, cards)
    alert["cutoutTemplate"] = rubin_stamp(np.full((size, size), 10.0, np.float32), cards)
    alert["cutoutDifference"] = rubin_stamp(image - 10.0, cards)
    result = ingest_file(
        write_container(tmp_path / "turned.avro", schema, [alert]), project=project, workflow=workflow
    )
    assert result.ingested == 1, (result.error, result.alert_errors)
    subject = Subject.objects.get(external_id="77")
    assert subject.metadata["orientation"]["text"] == "rotated 90° anticlockwise to north up, east left"
    np.testing.assert_array_equal(load_subject_array(subject)[0], image)  # stored as delivered
    shown = stamps.subject_display_triplet(subject, load_subject_array(subject))
    c = (size - 1) // 2
    assert shown[0, c + 5, c] == image.max() and shown[0, c, c - 4] == pytest.approx(410, abs=50)
    # The uncertainty plane was a variance (UTYPE): stored as 1σ.
    assert np.allclose(load_subject_stamps(subject)["uncertainty"], 5.0)


def test_ztf_cutouts_are_flipped_top_to_bottom(project, workflow, ztf_dir):
    """ZTF images lie north down, east left: five alerts on one readout channel of one exposure say so
    (their xpos, ypos against ra, dec), and the cutouts are flipped to north up."""
    rows = [
        r["candidate"]
        for r in pq.read_table(ztf_dir / "parquet" / "fink_online_raw_20200101_part0.parquet").to_pylist()
        if r["candidate"]["pid"] == 1095578115915
    ]
    assert len(rows) == 5
    x = np.array([r["xpos"] for r in rows])
    y = np.array([r["ypos"] for r in rows])
    dec0 = np.mean([r["dec"] for r in rows])
    east = (np.array([r["ra"] for r in rows]) - np.mean([r["ra"] for r in rows])) * math.cos(
        math.radians(dec0)
    )
    north = np.array([r["dec"] for r in rows]) - dec0
    fit, *_ = np.linalg.lstsq(np.c_[x - x.mean(), y - y.mean()], np.c_[east, north], rcond=None)
    assert fit[0, 0] < 0 and fit[1, 1] < 0  # dE/dx < 0: east left; dN/dy < 0: north down
    assert abs(fit[1, 0]) < 0.01 * abs(fit[0, 0]) and abs(fit[0, 1]) < 0.01 * abs(fit[1, 1])

    ingest_paths([ztf_dir / "avro" / "472263571115095000.avro"], project=project, workflow=workflow)
    subject = Subject.objects.get()
    assert subject.metadata["orientation"]["text"].startswith("flipped top to bottom to north up, east left")
    stored = load_subject_array(subject)
    np.testing.assert_array_equal(stamps.subject_display_triplet(subject, stored)[0], np.flipud(stored[0]))


# --- bad stamps fail alone -----------------------------------------------------------------------------------


def test_missing_plane_nan_only_and_mismatched_sizes_are_per_alert_errors(
    project, workflow, rubin_dir, tmp_path
):
    schema, alert = rubin_container(rubin_dir)
    science = fits.open(io.BytesIO(alert["cutoutScience"]))
    cards = dict(science[0].header)
    image = science[0].data.astype(np.float32)
    no_template = with_id(alert, 11)
    no_template["cutoutTemplate"] = None
    nan_science = with_id(alert, 12)
    nan_science["cutoutScience"] = rubin_stamp(np.full_like(image, np.nan), cards)
    resized = with_id(alert, 13)
    resized["cutoutTemplate"] = rubin_stamp(np.ones((32, 32), np.float32), cards)
    empty_difference = with_id(alert, 14)
    empty_difference["cutoutDifference"] = b""
    no_uncert = with_id(alert, 15)  # a documented fallback: no uncertainty plane → NaN, and a note
    no_uncert["cutoutDifference"] = rubin_stamp(
        fits.getdata(io.BytesIO(alert["cutoutDifference"])), cards, uncert=False
    )
    good = with_id(alert, 10)
    path = write_container(
        tmp_path / "mixed.avro",
        schema,
        [good, no_template, nan_science, resized, empty_difference, no_uncert],
    )
    report = ingest_paths([path], project=project, workflow=workflow)
    assert (report.ingested, report.failed) == (2, 4)
    errors = [reason for _, reason in report.errors]
    assert errors == [
        "alert 1 (diaSourceId 11): cutoutTemplate: missing (the alert has no such stamp)",
        "alert 2 (diaSourceId 12): cutoutScience: all pixels are NaN (no data)",
        "alert 3 (diaSourceId 13): the three cutouts differ in size (science 30×30, reference 32×32, "
        "difference 30×30); they must share one pixel grid",
        "alert 4 (diaSourceId 14): cutoutDifference: missing (the alert has no such stamp)",
    ]
    assert sorted(Subject.objects.values_list("external_id", flat=True)) == ["10", "15"]
    fallback = Subject.objects.get(external_id="15")
    assert fallback.metadata["uncertainty_notes"] == {"difference": "no uncertainty plane"}
    planes = load_subject_stamps(fallback)["uncertainty"]
    assert np.isnan(planes[2]).all() and np.isfinite(planes[0]).all()

    # The same alerts from a broker's Parquet dump: the same per-row errors, named by row.
    import pyarrow as pa

    rows = [good, no_template, nan_science]
    table = pa.Table.from_pylist([with_id(r, r["diaSourceId"] + 100) for r in rows])
    pq.write_table(table, tmp_path / "mixed.parquet")
    result = ingest_file(tmp_path / "mixed.parquet", project=project, workflow=workflow)
    assert result.ingested == 1 and [label for label, _ in result.alert_errors] == [
        "row 1 (diaSourceId 111)",
        "row 2 (diaSourceId 112)",
    ]


# --- the live feed -------------------------------------------------------------------------------------------


def watch(folder: Path, state: Path, *filters: str) -> str:
    out = io.StringIO()
    args = [
        "ingest",
        "--project",
        "ztf",
        "--workflow",
        "rb",
        "--watch",
        str(folder),
        "--once",
        "--state",
        str(state),
    ]
    for text in filters:
        args += ["--filter", text]
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_watch_reads_a_file_written_in_two_steps_once_and_applies_its_filters(
    project, workflow, rubin_dir, tmp_path, django_capture_on_commit_callbacks
):
    folder = tmp_path / "incoming"
    folder.mkdir()
    state = tmp_path / "state.json"
    filters = ("reliability>0.5", "no-ssobject")
    raw = (rubin_dir / "avro" / V10_CONTAINER).read_bytes()
    with open(rubin_dir / "avro" / V10_CONTAINER, "rb") as handle:
        shipped = list(fastavro.reader(handle))
    keep = {
        str(a["diaSourceId"])
        for a in shipped
        if a["diaSource"]["reliability"] > 0.5 and not a["diaSource"]["ssObjectId"]
    }
    assert 0 < len(keep) < len(shipped)

    target = folder / "alerts.avro"
    with open(target, "wb") as handle:  # the first half: a writer still at work
        handle.write(raw[: len(raw) // 2])
    (folder / "other.avro.part").write_bytes(raw)  # a name that says "not finished"
    assert watch(folder, state, *filters) == "0 file(s) ready (1 still being written or new)"
    with open(target, "ab") as handle:
        handle.write(raw[len(raw) // 2 :])
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    assert watch(folder, state, *filters) == "0 file(s) ready (1 still being written or new)"  # it changed
    assert Subject.objects.count() == 0
    summary = f"1 file(s): ingested {len(keep)}, duplicates 0, failed 0, filtered {len(shipped) - len(keep)}"
    assert watch(folder, state, *filters) == summary  # unchanged since the last poll: read, whole
    assert set(Subject.objects.values_list("external_id", flat=True)) == keep
    assert watch(folder, state, *filters) == "0 file(s) ready"  # once only
    done = json.loads(state.read_text())["done"]
    assert list(done) == ["alerts.avro"] and done["alerts.avro"]["ingested"] == len(keep)

    # The same folder as a periodic job (settings.SKYVOTE_WATCH_FOLDERS, Celery beat): the first look
    # notes the new file, the next queues an ingest job for it, which runs (eagerly here).
    (folder / "other.avro.part").rename(folder / "other.avro")
    from django.test import override_settings

    from core import watch as watch_module

    entry = {
        "folder": str(folder),
        "project": "ztf",
        "workflow": "rb",
        "filters": ["no-ssobject"],
        "state": str(state),
    }
    with override_settings(SKYVOTE_WATCH_FOLDERS=[entry]), django_capture_on_commit_callbacks(execute=True):
        assert watch_module.watch_folders() == 0
        assert watch_module.watch_folders() == 1
    assert watch_module.watch_folders() == 0
    job = Job.objects.get(kind=Job.INGEST)
    assert job.status == Job.SUCCEEDED and job.params["watch"]["folder"] == str(folder)
    result = job.params["result"]
    no_sso = sum(1 for a in shipped if not a["diaSource"]["ssObjectId"])
    assert (result["ingested"], result["duplicates"]) == (no_sso - len(keep), len(keep))
    assert result["filtered"] == len(shipped) - no_sso


def test_bad_filters_are_refused_before_anything_is_read(project, workflow, tmp_path):
    with pytest.raises(CommandError, match="cannot read the filter"):
        call_command(
            "ingest", "--project", "ztf", "--workflow", "rb", "--watch", str(tmp_path), "--filter", "rel~~"
        )
    with pytest.raises(CommandError, match="only numbers take > or <"):
        call_command("ingest", "--project", "ztf", "--workflow", "rb", str(tmp_path), "--filter", "band>r")
    parsed = alerts.parse_filters(["reliability>0.5", "band=i", "no-ssobject", "no-dipole"])
    meta = {"reliability": 0.9, "band": "i", "known_ss_object": False, "is_dipole": None}
    assert all(f.accepts(meta) for f in parsed)
    assert not parsed[0].accepts({"band": "i"})  # a field the alert lacks never passes


# --- who sees the survey's own score ---------------------------------------------------------------------


def test_volunteers_never_see_the_survey_score_scientists_do(
    client, owner, project, workflow, rubin_dir, ztf_dir
):
    ingest_paths([rubin_dir / "avro" / V9_ALERT, ztf_dir / "avro" / "1661382530015060001.avro"],
                 project=project, workflow=workflow)  # fmt: skip
    rubin = Subject.objects.get(survey="rubin")
    ztf = Subject.objects.get(survey="ztf")
    score_texts = {
        f"{rubin.metadata['reliability']:.3f}", str(rubin.metadata["reliability"]),
        f"{ztf.metadata['drb']:.3f}", f"{ztf.metadata['rb']:.3f}",
    }  # fmt: skip
    for subject in (rubin, ztf):
        Subject.objects.exclude(pk=subject.pk).update(status=Subject.RETIRED)
        Subject.objects.filter(pk=subject.pk).update(status=Subject.ACTIVE)
        page = client.get(reverse("labeling:classify", args=[project.slug, workflow.slug])).content.decode()
        assert f'data-subject="{subject.pk}"' in page
        assert "Brightness: magnitude" in page and "now than in the reference" in page
        lowered = page.lower()
        assert "reliability" not in lowered and "drb" not in lowered and "real/bogus score" not in lowered
        assert not any(text in page for text in score_texts)
        served = client.get(f"/api/projects/{project.slug}/workflows/{workflow.pk}/next/").json()
        assert served["subject"] == subject.pk
        body = json.dumps(served)
        assert "reliability" not in body and "metadata" not in body and "drb" not in body
    client.force_login(owner)
    for subject, name in ((rubin, "reliability"), (ztf, "drb")):
        page = client.get(
            reverse("loop:subject", args=[project.slug, workflow.slug, subject.pk])
        ).content.decode()
        assert f"real/bogus score, {name}" in page and f"{subject.metadata['survey_score']:.3f}" in page
    api = client.get(f"/api/projects/{project.slug}/subjects/{rubin.pk}/").json()
    assert api["survey"] == "rubin" and api["metadata"]["reliability"] == rubin.metadata["reliability"]


def test_plain_words_for_a_known_asteroid_and_a_dipole(project, workflow, rubin_dir):
    ingest_paths([rubin_dir / "parquet" / RUBIN_PARQUET], project=project, workflow=workflow)
    asteroid = Subject.objects.get(external_id="169813007065939974")
    assert any("known asteroid" in fact for fact in plain_facts(asteroid))
    assert asteroid.object_id.startswith("ss")
    dipole = Subject.objects.get(external_id="169813007065940115")
    facts = " ".join(plain_facts(dipole))
    assert "dipole" in facts and "brighter now" not in facts and "fainter now" not in facts
    assert any(fact.startswith("Signal-to-noise: 28") for fact in plain_facts(dipole))


# --- re-rendering old subjects -------------------------------------------------------------------------------


def test_rerender_brings_old_ztf_subjects_to_the_current_look(project, workflow, ztf_dir):
    ingest_paths([ztf_dir / "avro" / "1661382530015060001.avro"], project=project, workflow=workflow)
    subject = Subject.objects.get()
    assert subject.metadata["isdiffpos"] == "f"
    # As a subject ingested before: no orientation in its metadata, PNGs of version 2.
    meta = {k: v for k, v in subject.metadata.items() if k not in ("orientation", "difference_sign")}
    Subject.objects.filter(pk=subject.pk).update(metadata=meta, render_version=rendering.RENDER_VERSION - 1)
    out = io.StringIO()
    call_command("rerender", "--batch-size", "1", stdout=out, stderr=io.StringIO())
    assert out.getvalue().strip() == "rerendered 1, failed 0"
    subject.refresh_from_db()
    assert subject.render_version == rendering.RENDER_VERSION
    assert subject.metadata["orientation"]["text"].startswith("flipped top to bottom")
    rgb = png_rgb(subject.images["difference"])
    centre = rgb[rgb.shape[0] // 2 - 4 : rgb.shape[0] // 2 + 4, rgb.shape[1] // 2 - 4 : rgb.shape[1] // 2 + 4]
    assert centre[..., 2].mean() > centre[..., 0].mean()  # blue: fainter now, as the words say
    out = io.StringIO()
    call_command("rerender", stdout=out, stderr=io.StringIO())
    assert out.getvalue().strip() == "rerendered 0, failed 0"  # nothing below the current version


# --- what a volunteer sees, in Chromium -------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_classify_page_shows_ztf_and_rubin_alerts_the_right_way_round(
    page, live_server, project, workflow, ztf_dir, rubin_dir
):
    report = ingest_paths(
        [
            ztf_dir / "avro" / "472263571115095000.avro",  # ZTF, brighter now
            ztf_dir / "avro" / "1661382530015060001.avro",  # ZTF, fainter now
            rubin_dir / "avro" / V9_ALERT,  # Rubin, 0.2″ pixels, turned 28° to north up
            rubin_dir / "avro" / V10_CONTAINER,  # Rubin, 7 alerts, most with 300-odd earlier detections
        ],
        project=project,
        workflow=workflow,
    )
    assert report.ingested == 3 + 7, report.errors
    names = {
        "472263571115095000": "classify-ztf-positive.png",
        "1661382530015060001": "classify-ztf-negative.png",
        V9_ALERT.split("_")[0]: "classify-rubin.png",
    }
    by_pk = {str(s.pk): s for s in Subject.objects.all()}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{live_server.url}/p/{project.slug}/{workflow.slug}/")
    page.click("#tutorial-close")
    shot, rubin_light_curves = [], 0
    for done in range(len(by_pk)):
        # Science, reference and difference (and whatever else the page shows beside them).
        page.wait_for_function("() => document.querySelectorAll('.triplet img').length >= 3")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.triplet img')).every(i => i.complete && i.naturalWidth > 0)"
        )
        subject = by_pk[page.get_attribute(".triplet", "data-subject")]
        facts = page.inner_text("ul.facts")
        if subject.metadata.get("is_dipole"):  # a dipole is both: the text says so instead of a sign
            assert "brighter (orange) on one side and fainter (blue)" in facts, facts
        else:
            assert ("brighter now" in facts) == (subject.metadata["difference_sign"] == "positive"), facts
        assert "reliability" not in page.content().lower()
        # The light curve is drawn beside the stamps whenever there are earlier points.
        history = [p for p in subject.light_curve if not p.get("current")]
        assert page.locator("figure.light-curve img").count() == (1 if history else 0), subject.external_id
        if subject.external_id in names:
            page.screenshot(path=SCREENSHOTS / names[subject.external_id], full_page=True)
            shot.append(subject.external_id)
        elif history and subject.survey == "rubin" and not rubin_light_curves:
            rubin_light_curves += 1
            page.screenshot(path=SCREENSHOTS / "classify-rubin-light-curve.png", full_page=True)
        page.keyboard.press("r")
        page.wait_for_function(
            f"() => document.getElementById('counter').textContent.trim() === '{done + 1}'"
        )
    assert sorted(shot) == sorted(names) and rubin_light_curves == 1
    assert all((SCREENSHOTS / name).stat().st_size > 10_000 for name in names.values())
