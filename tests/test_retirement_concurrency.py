"""20 volunteers vote on the same subject at the same moment: count and retirement stay exact.

Runs against PostgreSQL only (marked `postgres`: DATABASE_URL=postgres://..., as .ci/run does). The
in-memory SQLite test database cannot be shared between threads, and SQLite serialises writers anyway.
"""

import threading
import uuid

import pytest
from django.db import connections

from core.models import Participant, Subject
from labeling.models import Vote
from labeling.selection import ticket_for
from labeling.services import record_vote

N_THREADS = 20


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_votes_count_exactly(workflow, make_subjects):
    workflow.retirement_limit = 7
    workflow.save()
    (subject,) = make_subjects(1)
    participants = [Participant.objects.create(kind=Participant.ANONYMOUS) for _ in range(N_THREADS)]
    barrier = threading.Barrier(N_THREADS)
    errors, retired_now = [], []

    def cast(p):
        try:
            ticket = ticket_for(workflow, subject, p)  # each volunteer was served the subject
            barrier.wait()
            result = record_vote(
                workflow=workflow,
                subject_id=subject.pk,
                participant=p,
                answer="real",
                idempotency_key=uuid.uuid4(),
                ticket=ticket,
            )
            if result.retired_now:
                retired_now.append(p.pk)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=cast, args=(p,)) for p in participants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors, errors
    subject.refresh_from_db()
    assert Vote.objects.filter(subject=subject).count() == N_THREADS
    assert subject.vote_count == N_THREADS
    assert subject.status == Subject.RETIRED
    assert len(retired_now) == 1  # exactly one vote retired it
    assert Vote.objects.filter(subject=subject, subject_was_retired=True).count() == N_THREADS - 7
