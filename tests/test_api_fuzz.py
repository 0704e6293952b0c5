"""Schemathesis against the served OpenAPI schema: no request a client can send gets a 500.

Every operation of /api/schema/ is called with generated data (valid and invalid), authenticated as the
owner of a project that has a workflow, subjects, votes and a finished export, so the calls reach past
the permission checks into the views. Any 5xx fails the test, and so does a response the schema does not
document (status code or body), so the schema stays true to what the API answers.

This runs as its own CI step (`-m fuzz`, a few hundred examples per operation); `make test` skips it
to stay fast, and `SKYVOTE_FUZZ_EXAMPLES` sets the number of examples.
"""

import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from skyvote.wsgi import application

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("SKYVOTE_FUZZ_EXAMPLES", "200"))

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def token(django_user_model, make_subjects):
    from core.authentication import create_token
    from core.models import Participant
    from labeling.services import record_vote

    subjects = make_subjects(5)
    owner = subjects[0].project.owner
    for i, subject in enumerate(subjects):
        participant = Participant.objects.create(kind=Participant.ANONYMOUS)
        record_vote(
            workflow=subject.workflow, subject_id=subject.pk, participant=participant,
            answer="real" if i % 2 else "bogus", idempotency_key=uuid.uuid4(), trusted=True, source="import",
        )  # fmt: skip
    _, key = create_token(owner, "fuzz")
    return key


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_gets_a_server_error(case, token):
    case.headers = {**(case.headers or {}), "Authorization": f"Token {token}"}
    response = case.call()
    case.validate_response(
        response,
        checks=(
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ),
    )
