"""Typed labels in the exports: the labels table's decided type, type posterior (one p_type_<key> column
per workflow type), the model's type and whether the model helped decide; the votes' follow-up answer;
each volunteer's type confusion; the training bundle's type column and class list. Every format is
read back with the tool astronomers use (csv, pyarrow, astropy)."""

import csv
import io
import json
import math
import uuid
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from django.urls import reverse

from core.exporters import start_export
from core.followups import validate
from core.models import Participant, ProjectMembership, Subject, Workflow
from core.storage import open_stored
from jobs.services import run_job
from labeling.exporters import LABEL_COLUMNS, export_labels, export_volunteers, export_votes
from labeling.models import ParticipantSkill
from labeling.services import record_vote
from loop.exporters import export_bundle, verify_bundle
from tests.exports_support import add_subjects

pytestmark = pytest.mark.django_db

TYPE_KEYS = ["cosmic_ray", "ghost", "variable_star"]
TYPE_COLUMNS = ["decided_with_model", "decided_type", "model_type", "model_type_p"]


def _typed(workflow: Workflow) -> Workflow:
    workflow.followups = validate(
        [
            {"answer": "bogus", "types": [{"key": "cosmic_ray"}, {"key": "ghost", "label": "Ghost"}]},
            {"answer": "real", "types": ["variable_star"]},
        ],
        workflow.answer_options,
    )
    workflow.save(update_fields=["followups"])
    return workflow


def _subject(workflow, i, **fields) -> Subject:
    return Subject.objects.create(
        project=workflow.project,
        workflow=workflow,
        external_id=f"T{workflow.pk}-{i}",
        metadata={"ra": 10.0 + i, "dec": -5.0},
        **fields,
    )


def _read(path, fmt: str, hdu: str = "LABELS") -> tuple[list[str], list[dict]]:
    """(column names, rows) of an export file; missing cells (empty text, NaN, null, masked) → None."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            names = list(reader.fieldnames or [])
    elif fmt == "parquet":
        table = pq.read_table(path)
        names, rows = table.column_names, table.to_pylist()
    else:
        table = Table.read(path, hdu=hdu) if fmt == "fits" else Table.read(path, format="ascii.ecsv")
        names, rows = list(table.colnames), []
        for row in table:
            out = {}
            for name in names:
                value = None if np.ma.is_masked(row[name]) else row[name]
                value = value.item() if hasattr(value, "item") else value
                out[name] = value.decode() if isinstance(value, bytes) else value
            rows.append(out)
    for row in rows:
        for key, value in row.items():
            if value == "" or (isinstance(value, float) and math.isnan(value)):
                row[key] = None
    return names, rows


def _bool(value) -> bool:
    return str(value).lower() == "true" if isinstance(value, str) else bool(value)


def _float(value) -> float | None:
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# Labels


@pytest.fixture
def typed_labels(project, workflow):
    wf = _typed(workflow)
    subjects = [
        _subject(
            wf, 0, type_posterior={"cosmic_ray": 0.875, "ghost": 0.125}, decided_type="cosmic_ray",
            model_type="ghost", model_type_p=0.625, decided_with_model=True, p_real=0.02, vote_count=3,
        ),
        # Only the type named so far: the other types are missing, not 0.
        _subject(wf, 1, type_posterior={"variable_star": 1.0}, model_type="variable_star", model_type_p=0.5),
        _subject(wf, 2),
    ]  # fmt: skip
    return wf, subjects


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits", "ecsv"])
def test_labels_carry_the_type_posterior_decided_type_and_model(typed_labels, tmp_path, fmt):
    wf, (decided, partial, untyped) = typed_labels
    path = tmp_path / f"labels.{fmt}"
    info = export_labels(wf.project, path, fmt, chunk_size=2)
    names, rows = _read(path, fmt)

    # The existing columns keep their places; the new ones follow, p_type_<key> in type_keys order.
    assert names == [c.name for c in LABEL_COLUMNS] + TYPE_COLUMNS + [f"p_type_{k}" for k in TYPE_KEYS]
    assert info["types"] == {
        wf.slug: {"cosmic_ray": "Cosmic ray", "ghost": "Ghost", "variable_star": "Variable star"}
    }
    by_id = {int(r["subject_id"]): r for r in rows}
    assert list(by_id) == [decided.pk, partial.pk, untyped.pk]

    first = by_id[decided.pk]
    assert _bool(first["decided_with_model"]) is True
    assert (first["decided_type"], first["model_type"]) == ("cosmic_ray", "ghost")
    assert _float(first["model_type_p"]) == 0.625
    assert [_float(first[f"p_type_{k}"]) for k in TYPE_KEYS] == [0.875, 0.125, None]

    second = by_id[partial.pk]
    assert _bool(second["decided_with_model"]) is False and second["decided_type"] is None
    assert second["model_type"] == "variable_star" and _float(second["model_type_p"]) == 0.5
    assert [_float(second[f"p_type_{k}"]) for k in TYPE_KEYS] == [None, None, 1.0]

    third = by_id[untyped.pk]
    assert third["decided_type"] is None and third["model_type"] is None and third["model_type_p"] is None
    assert all(third[f"p_type_{k}"] is None for k in TYPE_KEYS)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_a_workflow_without_types_has_no_posterior_columns(project, workflow, tmp_path, fmt):
    """No follow-up types: no p_type_ columns; the four fixed columns are there (empty, or false)."""
    subject = _subject(workflow, 0, p_real=0.9, decided_with_model=True)
    path = tmp_path / f"labels.{fmt}"
    info = export_labels(project, path, fmt)
    names, rows = _read(path, fmt)
    assert names == [c.name for c in LABEL_COLUMNS] + TYPE_COLUMNS
    assert info["types"] == {workflow.slug: {}}
    assert [int(r["subject_id"]) for r in rows] == [subject.pk]
    assert _bool(rows[0]["decided_with_model"]) is True and rows[0]["decided_type"] is None


def test_a_project_export_has_the_union_of_its_workflows_types(typed_labels, project, tmp_path):
    """Two real/bogus workflows: each type once; a subject has no posterior for the other's types."""
    other = Workflow.objects.create(project=project, slug="rb2", name="Second")
    other.followups = validate([{"answer": "bogus", "types": ["hot_pixel", "ghost"]}], other.answer_options)
    other.save(update_fields=["followups"])
    theirs = _subject(other, 0, type_posterior={"hot_pixel": 0.25, "ghost": 0.75}, decided_type="ghost")
    path = tmp_path / "labels.parquet"
    export_labels(project, path, "parquet")
    names, rows = _read(path, "parquet")
    assert [n for n in names if n.startswith("p_type_")] == [f"p_type_{k}" for k in [*TYPE_KEYS, "hot_pixel"]]
    row = next(r for r in rows if r["subject_id"] == theirs.pk)
    assert (row["p_type_ghost"], row["p_type_hot_pixel"], row["p_type_cosmic_ray"]) == (0.75, 0.25, None)
    assert row["workflow"] == "rb2" and row["decided_type"] == "ghost"


# ---------------------------------------------------------------------------------------------
# Votes


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_votes_carry_the_followup_answer(project, workflow, tmp_path, fmt):
    wf = _typed(workflow)
    subjects = [_subject(wf, i) for i in range(3)]
    volunteer = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="s-types")
    asked = {
        subjects[0].pk: ("bogus", "ghost"),
        subjects[1].pk: ("bogus", "not_sure"),
        subjects[2].pk: ("real", ""),
    }
    for subject_id, (answer, followup) in asked.items():
        record_vote(
            workflow=wf, subject_id=subject_id, participant=volunteer, answer=answer,
            idempotency_key=uuid.uuid4(), trusted=True, followup=followup,
        )  # fmt: skip
    path = tmp_path / f"votes.{fmt}"
    export_votes(project, path, fmt)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        names = list(rows[0])
    else:
        names, rows = _read(path, fmt)
    assert names[-1] == "followup"
    assert {int(r["subject_id"]): r["followup"] or "" for r in rows} == {k: v[1] for k, v in asked.items()}


# ---------------------------------------------------------------------------------------------
# Volunteers


@pytest.fixture
def skills(project, workflow):
    wf = _typed(workflow)
    user = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="s-skill")
    worker = Participant.objects.create(kind=Participant.WORKER, external_id="PROLIFIC-typed-1")
    idle = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="s-idle")
    matrix = [[0.75, 0.125, 0.125], [0.2, 0.7, 0.1], [1 / 3, 1 / 3, 1 / 3]]
    typed = ParticipantSkill.objects.create(
        workflow=wf, participant=user, n_votes=12, n_gold=4, n_gold_correct=3, p_l=0.8, p_d=0.9,
        confusion=[[0.85, 0.15], [0.25, 0.75]], type_confusion={"classes": TYPE_KEYS, "matrix": matrix},
    )  # fmt: skip
    untyped = ParticipantSkill.objects.create(workflow=wf, participant=worker, n_votes=2)
    ParticipantSkill.objects.create(workflow=wf, participant=idle, n_votes=0)  # every vote taken back
    return wf, typed, untyped, matrix


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_volunteers_carry_their_type_confusion(skills, tmp_path, fmt):
    wf, typed, untyped, matrix = skills
    path = tmp_path / f"volunteers.{fmt}"
    info = export_volunteers(wf.project, path, fmt, chunk_size=1)
    names, rows = _read(path, fmt, hdu="VOLUNTEERS")
    assert info["rows"] == 2 and "worker_id" not in names
    assert names[-3:] == ["type_classes", "type_confusion", "updated_at"]
    by_who = {r["participant"]: r for r in rows}
    assert set(by_who) == {
        wf.project.pseudonym(typed.participant_id),
        wf.project.pseudonym(untyped.participant_id),
    }

    row = by_who[wf.project.pseudonym(typed.participant_id)]
    classes, confusion = row["type_classes"], row["type_confusion"]
    if fmt != "parquet":  # JSON text where the format has no nested columns
        classes, confusion = json.loads(classes), json.loads(confusion)
    assert classes == TYPE_KEYS
    assert np.array_equal(np.array(confusion), np.array(matrix))  # exact: JSON keeps every digit
    assert int(row["n_votes"]) == 12 and int(row["n_gold"]) == 4 and _float(row["gold_accuracy"]) == 0.75
    assert (_float(row["p_l"]), _float(row["p_d"]), _float(row["ds_p_l"]), _float(row["ds_p_d"])) == (
        0.8, 0.9, 0.75, 0.85
    )  # fmt: skip
    assert row["workflow"] == wf.slug and row["updated_at"] is not None

    # No type confusion yet (no recompute has seen a type from this volunteer): empty cells.
    plain = by_who[wf.project.pseudonym(untyped.participant_id)]
    assert plain["type_classes"] is None and plain["type_confusion"] is None and plain["ds_p_l"] is None


def test_volunteers_export_through_the_job_keeps_worker_ids_for_owners(skills, owner, django_user_model):
    wf, _typed_skill, untyped, _matrix = skills
    viewer = django_user_model.objects.create_user("viewer-types", password="x")
    ProjectMembership.objects.create(project=wf.project, user=viewer, role="viewer")
    for user, role in ((viewer, "viewer"), (owner, "owner")):
        job = start_export(project=wf.project, user=user, role=role, kind="volunteers", fmt="csv")
        run_job(job.pk)
        job.refresh_from_db()
        content = b"".join(open_stored(job.result.name)).decode()
        header = next(csv.reader(io.StringIO(content)))
        assert ("worker_id" in header) is ("PROLIFIC-typed-1" in content) is (role == "owner")


def test_volunteers_export_permissions_through_the_api(client, skills, owner, django_user_model):
    """Anyone without an export role is refused the new export kind like every other one."""
    wf = skills[0]
    url = reverse("api_exports", args=[wf.project.slug])
    body = {"export": "volunteers", "format": "parquet"}
    assert client.post(url, body, content_type="application/json").status_code in (401, 403)
    expert = django_user_model.objects.create_user("expert-types", password="x")
    ProjectMembership.objects.create(project=wf.project, user=expert, role="expert")
    outsider = django_user_model.objects.create_user("outsider-types", password="x")
    for user, allowed in ((owner, True), (expert, False), (outsider, False)):
        client.force_login(user)
        response = client.post(url, body, content_type="application/json")
        assert (response.status_code == 202) is allowed, (user.username, response.status_code)
        assert response.status_code in (202, 403, 404)
    client.force_login(owner)
    wrong = client.post(url, {"export": "volunteers", "format": "jsonl"}, content_type="application/json")
    assert wrong.status_code == 400 and "csv, parquet, fits" in wrong.json()["detail"]


# ---------------------------------------------------------------------------------------------
# Training bundle


def test_bundle_has_the_type_column_and_the_class_list(project, workflow, tmp_path):
    wf = _typed(workflow)
    gold, crowd, untyped, other_gold = add_subjects(project, wf, 4, seed=5, prefix="typed")
    decided = {"status": Subject.RETIRED, "p_real": 0.02, "vote_count": 3, "aggregation_method": "swap"}
    # Gold type first (it is a class), even where the crowd decided another type.
    Subject.objects.filter(pk=gold.pk).update(
        gold_label="bogus", gold_subtype="ghost", decided_type="cosmic_ray"
    )
    Subject.objects.filter(pk=crowd.pk).update(decided_type="cosmic_ray", decided_with_model=True, **decided)
    Subject.objects.filter(pk=untyped.pk).update(**decided)
    # A gold subtype that is not one of the workflow's classes gives no type.
    Subject.objects.filter(pk=other_gold.pk).update(gold_label="bogus", gold_subtype="hot_pixel")

    path = tmp_path / "bundle.zip"
    export_bundle(project, path, workflow=wf)
    manifest = verify_bundle(path)
    with zipfile.ZipFile(path) as zf:
        labels = {
            int(r["subject_id"]): r for r in csv.DictReader(io.StringIO(zf.read("labels.csv").decode()))
        }
        fields = {f["name"]: f for f in json.loads(zf.read("croissant.json"))["recordSet"][0]["field"]}

    assert manifest["types"]["classes"] == TYPE_KEYS
    assert manifest["types"]["labels"]["ghost"] == "Ghost"
    assert manifest["types"]["counts"] == {"cosmic_ray": 1, "ghost": 1, "variable_star": 0}
    assert manifest["counts"]["typed"] == 2 and manifest["counts"]["decided_with_model"] == 1
    expected = {
        gold.pk: ("ghost", "1", "gold", "false"),
        crowd.pk: ("cosmic_ray", "0", "crowd", "true"),
        untyped.pk: ("", "-1", "", "false"),
        other_gold.pk: ("", "-1", "", "false"),
    }
    got = {
        pk: (r["type"], r["type_index"], r["type_source"], r["decided_with_model"])
        for pk, r in labels.items()
    }
    assert got == expected
    # The dataset description lists the new columns, the class list with the type column.
    assert {"type", "type_index", "type_source", "decided_with_model"} <= set(fields)
    assert "cosmic_ray, ghost, variable_star" in fields["type"]["description"]


def test_bundle_of_a_workflow_without_types(project, workflow, tmp_path):
    (subject,) = add_subjects(project, workflow, 1, seed=6, prefix="plain")
    Subject.objects.filter(pk=subject.pk).update(gold_label="real", gold_subtype="variable_star")
    path = tmp_path / "bundle.zip"
    export_bundle(project, path, workflow=workflow)
    manifest = verify_bundle(path)
    with zipfile.ZipFile(path) as zf:
        (row,) = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert manifest["types"]["classes"] == [] and manifest["counts"]["typed"] == 0
    assert (row["type"], row["type_index"], row["type_source"]) == ("", "-1", "")
