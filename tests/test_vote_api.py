"""GET …/workflows/{id}/next/ then POST /api/votes/ with its ticket: the JSON twin of the classify
page, through the same service."""

import uuid

import pytest

from labeling.models import Vote

pytestmark = pytest.mark.django_db


def post(client, **data):
    return client.post("/api/votes/", data, content_type="application/json")


def serve(client, workflow):
    response = client.get(f"/api/projects/{workflow.project.slug}/workflows/{workflow.pk}/next/")
    assert response.status_code == 200, response.content
    return response.json()


def test_vote_created_then_idempotent(client, workflow, make_subjects):
    (subject,) = make_subjects(1)
    served = serve(client, workflow)
    assert served["subject"] == subject.pk and served["answers"] == ["real", "bogus", "skip"]
    assert set(served["images"]) == {"science", "reference", "difference"}
    key = str(uuid.uuid4())
    body = {
        "workflow": workflow.pk,
        "subject": subject.pk,
        "answer": "real",
        "idempotency_key": key,
        "ticket": served["ticket"],
    }
    first = post(client, **body)
    assert first.status_code == 201, first.content
    assert first.json()["created"] is True and first.json()["answer"] == "real"
    again = post(client, **body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert Vote.objects.count() == 1
    assert Vote.objects.get().source == "api"
    assert serve(client, workflow)["subject"] is None  # nothing left for this volunteer


def test_invalid_votes_get_clear_errors(client, workflow, make_subjects):
    (subject,) = make_subjects(1)
    missing = post(client, workflow=workflow.pk, subject=subject.pk, answer="real")
    assert missing.status_code == 400 and "idempotency_key" in missing.json()
    wrong = post(
        client, workflow=workflow.pk, subject=subject.pk, answer="maybe", idempotency_key=str(uuid.uuid4())
    )
    assert wrong.status_code == 400 and "not an answer" in wrong.json()["detail"]
    unknown = post(
        client, workflow=999999, subject=subject.pk, answer="real", idempotency_key=str(uuid.uuid4())
    )
    assert unknown.status_code == 404
    unserved = post(
        client, workflow=workflow.pk, subject=subject.pk, answer="real", idempotency_key=str(uuid.uuid4())
    )
    assert unserved.status_code == 400 and "no ticket" in unserved.json()["detail"]
    assert Vote.objects.count() == 0
