"""The training bundle: one zip with images.npy, labels.csv and a manifest whose checksums verify,
a split that depends only on each subject's external id, and provenance to regenerate it."""

import csv
import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from core.exporters import ExportError
from core.ingest import load_subject_array
from core.models import Subject
from labeling.labels import training_labels
from loop.exporters import export_bundle, split_of, verify_bundle
from tests.exports_support import add_subjects, populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, workflow, django_user_model):
    return populate(project, workflow, django_user_model, n_subjects=8)


def _read(path):
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        images = np.load(io.BytesIO(zf.read("images.npy")), allow_pickle=False)
        labels = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        members = {name: zf.read(name) for name in zf.namelist()}
    return manifest, images, labels, members


def test_bundle_contents_match_the_database_and_the_manifest_verifies(data, tmp_path):
    path = tmp_path / "bundle.zip"
    info = export_bundle(data.project, path, workflow=data.workflow)
    manifest, images, labels, members = _read(path)

    # Every file's SHA-256, computed independently, matches the manifest.
    assert set(manifest["files"]) == {"images.npy", "labels.csv", "light_curves.csv", "croissant.json"}
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(members[name]).hexdigest() == entry["sha256"]
        assert len(members[name]) == entry["bytes"]
    assert verify_bundle(path)["counts"] == manifest["counts"]

    # Exactly the training labels, in id order; images[i] is the subject of labels row i.
    expected = training_labels(data.workflow)
    assert [int(r["subject_id"]) for r in labels] == [t.subject_id for t in expected]
    assert images.shape[0] == len(labels) == manifest["counts"]["subjects"] == info["rows"] > 0
    assert images.dtype == np.float32
    for i, (row, t) in enumerate(zip(labels, expected, strict=True)):
        assert int(row["index"]) == i
        subject = Subject.objects.get(pk=t.subject_id)
        np.testing.assert_array_equal(images[i], load_subject_array(subject))
        assert row["label"] == ("real" if t.p_real >= 0.5 else "bogus")
        assert int(row["target"]) == int(row["label"] == "real")
        assert row["label_source"] == ("gold" if t.is_gold else "crowd")
        assert float(row["weight"]) == pytest.approx(t.weight)
        assert row["split"] == split_of(subject.external_id)

    counts = manifest["counts"]
    assert counts["train"] + counts["validation"] + counts["test"] == counts["subjects"]
    assert counts["real"] + counts["bogus"] == counts["subjects"]
    assert counts["gold"] == sum(t.is_gold for t in expected) == 1

    # Provenance: thresholds, model version, code version, time and the query.
    assert manifest["aggregation"]["thresholds"]["retirement_limit"] == data.workflow.retirement_limit
    assert manifest["aggregation"]["methods"]
    assert manifest["model_version"]["version"] == 3
    assert manifest["code_version"]
    assert manifest["exported_at"]
    assert "SELECT" in manifest["query"]["sql"] and data.workflow.slug in manifest["query"]["description"]


def test_tampering_is_detected(data, tmp_path):
    path = tmp_path / "bundle.zip"
    export_bundle(data.project, path, workflow=data.workflow)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "labels.csv":
                content = content.replace(b"bogus", b"real!", 1) if b"bogus" in content else content + b"\n"
            dst.writestr(item, content)
    with pytest.raises(ExportError, match="labels.csv"):
        verify_bundle(tampered)


def test_split_is_stable_and_follows_the_fractions():
    ids = [f"ZTF{i:06d}" for i in range(4000)]
    first = [split_of(x) for x in ids]
    assert first == [split_of(x) for x in reversed(ids)][::-1]
    shares = {name: first.count(name) / len(ids) for name in ("train", "validation", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.03)
    assert shares["validation"] == pytest.approx(0.1, abs=0.02)
    everything_test = {"train": 0.0, "validation": 0.0, "test": 1.0}
    assert {split_of(x, everything_test) for x in ids[:50]} == {"test"}


def test_the_same_subject_lands_in_the_same_split_in_a_regenerated_bundle(data, tmp_path):
    first = tmp_path / "first.zip"
    export_bundle(data.project, first, workflow=data.workflow)
    # More labelled subjects arrive; the earlier ones keep their split.
    extra = add_subjects(data.project, data.workflow, 3, seed=4, prefix="late")
    Subject.objects.filter(pk__in=[s.pk for s in extra]).update(gold_label="bogus")
    second = tmp_path / "second.zip"
    export_bundle(data.project, second, workflow=data.workflow)
    _, _, before, _ = _read(first)
    _, _, after, _ = _read(second)
    split_after = {r["external_id"]: r["split"] for r in after}
    assert all(split_after[r["external_id"]] == r["split"] for r in before)
    assert len(after) == len(before) + 3


def test_arrays_of_other_sizes_are_nan_padded_to_the_common_shape(data, tmp_path):
    from django.core.files.base import ContentFile

    small = data.subjects[1]
    array = load_subject_array(small)[:, :41, :]
    buffer = io.BytesIO()
    np.save(buffer, array)
    small.data.save("small.npy", ContentFile(buffer.getvalue()), save=True)
    Subject.objects.filter(pk=small.pk).update(gold_label="bogus")
    path = tmp_path / "bundle.zip"
    export_bundle(data.project, path, workflow=data.workflow)
    manifest, images, labels, _ = _read(path)
    row = next(i for i, r in enumerate(labels) if int(r["subject_id"]) == small.pk)
    assert labels[row]["original_shape"] == "3x41x63"
    assert images.shape[1:] == (3, 63, 63)
    np.testing.assert_array_equal(images[row][:, :41, :], array)
    assert np.isnan(images[row][:, 41:, :]).all()
    assert manifest["counts"]["padded"] == 1


def test_bad_split_is_refused(data, tmp_path):
    with pytest.raises(ExportError, match="add up to 1"):
        export_bundle(
            data.project,
            tmp_path / "x.zip",
            workflow=data.workflow,
            split={"train": 0.9, "validation": 0.2, "test": 0},
        )
