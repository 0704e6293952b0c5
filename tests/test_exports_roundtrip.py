"""Exports written, read back with the tools astronomers use (csv, json, pyarrow, astropy) and
compared with the database: votes (CSV, JSON Lines, Parquet) and labels (CSV, Parquet, FITS, ECSV)."""

import csv
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table

from core.exporters import ExportError, validate_request
from core.models import Participant, Project, Subject, Workflow
from labeling.exporters import export_labels, export_votes
from labeling.labels import training_labels
from labeling.models import Vote
from tests.exports_support import add_subjects, populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, workflow, django_user_model):
    return populate(project, workflow, django_user_model)


def _db_votes(project):
    return list(
        Vote.objects.filter(workflow__project=project)
        .select_related("participant", "subject", "workflow")
        .order_by("pk")
    )


def _check_vote_rows(rows: list[dict], project, with_worker: bool):
    votes = _db_votes(project)
    assert len(rows) == len(votes) > 0
    for row, vote in zip(rows, votes, strict=True):
        assert int(row["vote_id"]) == vote.pk
        assert row["participant"] == project.pseudonym(vote.participant_id)
        assert row["participant_kind"] == vote.participant.kind
        assert row["workflow"] == vote.workflow.slug
        assert int(row["subject_id"]) == vote.subject_id
        assert row["subject_external_id"] == vote.subject.external_id
        assert row["answer"] == vote.answer
        assert row["created_at"] == vote.created_at.isoformat()
        assert row["started_at"] == vote.started_at.isoformat()
        assert row["user_agent"] == vote.user_agent and row["viewport"] == vote.viewport
        assert str(row["gold"]).lower() == str(vote.was_gold).lower()
        assert str(row["late"]).lower() == str(vote.subject_was_retired).lower()
        if with_worker:
            expected = vote.participant.external_id or None
            assert (row["worker_id"] or None) == expected
        else:
            assert "worker_id" not in row


def test_votes_csv_round_trip_without_personal_data(data, tmp_path, django_user_model):
    path = tmp_path / "votes.csv"
    info = export_votes(data.project, path, "csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert info["rows"] == len(rows)
    _check_vote_rows(rows, data.project, with_worker=False)
    text = path.read_text()
    volunteers = django_user_model.objects.filter(participant__in=data.participants)
    assert volunteers.count() == 2
    for user in volunteers:
        assert user.email not in text and user.username not in text
    assert data.worker.external_id not in text
    assert any(r["gold"] == "true" for r in rows) and any(r["gold"] == "false" for r in rows)


def test_votes_jsonl_and_parquet_round_trip_with_worker_ids(data, tmp_path):
    jsonl = tmp_path / "votes.jsonl"
    export_votes(data.project, jsonl, "jsonl", include_worker_ids=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    _check_vote_rows(rows, data.project, with_worker=True)
    assert isinstance(rows[0]["gold"], bool) and isinstance(rows[0]["vote_id"], int)

    parquet = tmp_path / "votes.parquet"
    export_votes(data.project, parquet, "parquet", include_worker_ids=True)
    table = pq.read_table(parquet)
    as_rows = table.to_pylist()
    for row in as_rows:
        for key in ("started_at", "finished_at", "created_at"):
            row[key] = row[key].isoformat() if row[key] is not None else None
    _check_vote_rows(as_rows, data.project, with_worker=True)
    provenance = json.loads(table.schema.metadata[b"skyvote"])
    assert provenance["project"] == data.project.slug and provenance["kind"] == "votes"


def test_late_votes_are_flagged(data, tmp_path):
    subject = data.subjects[-1]
    Subject.objects.filter(pk=subject.pk).update(status=Subject.RETIRED, retired_reason="manual")
    from labeling.services import record_vote

    late = record_vote(
        workflow=data.workflow, subject_id=subject.pk, participant=data.participants[0], answer="real",
        idempotency_key="6b1f1c32-8d4e-4a53-9c60-1c1a6c7f0a11", trusted=True,
    ).vote  # fmt: skip
    path = tmp_path / "votes.csv"
    export_votes(data.project, path, "csv")
    rows = {int(r["vote_id"]): r for r in csv.DictReader(open(path, newline=""))}
    assert rows[late.pk]["late"] == "true"
    late_ids = {pk for pk, r in rows.items() if r["late"] == "true"}
    assert late_ids == set(Vote.objects.filter(subject_was_retired=True).values_list("pk", flat=True))
    assert len(late_ids) < len(rows)


def test_pseudonyms_stable_within_a_project_and_different_between_projects(
    data, tmp_path, owner, django_user_model
):
    other = Project.objects.create(slug="other", name="Other", owner=owner)
    other_wf = Workflow.objects.create(project=other, slug="rb", name="RB")
    (subject,) = add_subjects(other, other_wf, 1, seed=9, prefix="oth")
    from labeling.services import record_vote

    volunteer = data.participants[0]
    record_vote(workflow=other_wf, subject_id=subject.pk, participant=volunteer, answer="real",
                idempotency_key="0b5f4f7e-7a86-4b39-9f0a-6fd3f1a1b001", trusted=True)  # fmt: skip
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    export_votes(data.project, first, "csv")
    export_votes(other, second, "csv")
    mine = {r["participant"] for r in csv.DictReader(open(first)) if r["participant_kind"] == "user"}
    theirs = [r["participant"] for r in csv.DictReader(open(second))]
    assert data.project.pseudonym(volunteer.pk) in mine
    assert theirs == [other.pseudonym(volunteer.pk)]
    assert theirs[0] not in mine


def _expected_labels(workflow):
    decided = {t.subject_id: t for t in training_labels(workflow)}
    expected = {}
    for s in Subject.objects.filter(workflow=workflow).order_by("pk"):
        t = decided.get(s.pk)
        label = "" if t is None else ("real" if t.p_real >= 0.5 else "bogus")
        expected[s.pk] = {
            "external_id": s.external_id,
            "object_id": s.object_id,
            "ra": s.metadata["ra"],
            "dec": s.metadata["dec"],
            "n_votes": s.vote_count,
            "p_real": s.p_real,
            "label": label,
            "gold_label": s.gold_label,
            "model_score": s.model_score,
            "model_uncertainty": s.model_uncertainty,
            "status": s.status,
            "aggregation_method": s.aggregation_method,
        }
    return expected


def _close(a, b):
    if b is None:
        return a is None or (isinstance(a, float) and math.isnan(a)) or a == ""
    return a is not None and math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


def _check_label_rows(rows: list[dict], workflow):
    expected = _expected_labels(workflow)
    assert [int(r["subject_id"]) for r in rows] == list(expected)
    labelled = 0
    for row in rows:
        exp = expected[int(row["subject_id"])]
        for key in ("external_id", "object_id", "label", "gold_label", "status", "aggregation_method"):
            assert (row[key] or "") == (exp[key] or ""), (key, row[key], exp[key])
        for key in ("ra", "dec", "p_real", "model_score", "model_uncertainty"):
            assert _close(row[key], exp[key]), (key, row[key], exp[key])
        assert int(row["n_votes"]) == exp["n_votes"]
        params = json.loads(row["aggregation_params"])
        assert params["retirement_limit"] == workflow.retirement_limit
        assert (row["model_version"] or "") == ("v3" if exp["model_score"] is not None else "")
        labelled += bool(row["label"])
    assert labelled >= 2  # the gold subject and at least one retired, decided subject


def _astropy_rows(table) -> list[dict]:
    """Rows of an astropy Table as dicts of Python values; masked (missing) values → None."""
    rows = []
    for row in table:
        out = {}
        for name in table.colnames:
            value = row[name]
            if np.ma.is_masked(value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            out[name] = value.decode() if isinstance(value, bytes) else value
        rows.append(out)
    return rows


@pytest.fixture
def labelled(data):
    data.workflow.refresh_from_db()
    assert Subject.objects.filter(workflow=data.workflow, status=Subject.RETIRED).exists()
    return data


def test_labels_csv_round_trip(labelled, tmp_path):
    path = tmp_path / "labels.csv"
    export_labels(labelled.project, path, "csv")
    rows = list(csv.DictReader(open(path, newline="")))
    _check_label_rows(rows, labelled.workflow)


def test_labels_parquet_round_trip(labelled, tmp_path):
    path = tmp_path / "labels.parquet"
    export_labels(labelled.project, path, "parquet", chunk_size=2)  # several row groups
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_row_groups >= 3
    table = parquet.read()
    _check_label_rows(table.to_pylist(), labelled.workflow)
    assert table.schema.field("ra").metadata[b"unit"] == b"deg"


def test_labels_fits_round_trip(labelled, tmp_path):
    path = tmp_path / "labels.fits"
    export_labels(labelled.project, path, "fits", chunk_size=4)
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert hdul["LABELS"].header["PROJECT"] == labelled.project.slug
        aggregation = json.loads(hdul["LABELS"].header["AGGPARAM"])
        assert aggregation[labelled.workflow.slug]["min_votes"] == labelled.workflow.min_votes
    table = Table.read(path, hdu="LABELS")
    assert str(table["ra"].unit) == "deg"
    _check_label_rows(_astropy_rows(table), labelled.workflow)


def test_labels_ecsv_round_trip(labelled, tmp_path):
    path = tmp_path / "labels.ecsv"
    export_labels(labelled.project, path, "ecsv")
    table = Table.read(path, format="ascii.ecsv")
    assert table.meta["project"] == labelled.project.slug
    assert str(table["dec"].unit) == "deg"
    assert table["n_votes"].dtype.kind == "i" and table["p_real"].dtype.kind == "f"
    _check_label_rows(_astropy_rows(table), labelled.workflow)


def test_an_empty_project_exports_empty_tables(project, workflow, tmp_path):
    for fmt in ("csv", "parquet", "fits", "ecsv"):
        path = tmp_path / f"labels.{fmt}"
        info = export_labels(project, path, fmt)
        assert info["rows"] == 0 and path.exists()
    assert len(Table.read(tmp_path / "labels.fits", hdu=1)) == 0
    assert pq.read_table(tmp_path / "labels.parquet").num_rows == 0


def test_bad_formats_are_refused_with_clear_messages(project, workflow):
    with pytest.raises(ExportError, match="csv, jsonl, parquet"):
        validate_request(project, "votes", "fits")
    with pytest.raises(ExportError, match="Unknown export"):
        validate_request(project, "everything", "csv")
    with pytest.raises(ExportError, match="No such workflow"):
        validate_request(project, "labels", "csv", workflow_id=987654)


def test_participants_of_other_projects_are_not_exported(data, tmp_path, owner):
    other = Project.objects.create(slug="elsewhere", name="Elsewhere", owner=owner)
    other_wf = Workflow.objects.create(project=other, slug="rb", name="RB")
    (subject,) = add_subjects(other, other_wf, 1, seed=5, prefix="else")
    stranger = Participant.objects.create(kind=Participant.ANONYMOUS)
    from labeling.services import record_vote

    record_vote(workflow=other_wf, subject_id=subject.pk, participant=stranger, answer="bogus",
                idempotency_key="1c2d3e4f-0000-4000-8000-000000000001", trusted=True)  # fmt: skip
    path = tmp_path / "votes.csv"
    export_votes(data.project, path, "csv")
    rows = list(csv.DictReader(open(path)))
    assert data.project.pseudonym(stranger.pk) not in {r["participant"] for r in rows}
    assert len(rows) == Vote.objects.filter(workflow=data.workflow).count()
