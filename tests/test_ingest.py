"""Ingestion: real ZTF alerts, Parquet, FITS, NumPy, images, bad files, the command."""

import gzip
import io
import os
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from core import ingest
from core.ingest import add_subject, ingest_file, ingest_paths, load_subject_array
from core.models import Project, Subject, SubjectSet, Workflow

ZTF_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ztf"
TRUNCATED = "396522680015040001.avro"
JPEG_ALERT = "87704463155000.avro"
PARQUET = "fink_online_raw_20200101_part0.parquet"


def need_ztf_data():
    if not ZTF_DIR.is_dir():
        message = f"ZTF sample data not found at {ZTF_DIR}"
        if os.environ.get("CI"):
            pytest.fail(message + " (required when CI is set)")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def project(db):
    owner = get_user_model().objects.create_user("owner", password="pw-owner-123")
    return Project.objects.create(slug="ztf", name="ZTF", owner=owner)


@pytest.fixture
def workflow(project):
    return Workflow.objects.create(project=project, slug="rb", name="Real or bogus", kind=Workflow.REAL_BOGUS)


@pytest.fixture
def similarity(project):
    return Workflow.objects.create(project=project, slug="sim", name="Similar", kind=Workflow.SIMILARITY)


def stored_files(media) -> list[Path]:
    return sorted(p for p in Path(media).rglob("*") if p.is_file()) if Path(media).exists() else []


def triplet(seed=0, shape=(63, 63)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 5, size=(3, *shape)).astype(np.float32)


# --- the public API -----------------------------------------------------------------------------


def test_add_subject_stores_float32_npy_with_nans_and_pngs(project, workflow, media):
    array = triplet()
    array[1, 5, 7] = np.nan
    subject, created = add_subject(
        project=project, workflow=workflow, subject_set=None, external_id="c1",
        array=array.astype(np.float64), metadata={"rb": float("nan"), "ra": np.float32(1.5)}, source="synthetic",
        truth_label="real", truth_subtype="sn",
    )  # fmt: skip
    assert created
    subject.refresh_from_db()
    loaded = load_subject_array(subject)
    assert loaded.dtype == np.float32 and loaded.shape == (3, 63, 63)
    assert np.isnan(loaded[1, 5, 7])
    np.testing.assert_array_equal(np.nan_to_num(loaded), np.nan_to_num(array))
    assert set(subject.images) == {"science", "reference", "difference"}
    for name in subject.images.values():
        assert (Path(media) / name).is_file()
    assert subject.metadata == {"rb": None, "ra": 1.5}
    assert 0.0 <= subject.random_key < 1.0 and subject.truth_label == "real"


def test_add_subject_duplicate_writes_nothing(project, workflow, media):
    first, created = add_subject(
        project=project, workflow=workflow, subject_set=None, external_id="dup", array=triplet(), metadata={},
        source="npy",
    )  # fmt: skip
    before = stored_files(media)
    again, created_again = add_subject(
        project=project, workflow=workflow, subject_set=None, external_id="dup", array=triplet(1), metadata={},
        source="npy",
    )  # fmt: skip
    assert created and not created_again and again.pk == first.pk
    assert stored_files(media) == before
    assert Subject.objects.count() == 1


def test_add_subject_rejects_single_image_in_real_bogus_workflow(project, workflow, media):
    with pytest.raises(ingest.IngestError, match="needs .*triplets"):
        add_subject(
            project=project, workflow=workflow, subject_set=None, external_id="x",
            array=np.ones((63, 63)), metadata={}, source="image",
        )  # fmt: skip
    assert Subject.objects.count() == 0 and stored_files(media) == []


# --- real ZTF data ----------------------------------------------------------------------------------


def expected_alerts() -> dict[str, str]:
    """candid → objectId (or '') read straight from the sample files."""
    import pyarrow.parquet as pq

    expected = {}
    for path in sorted((ZTF_DIR / "avro").glob("*.avro")):
        with open(path, "rb") as handle:
            for alert in fastavro.reader(handle):
                expected[str(alert["candid"])] = alert.get("objectId") or ""
    for row in pq.read_table(ZTF_DIR / "parquet" / PARQUET, columns=["candid", "objectId"]).to_pylist():
        expected[str(row["candid"])] = row["objectId"]
    return expected


def test_every_sample_file_ingests_and_reingest_is_duplicates(project, workflow, media):
    need_ztf_data()
    expected = expected_alerts()
    report = ingest_paths([ZTF_DIR], project=project, workflow=workflow)
    assert report.errors == []
    assert (report.ingested, report.duplicates, report.failed) == (len(expected), 0, 0)
    assert report.summary() == f"ingested {len(expected)}, duplicates 0, failed 0"
    subjects = {s.external_id: s for s in Subject.objects.filter(project=project)}
    assert set(subjects) == set(expected)
    for candid, subject in subjects.items():
        assert subject.object_id == expected[candid]
        assert subject.workflow_id == workflow.pk
        assert load_subject_array(subject).shape == (3, 63, 63)
        assert set(subject.images) == {"science", "reference", "difference"}
        assert all((Path(media) / name).is_file() for name in subject.images.values())
        for key in ("ra", "dec", "magpsf", "isdiffpos", "rb", "jd", "fid"):
            assert key in subject.metadata, (candid, key)
    assert "drb" in subjects["1661382530015060001"].metadata
    files_before = stored_files(media)

    again = ingest_paths([ZTF_DIR], project=project, workflow=workflow)
    assert (again.ingested, again.duplicates, again.failed) == (0, len(expected), 0)
    assert Subject.objects.count() == len(expected)
    assert stored_files(media) == files_before


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_truncated_cutout_is_padded_on_the_ccd_edge_side(project, workflow):
    need_ztf_data()
    path = ZTF_DIR / "avro" / TRUNCATED
    with open(path, "rb") as handle:
        alert = next(fastavro.reader(handle))
    science = fits.getdata(io.BytesIO(gzip.decompress(alert["cutoutScience"]["stampData"]))).astype(
        np.float32
    )
    assert science.shape == (41, 63)
    assert alert["candidate"]["ypos"] < 31  # near the bottom edge of the CCD: low rows are missing

    result = ingest_file(path, project=project, workflow=workflow)
    assert result.error == "" and result.ingested == 1
    array = load_subject_array(Subject.objects.get(external_id=str(alert["candid"])))
    assert array.shape == (3, 63, 63)
    assert np.isnan(array[:, :22, :]).all()
    np.testing.assert_array_equal(array[0, 22:, :], science)
    meta = Subject.objects.get().metadata
    assert meta["padding"]["science"] == {
        "original_shape": [41, 63], "rows_before": 22, "rows_after": 0, "cols_before": 0, "cols_after": 0,
    }  # fmt: skip


def test_jpeg_alert_of_2016_is_ingested_as_float_triplet(project, workflow):
    need_ztf_data()
    path = ZTF_DIR / "avro" / JPEG_ALERT
    with open(path, "rb") as handle:
        alert = next(fastavro.reader(handle))
    result = ingest_file(path, project=project, workflow=workflow)
    assert result.error == "" and result.ingested == 1
    subject = Subject.objects.get()
    assert subject.external_id == str(alert["candid"])
    assert subject.object_id == ""  # 2016 alerts carry alertId, not objectId
    assert subject.metadata["alertId"] == alert["alertId"]
    assert subject.metadata["cutout_format"] == "jpeg"
    array = load_subject_array(subject)
    assert array.shape == (3, 63, 63)
    jpeg = np.asarray(Image.open(io.BytesIO(alert["cutoutScience"]["stampData"])).convert("F"))
    # 51×51 JPEG centred in 63×63 and flipped to FITS row order.
    np.testing.assert_allclose(array[0, 6:57, 6:57], np.flipud(jpeg))
    assert np.isnan(array[0, :6]).all()


def test_parquet_file_gives_nine_subjects(project, workflow):
    need_ztf_data()
    result = ingest_file(ZTF_DIR / "parquet" / PARQUET, project=project, workflow=workflow)
    assert result.error == ""
    assert result.ingested == 9 and Subject.objects.filter(source="parquet").count() == 9
    subject = Subject.objects.filter(source="parquet").first()
    assert subject.object_id.startswith("ZTF") and subject.metadata["schemavsn"] == "3.3"


# --- bad files -----------------------------------------------------------------------------------


def write_alert_avro(path: Path, stamps: dict | None = None, schema_name="alert"):
    """A minimal ZTF-like alert; stamps override cutout bytes."""
    planes = triplet(7)
    stamps = stamps or {}
    schema = {
        "type": "record", "name": schema_name, "namespace": "ztf",
        "fields": [
            {"name": "objectId", "type": "string"},
            {"name": "candid", "type": "long"},
            {"name": "candidate", "type": {"type": "record", "name": "candidate", "fields": [
                {"name": "ra", "type": "double"}, {"name": "dec", "type": "double"},
                {"name": "xpos", "type": "float"}, {"name": "ypos", "type": "float"},
            ]}},
        ] + [
            {"name": f, "type": {"type": "record", "name": f, "fields": [
                {"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}]}}
            for f in ingest.CUTOUT_FIELDS
        ],
    }  # fmt: skip
    record = {
        "objectId": "ZTF99test",
        "candid": 123,
        "candidate": {"ra": 1.0, "dec": 2.0, "xpos": 500.0, "ypos": 500.0},
    }
    for field_name, plane in zip(ingest.CUTOUT_FIELDS, planes, strict=True):
        buffer = io.BytesIO()
        fits.PrimaryHDU(plane).writeto(buffer)
        data = stamps.get(field_name, gzip.compress(buffer.getvalue()))
        record[field_name] = {"fileName": f"{field_name}.fits.gz", "stampData": data}
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), [record])
    return path


def make_bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    bad = {}
    empty = tmp / "empty.avro"
    empty.write_bytes(b"")
    bad["empty"] = (empty, "empty file")
    corrupt = tmp / "corrupt.fits.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    bad["corrupt gzip"] = (corrupt, "corrupt gzip")
    notfits = tmp / "notfits.fits"
    notfits.write_text("hello, I am not a FITS file\n" * 10)
    bad["not FITS"] = (notfits, "not a FITS file")
    nan = tmp / "nan.npy"
    np.save(nan, np.full((2, 63, 63, 3), np.nan, dtype=np.float32))
    bad["all NaN"] = (nan, "all pixels are NaN")
    shape = tmp / "shape.npy"
    np.save(shape, np.zeros((2, 10, 10), dtype=np.float32))
    bad["wrong shape"] = (shape, "wrong shape")
    bomb = write_alert_avro(
        tmp / "bomb.avro",
        {
            "cutoutDifference": gzip.compress(
                bytes(ingest.MAX_CUTOUT_DECOMPRESSED_BYTES + 1024), compresslevel=1
            )
        },
    )
    bad["gzip bomb"] = (bomb, "decompression bomb")
    png_bomb = tmp / "huge.png"
    Image.new("1", (5000, 5000)).save(png_bomb)  # 25 Mpx, a few kB on disk
    bad["pixel bomb"] = (png_bomb, "over the limit")
    unknown = tmp / "unknown.avro"
    with open(unknown, "wb") as handle:
        schema = {"type": "record", "name": "weather", "fields": [{"name": "t", "type": "double"}]}
        fastavro.writer(handle, fastavro.parse_schema(schema), [{"t": 1.0}])
    bad["unknown schema"] = (unknown, "unknown Avro schema 'weather'")
    garbage = tmp / "garbage.avro"
    garbage.write_bytes(os.urandom(300))
    bad["not avro"] = (garbage, "not an Avro file")
    bad_parquet = tmp / "bad.parquet"
    bad_parquet.write_bytes(b"PAR1" + os.urandom(100))
    bad["not parquet"] = (bad_parquet, "not a Parquet file")
    txt = tmp / "notes.txt"
    txt.write_text("x")
    bad["unsupported"] = (txt, "unsupported file type")
    return bad


def test_every_kind_of_bad_file_fails_with_a_clear_reason_and_the_run_goes_on(
    project, workflow, similarity, tmp_path, media
):
    bad = make_bad_files(tmp_path)
    good = tmp_path / "good.npy"
    np.save(good, np.stack([triplet(1), triplet(2)]))
    paths = [p for p, _ in bad.values()] + [good]
    wf_for = {"pixel bomb": similarity}
    report = ingest_paths(paths, project=project, workflow=workflow)
    errors = dict(report.errors)
    for kind, (path, reason) in bad.items():
        if kind in wf_for:
            continue
        assert reason in errors[str(path)], (kind, errors.get(str(path)))
    assert report.ingested == 2
    assert report.failed == len(bad) - len(wf_for) + 1  # the PNG is refused by the real/bogus workflow
    assert "cannot be a science/reference/difference triplet" in errors[str(bad["pixel bomb"][0])]
    assert report.summary() == f"ingested 2, duplicates 0, failed {report.failed}"
    # The pixel bomb, tried in a workflow that accepts images:
    result = ingest_file(bad["pixel bomb"][0], project=project, workflow=similarity)
    assert "over the limit" in result.error
    assert Subject.objects.count() == 2
    assert len(stored_files(media)) == 2 * 4  # two .npy + three PNGs each


def test_fits_gzip_bomb_is_capped(project, workflow, tmp_path, settings):
    # Lower the cap so the test stays small; the same code path guards the 256 MiB default.
    settings.SKYVOTE_MAX_DECOMPRESSED_BYTES = 1024 * 1024
    bomb = tmp_path / "bomb_sci.fits.gz"
    bomb.write_bytes(gzip.compress(b"SIMPLE  =" + bytes(4 * 1024 * 1024)))
    result = ingest_file(bomb, project=project, workflow=workflow)
    assert "decompression bomb" in result.error


def test_a_file_is_atomic_one_bad_array_keeps_nothing(project, workflow, tmp_path, media):
    stack = np.stack([triplet(1), triplet(2), np.full((3, 63, 63), np.nan, np.float32)])
    path = tmp_path / "mixed.npz"
    np.savez(path, images=stack)
    result = ingest_file(path, project=project, workflow=workflow)
    assert result.error.startswith("array 2: all pixels are NaN")
    assert Subject.objects.count() == 0
    assert stored_files(media) == []  # the first two subjects' files were deleted on rollback


# --- FITS, NumPy and images --------------------------------------------------------------------------


def write_fits(path: Path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


@pytest.mark.parametrize(
    "names",
    [
        ("cand1_sci.fits", "cand1_ref.fits", "cand1_diff.fits"),
        ("cand1-science.fits.gz", "cand1-template.fits.gz", "cand1-difference.fits.gz"),
    ],
)
def test_fits_triplet_of_three_files(project, workflow, tmp_path, names):
    planes = triplet(3)
    for name, plane in zip(names, planes, strict=True):
        path = tmp_path / name
        if name.endswith(".gz"):
            buffer = io.BytesIO()
            fits.PrimaryHDU(plane).writeto(buffer)
            path.write_bytes(gzip.compress(buffer.getvalue()))
        else:
            write_fits(path, plane)
    report = ingest_paths([tmp_path], project=project, workflow=workflow)
    assert (report.ingested, report.failed) == (1, 0), report.errors
    subject = Subject.objects.get()
    assert subject.external_id == "cand1" and subject.source == "fits"
    np.testing.assert_array_equal(load_subject_array(subject), planes)


def test_fits_single_file_with_three_hdus_or_a_cube(project, workflow, tmp_path):
    planes = triplet(4)
    hdus = fits.HDUList(
        [fits.PrimaryHDU()]
        + [fits.ImageHDU(p, name=n) for p, n in zip(planes, ("SCI", "REF", "DIFF"), strict=True)]
    )
    hdus.writeto(tmp_path / "three_hdus.fits")
    write_fits(tmp_path / "cube.fits", triplet(5))
    report = ingest_paths(
        [tmp_path / "three_hdus.fits", tmp_path / "cube.fits"], project=project, workflow=workflow
    )
    assert (report.ingested, report.failed) == (2, 0), report.errors
    np.testing.assert_array_equal(load_subject_array(Subject.objects.get(external_id="three_hdus")), planes)
    np.testing.assert_array_equal(load_subject_array(Subject.objects.get(external_id="cube")), triplet(5))


def test_fits_incomplete_triplet_and_lone_image_are_reported(project, workflow, similarity, tmp_path):
    write_fits(tmp_path / "a_sci.fits", triplet()[0])
    write_fits(tmp_path / "a_ref.fits", triplet()[1])
    write_fits(tmp_path / "lone.fits", triplet()[0])
    report = ingest_paths([tmp_path], project=project, workflow=workflow)
    assert report.failed == 2 and report.ingested == 0
    reasons = " | ".join(reason for _, reason in report.errors)
    assert "incomplete FITS triplet" in reasons and "missing difference" in reasons
    assert "one 2-D image is not a triplet" in reasons
    # A similarity workflow takes the lone image as a single-image subject.
    result = ingest_file(tmp_path / "lone.fits", project=project, workflow=similarity)
    assert result.error == "" and load_subject_array(Subject.objects.get()).shape == (63, 63)


def test_npy_both_layouts_and_npz_with_ids(project, workflow, tmp_path):
    stack = np.stack([triplet(i) for i in range(3)])  # (N, 3, 63, 63)
    np.save(tmp_path / "channels_first.npy", stack)
    np.save(tmp_path / "channels_last.npy", np.moveaxis(stack, 1, 3) + 1)  # (N, 63, 63, 3)
    np.savez(
        tmp_path / "named.npz", images=stack + 2, ids=np.array(["a", "b", "c"]), labels=np.array([1, 0, 1])
    )
    report = ingest_paths([tmp_path], project=project, workflow=workflow)
    assert (report.ingested, report.failed) == (9, 0), report.errors
    np.testing.assert_array_equal(
        load_subject_array(Subject.objects.get(external_id="channels_first.npy:1")), stack[1]
    )
    np.testing.assert_array_equal(
        load_subject_array(Subject.objects.get(external_id="channels_last.npy:2")), stack[2] + 1
    )
    b = Subject.objects.get(external_id="b")
    np.testing.assert_array_equal(load_subject_array(b), stack[1] + 2)
    assert b.truth_label == "bogus" and Subject.objects.get(external_id="a").truth_label == "real"


def test_png_and_jpeg_images(project, workflow, similarity, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.jpg", quality=95)
    report = ingest_paths([tmp_path], project=project, workflow=similarity)
    assert (report.ingested, report.failed) == (2, 0), report.errors
    colour = Subject.objects.get(external_id="colour.png")
    assert colour.source == "image" and set(colour.images) == {"image"}
    np.testing.assert_array_equal(load_subject_array(colour), np.flipud(rgb).astype(np.float32))
    assert load_subject_array(Subject.objects.get(external_id="grey.jpg")).shape == (40, 50)
    refused = ingest_file(tmp_path / "colour.png", project=project, workflow=workflow)
    assert "cannot be a science/reference/difference triplet" in refused.error


# --- the management command ------------------------------------------------------------------------


def test_command_summary_and_exit_status(project, workflow, tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.stack([triplet(1), triplet(2)]))
    call_command("ingest", "--project", "ztf", "--workflow", "rb", "--subject-set", "batch 1", str(good))
    out, _ = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "ingested 2, duplicates 0, failed 0"
    assert SubjectSet.objects.get(name="batch 1").subjects.count() == 2

    broken = tmp_path / "broken.fits"
    broken.write_text("nope")
    with pytest.raises(CommandError) as caught:
        # Duplicates are told per subject set: the same set again.
        call_command(
            "ingest", "--project", "ztf", "--workflow", "rb", "--subject-set", "batch 1", "--no-progress",
            str(good), str(broken),
        )  # fmt: skip
    assert caught.value.returncode == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "ingested 0, duplicates 2, failed 1"
    assert f"FAILED {broken}: not a FITS file" in err


def test_command_exit_status_from_argv(project, workflow, tmp_path, capsys, monkeypatch):
    from django.core.management import base

    from core.management.commands.ingest import Command

    # run_from_argv closes every database connection when it returns, as the real command line
    # should; inside a test that would close the test's own transaction (PostgreSQL).
    monkeypatch.setattr(base.connections, "close_all", lambda: None)

    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SystemExit) as caught:
        Command().run_from_argv(["manage.py", "ingest", "--project", "ztf", "--workflow", "rb", str(broken)])
    assert caught.value.code == 1
    good = tmp_path / "ok.npy"
    np.save(good, triplet()[None])
    Command().run_from_argv(["manage.py", "ingest", "--project", "ztf", "--workflow", "rb", str(good)])
    assert capsys.readouterr().out.strip().endswith("ingested 1, duplicates 0, failed 0")


def test_command_unknown_workflow_is_a_clear_error(project, workflow):
    with pytest.raises(CommandError, match="has no workflow 'nope'"):
        call_command("ingest", "--project", "ztf", "--workflow", "nope", "x.npy")
