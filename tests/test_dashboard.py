"""The scientist's project dashboard."""

import uuid

import pytest
from django.urls import reverse

from core.models import Participant
from labeling.services import record_vote

pytestmark = pytest.mark.django_db


def test_dashboard_counts_votes_and_subjects(client, owner, workflow, make_subjects):
    subjects = make_subjects(3)
    for s in subjects[:2]:
        record_vote(
            workflow=workflow,
            subject_id=s.pk,
            participant=Participant.objects.create(kind=Participant.ANONYMOUS),
            answer="real",
            idempotency_key=uuid.uuid4(),
            trusted=True,
        )
    client.force_login(owner)
    html = client.get(reverse("labeling:project_dashboard", args=[workflow.project.slug])).content.decode()
    assert 'data-testid="n-subjects">3<' in html
    assert 'data-testid="n-votes">2<' in html
    assert subjects[0].external_id in html  # latest votes list


def test_dashboard_htmx_refresh_returns_the_stats_partial(client, owner, workflow):
    client.force_login(owner)
    html = client.get(
        reverse("labeling:project_dashboard", args=[workflow.project.slug]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert html.lstrip().startswith('<div id="stats"')


def test_dashboard_is_hidden_from_strangers(client, workflow, django_user_model):
    url = reverse("labeling:project_dashboard", args=[workflow.project.slug])
    assert client.get(url).status_code == 302  # anonymous → login
    client.force_login(django_user_model.objects.create_user("stranger"))
    assert client.get(url).status_code == 404
