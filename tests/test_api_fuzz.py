"""Schemathesis against the served OpenAPI schema: no request a client can send gets a 500.

Every operation of /api/schema/ is called with generated data (valid and invalid), authenticated as the
owner of a project that has two workflows, subjects (one gold), votes (one a panel worker's), a
similarity task and vote, an active model with its checkpoint, a finished export and an ingest job's
report. Every call names that project, and most name its objects' ids, workflows, dates and answers
(schemathesis dictionaries, with a few odd values that once got a 500), so the calls reach past the
permission checks into the views and serializers rather than ending in 404s. Any 5xx fails the test, and so does a response the schema does
not document (status code, content type or body), so the schema stays true to what the API answers.

What the fuzzer cannot reach: a vote with a valid ticket (a ticket is signed for one served subject and
participant, so a generated one is always refused with 400 or 403). Fuzzed votes still cover every
refusal; `test_a_served_vote_matches_the_schema` below (not marked `fuzz`: it runs with the suite)
serves a subject, votes on it and replays the vote, holding each answer to the schema.

The fuzzing runs as its own CI step (`-m fuzz`, `SKYVOTE_FUZZ_EXAMPLES` examples per operation, 200 by
default); `make test` skips it to stay fast.
"""

import os
import uuid

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.urls import reverse
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from skyvote.wsgi import application

# reset_sequences: every table's ids start at 1, so the ids below name the fixture's objects on SQLite
# and PostgreSQL alike.
pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)

EXAMPLES = int(os.environ.get("SKYVOTE_FUZZ_EXAMPLES", "200"))
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)

PROJECT = "ztf"  # tests/conftest.py's project
# Workflows 1 (rb, real/bogus) and 2 (sim, similarity); subjects 1-8; model version 1; jobs 1 (the
# export) and 2 (the ingest job); similarity task 1. Entries that do not fit a parameter's schema are
# left out of valid cases by schemathesis (and used in invalid ones).
IDS = [1, 2, 3, 4, 5]
# Values that once got a 500: ids beyond any row (the database could not compare them), "²" (a digit
# to str.isdigit, not to int), dates that leave year 1 to 9999 when moved to UTC.
ODD_IDS = [2**63, 10**30, "²"]
DATES = ["2026-01-01", "2026-01-01T12:00:00Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
config = SchemathesisConfig.from_dict(
    {
        "dictionaries": {
            "project": {"values": [PROJECT]},
            "ids": {"values": IDS + ODD_IDS},
            "workflow": {"values": [1, 2, "1", "2", "rb", "sim", "²", str(10**30)]},
            "answer": {"values": ["real", "bogus", "skip"]},
            "pages": {"values": [1]},
            "dates": {"values": DATES},
        },
        "parameters": {
            # Always the project: another slug only ever gets 404 (tests/test_api_permissions.py covers
            # that), and the coverage phase, which draws no dictionary values, would never get past it.
            "path.project": PROJECT,
            "path.id": {"dictionary": "ids", "probability": 0.8},
            "query.workflow": {"dictionary": "workflow", "probability": 0.5},
            "query.page": {"dictionary": "pages", "probability": 0.7},
            "query.subject": {"dictionary": "ids", "probability": 0.5},
            "query.task": {"dictionary": "ids", "probability": 0.5},
            **{
                f"query.{name}_{end}": {"dictionary": "dates", "probability": 0.3}
                for name in ("created", "retired")
                for end in ("after", "before")
            },
            "body.project": {"dictionary": "project", "probability": 0.8},
            # Mostly keep the project's slug: an update that renames it leaves nothing to call.
            "body.slug": {"dictionary": "project", "probability": 0.95},
            "body.workflow": {"dictionary": "workflow", "probability": 0.8},
            "body.subject": {"dictionary": "ids", "probability": 0.8},
            "body.answer": {"dictionary": "answer", "probability": 0.5},
        },
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=config)


@pytest.fixture
def token(django_user_model, project, workflow, make_subjects):
    from core.authentication import create_token
    from core.exporters import start_export
    from core.models import ModelVersion, Participant, Subject, Workflow
    from jobs.models import Job
    from jobs.services import run_job
    from labeling.services import record_vote
    from similarity.models import SimilarityTask, SimilarityVote

    subjects = make_subjects(5)
    Subject.objects.filter(pk=subjects[0].pk).update(gold_label=Subject.REAL)
    worker = Participant.objects.create(kind=Participant.WORKER, external_id="PROLIFIC-fuzz")
    for i, subject in enumerate(subjects):
        participant = worker if i == 0 else Participant.objects.create(kind=Participant.ANONYMOUS)
        record_vote(
            workflow=workflow, subject_id=subject.pk, participant=participant,
            answer="real" if i % 2 else "bogus", idempotency_key=uuid.uuid4(), trusted=True, source="import",
        )  # fmt: skip
    model = ModelVersion.objects.create(
        workflow=workflow, version=1, status=ModelVersion.ACTIVE, metrics={"auc": 0.9}, n_train=5
    )
    model.artifact.save("model.pt", ContentFile(b"not really a checkpoint"), save=True)
    workflow.active_model = model
    workflow.save(update_fields=["active_model"])
    Subject.objects.filter(pk__in=[s.pk for s in subjects[:3]]).update(model_score=0.7, model_uncertainty=0.1)

    export = start_export(project=project, user=project.owner, role="owner", kind="labels", fmt="csv")
    run_job(export.pk)
    Job.objects.create(
        project=project, workflow=workflow, kind=Job.INGEST, status=Job.SUCCEEDED,
        params={"result": {"ingested": 0, "duplicates": 0, "failed": 1, "subject_ids": [],
                           "errors": [{"file": "broken.avro", "error": "not an Avro file"}]}},
    )  # fmt: skip

    sim = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    gallery = make_subjects(3, seed=1, wf=sim)
    task = SimilarityTask.objects.create(
        workflow=sim, comparison=gallery[0], candidates=[s.pk for s in gallery[1:]]
    )
    SimilarityVote.objects.create(
        workflow=sim, task=task, participant=worker, chosen=[gallery[1].pk], n_chosen=1
    )
    _, key = create_token(project.owner, "fuzz")
    return key


@pytest.mark.fuzz
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_gets_a_server_error(case, token):
    case.headers = {**(case.headers or {}), "Authorization": f"Token {token}"}
    if (
        case.operation.path == "/api/projects/{project}/"
        and isinstance(case.body, dict)
        and "slug" in case.body
    ):
        # Updates keep the project's slug: renamed, it would leave nothing to call for the rest of the
        # examples (schemathesis's coverage phase draws no dictionary values, so "body.slug" is not enough).
        case.body["slug"] = PROJECT
    response = case.call()
    case.validate_response(response, checks=CHECKS)


def test_a_served_vote_matches_the_schema(token, workflow):
    """The one path the fuzzer cannot take: serve, vote with the ticket (201), replay it (200)."""
    headers = {"Authorization": f"Token {token}"}
    serve = schema["/api/projects/{project}/workflows/{id}/next/"]["GET"]
    case = serve.Case(path_parameters={"project": PROJECT, "id": workflow.pk}, headers=headers)
    served = case.call()
    case.validate_response(served, checks=CHECKS)
    assert served.status_code == 200 and served.json()["subject"] is not None

    vote = schema[reverse("api_vote_create")]["POST"]
    body = {
        "workflow": workflow.pk,
        "subject": served.json()["subject"],
        "answer": "real",
        "idempotency_key": str(uuid.uuid4()),
        "ticket": served.json()["ticket"],
    }
    for expected in (201, 200):
        case = vote.Case(body=body, headers=headers, media_type="application/json")
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == expected, response.content
