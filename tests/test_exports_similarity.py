"""Similarity export: per task the choices (one tidy row per vote and candidate shown) and per pair
the shown/chosen counts, read back and compared with the database."""

import csv
import io
import json
import zipfile

import pytest

from core.exporters import ExportError, validate_request, verify_manifest
from core.models import Participant, Workflow
from similarity.exporters import export_similarity
from tests.exports_support import add_subjects

pytestmark = pytest.mark.django_db


@pytest.fixture
def similarity_data(project):
    from similarity.models import PairStat, SimilarityTask, SimilarityVote

    workflow = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    subjects = add_subjects(project, workflow, 6, seed=3, prefix="gal")
    worker = Participant.objects.create(kind=Participant.WORKER, external_id="PROLIFIC-sim")
    anon = Participant.objects.create(kind=Participant.ANONYMOUS)
    task = SimilarityTask.objects.create(
        workflow=workflow,
        comparison=subjects[0],
        candidates=[s.pk for s in subjects[1:]],
        candidate_sources=["nearest", "random", "mid", "uncertain", "random"],
    )
    votes = [
        SimilarityVote.objects.create(
            workflow=workflow,
            task=task,
            participant=worker,
            chosen=[subjects[1].pk, subjects[3].pk],
            n_chosen=2,
        ),
        SimilarityVote.objects.create(workflow=workflow, task=task, participant=anon, none_similar=True),
    ]
    for candidate in subjects[1:]:
        chosen = sum(candidate.pk in v.chosen for v in votes)
        PairStat.objects.create(
            workflow=workflow, comparison=subjects[0], candidate=candidate, shown=2, chosen=chosen
        )
    return workflow, subjects, task, votes, worker


def _read(path):
    with zipfile.ZipFile(path) as zf:
        tables = {
            name: list(csv.DictReader(io.StringIO(zf.read(name).decode())))
            for name in ("choices.csv", "tasks.csv", "pairs.csv")
        }
        return tables, json.loads(zf.read("manifest.json")), {n: zf.read(n) for n in zf.namelist()}


def test_similarity_export_round_trip(project, similarity_data, tmp_path):
    workflow, subjects, task, votes, worker = similarity_data
    path = tmp_path / "similarity.zip"
    export_similarity(project, path)
    tables, manifest, _members = _read(path)
    assert verify_manifest(path)["counts"]["votes"] == 2

    choices = tables["choices.csv"]
    assert len(choices) == 2 * len(task.candidates)
    for row in choices:
        vote = next(v for v in votes if v.pk == int(row["vote_id"]))
        candidate = int(row["candidate_id"])
        assert candidate == task.candidates[int(row["position"]) - 1]
        assert row["candidate_external_id"] == next(s.external_id for s in subjects if s.pk == candidate)
        assert row["chosen"] == ("true" if candidate in vote.chosen else "false")
        assert row["none_similar"] == ("true" if vote.none_similar else "false")
        assert row["participant"] == project.pseudonym(vote.participant_id)
        assert row["comparison_external_id"] == subjects[0].external_id
    assert "worker_id" not in choices[0] and worker.external_id not in path.read_bytes().decode("latin-1")
    assert [r["candidate_source"] for r in choices[:5]] == task.candidate_sources

    (task_row,) = tables["tasks.csv"]
    assert int(task_row["n_candidates"]) == 5 and task_row["workflow"] == workflow.slug

    pairs = {int(r["candidate_id"]): r for r in tables["pairs.csv"]}
    assert int(pairs[subjects[1].pk]["chosen"]) == 1 and int(pairs[subjects[2].pk]["chosen"]) == 0
    assert float(pairs[subjects[1].pk]["rate"]) == 0.5
    assert (
        0.0
        <= float(pairs[subjects[1].pk]["rate_low"])
        < 0.5
        < float(pairs[subjects[1].pk]["rate_high"])
        <= 1.0
    )


def test_owners_similarity_export_has_worker_ids(project, similarity_data, tmp_path):
    _workflow, _subjects, _task, _votes, worker = similarity_data
    path = tmp_path / "similarity.zip"
    export_similarity(project, path, include_worker_ids=True)
    tables, _manifest, _members = _read(path)
    assert {r["worker_id"] for r in tables["choices.csv"]} == {worker.external_id, ""}


def test_similarity_requests_need_a_similarity_workflow(project, workflow, similarity_data):
    with pytest.raises(ExportError, match="similarity workflows"):
        validate_request(project, "similarity", "zip", workflow_id=workflow.pk)
    assert validate_request(project, "similarity", "zip", workflow_id=similarity_data[0].pk)
