"""The light-curve export (one row per point: labeling.exporters) in CSV, Parquet and FITS, through the
registry and the export job, and the light_curves table of the training bundle (loop.exporters)."""

import csv
import hashlib
import io
import json
import math
import zipfile

import numpy as np
import pytest

from core import exporters
from core.models import Subject, Workflow
from jobs.services import run_job
from labeling.exporters import LIGHT_CURVE_COLUMNS, export_light_curves
from labeling.labels import training_labels
from loop.exporters import export_bundle, verify_bundle
from mlcore.synth import generate_triplets
from mlcore.synth_rubin import generate_rubin, ztf_light_curves
from tests.exports_support import add_subjects, populate

pytestmark = pytest.mark.django_db

NAMES = [c.name for c in LIGHT_CURVE_COLUMNS]


def _with_curves(subjects, seed=0, rubin_every=2):
    """Synthetic ZTF light curves for the subjects, a Rubin one (forced photometry, ugrizy) for every
    `rubin_every`-th, and none for the last (it must simply have no rows)."""
    batch = generate_triplets(len(subjects), seed=seed)
    ztf = ztf_light_curves(batch.metadata, batch.subtypes, seed=seed)
    rubin = generate_rubin(len(subjects), seed=seed).light_curves
    expected = {}
    for i, subject in enumerate(subjects):
        if i == len(subjects) - 1:
            curve, survey = [], ""
        elif i % rubin_every:
            curve, survey = rubin[i], Subject.RUBIN
        else:
            curve, survey = ztf[i], Subject.ZTF
        Subject.objects.filter(pk=subject.pk).update(light_curve=curve, survey=survey)
        expected[subject.pk] = sorted(curve, key=lambda p: (p["mjd"], bool(p.get("current"))))
    return expected


def _rows_from_expected(expected, subjects, workflow):
    by_pk = {s.pk: s for s in subjects}
    rows = []
    for pk in sorted(expected):
        subject = Subject.objects.get(pk=pk)
        for p in expected[pk]:
            rows.append(
                {
                    "subject_id": pk,
                    "external_id": by_pk[pk].external_id,
                    "object_id": subject.object_id or None,
                    "survey": subject.survey or None,
                    "workflow": workflow.slug,
                    "mjd": p["mjd"],
                    "band": p["band"],
                    "flux": p["flux_njy"],
                    "flux_err": p["flux_err_njy"],
                    "mag": p["mag"],
                    "mag_err": p["mag_err"],
                    "kind": p["kind"],
                    "current": bool(p.get("current", False)),
                }
            )
    return rows


def _same(value, expected):
    if expected is None:
        return value is None or value == "" or (isinstance(value, float) and math.isnan(value))
    if isinstance(expected, bool):
        return value in (expected, "true" if expected else "false")
    if isinstance(expected, float):
        return float(value) == pytest.approx(expected, rel=1e-12, abs=1e-9)
    if isinstance(expected, int):
        return int(value) == expected
    return str(value).strip() == str(expected)


@pytest.fixture
def curves(project, workflow):
    subjects = add_subjects(project, workflow, 5, seed=3)
    return subjects, _with_curves(subjects, seed=3)


def _read(fmt: str, path):
    if fmt == "csv":
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        assert table.schema.field("flux").metadata[b"unit"] == b"nJy"
        assert json.loads(table.schema.metadata[b"skyvote"])["kind"] == "light_curves"
        return table.to_pylist()
    from astropy.table import Table

    table = Table.read(path, hdu="LIGHTCURVES")
    assert str(table["mjd"].unit) == "d" and str(table["flux"].unit) == "nJy"
    out = []
    for row in table:
        item = {}
        for name in NAMES:
            value = row[name]
            if np.ma.is_masked(value):  # astropy masks the NaN of a missing float
                item[name] = None
                continue
            if isinstance(value, bytes | np.bytes_):
                value = value.decode()
            if hasattr(value, "item"):
                value = value.item()
            if name == "subject_id":
                value = int(value)
            if name == "current":
                value = bool(value)
            item[name] = value
        out.append(item)
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_the_light_curve_table_round_trips(curves, project, workflow, tmp_path, fmt):
    subjects, expected = curves
    path = tmp_path / f"lc.{fmt}"
    info = export_light_curves(project, path, fmt)
    want = _rows_from_expected(expected, subjects, workflow)
    got = _read(fmt, path)
    assert info["rows"] == len(got) == len(want) == sum(len(c) for c in expected.values()) > 0
    assert list(got[0]) == NAMES
    for row, exp in zip(got, want, strict=True):
        for name in NAMES:
            assert _same(row[name], exp[name]), (name, row[name], exp[name])
    kinds = {row["kind"] for row in want}
    assert {"detection", "limit", "forced"} <= kinds
    assert sum(row["current"] for row in want) == len(subjects) - 1  # one per subject with a curve


def test_the_export_is_registered_and_runs_as_a_job(curves, project, workflow, owner):
    job = exporters.start_export(
        project=project, user=owner, role="owner", kind="light_curves", fmt="parquet", workflow_id=workflow.pk
    )
    job = run_job(job.pk)
    assert job.status == "succeeded", job.error
    assert job.params["result"]["rows"] == sum(len(c) for c in curves[1].values())
    with pytest.raises(exporters.ExportError, match="light_curves export can be csv, parquet, fits"):
        exporters.validate_request(project, "light_curves", "jsonl")
    similar = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    with pytest.raises(exporters.ExportError, match="real/bogus"):
        exporters.validate_request(project, "light_curves", "csv", similar.pk)


def test_the_training_bundle_carries_the_light_curves_of_its_subjects(
    project, workflow, django_user_model, tmp_path
):
    data = populate(project, workflow, django_user_model, n_subjects=8)
    expected = _with_curves(data.subjects, seed=1)
    path = tmp_path / "bundle.zip"
    export_bundle(project, path, workflow=workflow)
    manifest = verify_bundle(path)
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("light_curves.csv")
        labels = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert hashlib.sha256(raw).hexdigest() == manifest["files"]["light_curves.csv"]["sha256"]
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert manifest["light_curves"]["rows"] == manifest["counts"]["light_curve_points"] == len(rows)
    assert manifest["light_curves"]["columns"] == ["index", *NAMES] == list(rows[0])
    # Exactly the points of the bundle's subjects, each with its subject's row of images.npy.
    index_of = {int(r["subject_id"]): int(r["index"]) for r in labels}
    in_bundle = [t.subject_id for t in training_labels(workflow)]
    assert len(rows) == sum(len(expected[pk]) for pk in in_bundle) > 0
    for row in rows:
        assert int(row["index"]) == index_of[int(row["subject_id"])]
    first = next(pk for pk in in_bundle if expected[pk])
    mine = [r for r in rows if int(r["subject_id"]) == first]
    assert [float(r["mjd"]) for r in mine] == pytest.approx([p["mjd"] for p in expected[first]])
    assert manifest["counts"]["with_light_curve"] == sum(1 for pk in in_bundle if expected[pk])
