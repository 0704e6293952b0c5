"""Anonymous volunteers keep their classifications when they sign up or log in."""

import re
import uuid

import pytest
from django.urls import reverse

from core.models import Participant
from labeling.models import Vote

pytestmark = pytest.mark.django_db


def vote_anonymously(client, workflow, n):
    url = reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])
    vote_url = reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])
    html = client.get(url).content.decode()
    for _ in range(n):
        sid = re.search(r'name="subject" value="(\d+)"', html).group(1)
        ticket = re.search(r'name="ticket" value="([^"]+)"', html).group(1)
        html = client.post(
            vote_url,
            {"subject": sid, "ticket": ticket, "key": str(uuid.uuid4()), "answer": "real"},
            HTTP_HX_REQUEST="true",
        ).content.decode()


def test_signup_merges_anonymous_votes(client, workflow, make_subjects):
    make_subjects(3)
    vote_anonymously(client, workflow, 2)
    resp = client.post(
        reverse("core:signup"),
        {"username": "vera", "password1": "a-long-pass-phrase-42", "password2": "a-long-pass-phrase-42"},
    )
    assert resp.status_code == 302
    user_participant = Participant.objects.get(user__username="vera")
    assert Vote.objects.filter(participant=user_participant).count() == 2
    assert Participant.objects.get(kind=Participant.ANONYMOUS).merged_into == user_participant
    # The counter follows the person into the account.
    html = client.get(
        reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])
    ).content.decode()
    assert 'data-testid="counter">2<' in html


def test_login_merges_but_never_duplicates(client, workflow, make_subjects, django_user_model):
    subjects = make_subjects(2)
    user = django_user_model.objects.create_user("ada", password="pw-ada-123456")
    mine = Participant.objects.create(kind=Participant.USER, user=user)
    from labeling.services import record_vote

    record_vote(
        workflow=workflow,
        subject_id=subjects[0].pk,
        participant=mine,
        answer="real",
        idempotency_key=uuid.uuid4(),
        trusted=True,
    )
    anon = Participant.objects.create(kind=Participant.ANONYMOUS)
    for s in subjects:
        record_vote(
            workflow=workflow,
            subject_id=s.pk,
            participant=anon,
            answer="bogus",
            idempotency_key=uuid.uuid4(),
            trusted=True,
        )
    session = client.session
    session["participant_id"] = anon.pk
    session.save()
    client.post(reverse("login"), {"username": "ada", "password": "pw-ada-123456"})
    assert Vote.objects.filter(participant=mine).count() == 2  # one moved, the clash stayed behind
    assert Vote.objects.count() == 3  # nothing lost
