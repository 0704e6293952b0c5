"""Scientist pages: volunteer skill table, review queue with retire/unretire, retirement settings."""

import json
import uuid

import pytest
from django.urls import reverse

from core.models import Participant, ProjectMembership, Subject, Workflow
from labeling.models import ParticipantSkill
from labeling.selection import ticket_for
from labeling.services import record_vote

pytestmark = pytest.mark.django_db


def url(workflow, name, *extra):
    return reverse(f"labeling:{name}", args=[workflow.project.slug, workflow.slug, *extra])


def new_subject(workflow, name, **kwargs):
    return Subject.objects.create(project=workflow.project, workflow=workflow, external_id=name, **kwargs)


@pytest.fixture
def member(django_user_model, project):
    def make(role, name=None):
        user = django_user_model.objects.create_user(name or role, password="pw-123456789")
        if role:
            ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


def test_volunteer_table_is_pseudonymous_with_skill_and_gold_accuracy(client, owner, workflow):
    workflow.retirement_limit = 100
    workflow.save()
    golds = [new_subject(workflow, f"g{i}", gold_label="real") for i in range(4)]
    volunteer = Participant.objects.create(kind=Participant.WORKER, external_id="PROLIFIC-SECRET-1")
    for s, answer in zip(golds, ["real", "real", "real", "bogus"], strict=True):
        record_vote(
            workflow=workflow,
            subject_id=s.pk,
            participant=volunteer,
            answer=answer,
            idempotency_key=uuid.uuid4(),
            ticket=ticket_for(workflow, s, volunteer),
        )
    client.force_login(owner)
    html = client.get(url(workflow, "crowd_volunteers")).content.decode()
    assert workflow.project.pseudonym(volunteer.pk) in html
    assert "PROLIFIC-SECRET-1" not in html
    skill = ParticipantSkill.objects.get(participant=volunteer)
    row = html[html.index(workflow.project.pseudonym(volunteer.pk)) :].split("</tr>")[0]
    assert "<td>4</td><td>4</td>" in row and "75%" in row  # votes, gold answers, gold accuracy
    assert f"{skill.p_l:.3f}" in row


def test_recompute_button_runs_dawid_skene_after_commit(
    client, owner, workflow, django_capture_on_commit_callbacks
):
    s = new_subject(workflow, "a")
    p = Participant.objects.create(kind=Participant.ANONYMOUS)
    record_vote(
        workflow=workflow,
        subject_id=s.pk,
        participant=p,
        answer="real",
        idempotency_key=uuid.uuid4(),
        ticket=ticket_for(workflow, s, p),
    )
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        resp = client.post(url(workflow, "crowd_recompute"))
    assert resp.status_code == 302 and len(callbacks) == 1
    assert ParticipantSkill.objects.get(participant=p).confusion  # the DS confusion matrix is stored
    html = client.get(url(workflow, "crowd_volunteers")).content.decode()
    skill = ParticipantSkill.objects.get(participant=p)
    assert f"{skill.confusion[1][1]:.3f}" in html


def test_review_queue_lists_undecided_and_owner_unretires(client, owner, workflow):
    waiting = new_subject(
        workflow,
        "ZTF-wait",
        status=Subject.RETIRED,
        needs_review=True,
        vote_count=20,
        retired_reason="undecided",
    )
    new_subject(workflow, "ZTF-fine")
    client.force_login(owner)
    html = client.get(url(workflow, "crowd_review")).content.decode()
    queue = html[html.index('data-testid="review-queue"') : html.index("</table>")]
    assert "ZTF-wait" in queue and "ZTF-fine" not in queue
    client.post(url(workflow, "crowd_unretire", waiting.pk))
    waiting.refresh_from_db()
    assert waiting.status == Subject.ACTIVE and not waiting.needs_review


def test_owner_retires_and_unretires_by_external_id(client, owner, workflow):
    s = new_subject(workflow, "ZTF-x")
    client.force_login(owner)
    client.post(url(workflow, "crowd_retire_by_id"), {"external_id": "ZTF-x"})
    s.refresh_from_db()
    assert s.is_retired and s.retired_reason.startswith("manual")
    client.post(url(workflow, "crowd_unretire_by_id"), {"external_id": "ZTF-x"})
    s.refresh_from_db()
    assert not s.is_retired
    resp = client.post(url(workflow, "crowd_retire_by_id"), {"external_id": "nope"}, follow=True)
    assert "No subject &#x27;nope&#x27; in this workflow." in resp.content.decode()


def test_retirement_settings_save_and_reevaluate_after_commit(
    client, owner, workflow, django_capture_on_commit_callbacks
):
    decided = new_subject(workflow, "d", vote_count=5, p_real=0.999, answer_counts={"real": 5})
    open_one = new_subject(workflow, "o", vote_count=5, p_real=0.6, answer_counts={"real": 3, "bogus": 2})
    client.force_login(owner)
    assert 'name="retirement_rule"' in client.get(url(workflow, "crowd_retirement")).content.decode()
    form = {
        "retirement_rule": "swap",
        "retirement_limit": 50,
        "min_votes": 3,
        "max_votes": 30,
        "swap_prior": 0.3,
        "swap_p_low": 0.02,
        "swap_p_high": 0.98,
        "consensus_fraction": 0.9,
        "gold_schedule": json.dumps([[10, 0.5], [None, 0.05]]),
    }
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        resp = client.post(url(workflow, "crowd_retirement"), form)
    assert resp.status_code == 302 and len(callbacks) == 1
    workflow.refresh_from_db()
    assert (workflow.retirement_rule, workflow.swap_prior, workflow.gold_schedule) == (
        "swap",
        0.3,
        [[10, 0.5], [None, 0.05]],
    )
    decided.refresh_from_db()
    open_one.refresh_from_db()
    assert decided.is_retired and decided.retired_reason.startswith("swap: real")
    assert not open_one.is_retired


@pytest.mark.parametrize(
    "change, message",
    [
        ({"swap_p_low": 0.6}, "0 &lt; P low &lt; prior &lt; P high &lt; 1"),
        ({"min_votes": 40}, "at least the minimum number of votes"),
        ({"consensus_fraction": 0.4}, "Between 0.5"),
        (
            {"gold_schedule": "[[20, 0.4], [10, 0.3], [null, 0.1]]"},
            "limits must be whole numbers that increase",
        ),
        ({"gold_schedule": "[[20, 1.5], [null, 0.1]]"}, "share must be a number from 0 to 1"),
        ({"gold_schedule": "not json"}, "Not valid JSON"),
    ],
)
def test_retirement_settings_reject_bad_values_and_change_nothing(client, owner, workflow, change, message):
    client.force_login(owner)
    form = {
        "retirement_rule": "consensus",
        "retirement_limit": 5,
        "min_votes": 2,
        "max_votes": 20,
        "swap_prior": 0.5,
        "swap_p_low": 0.01,
        "swap_p_high": 0.99,
        "consensus_fraction": 0.8,
        "gold_schedule": "[[20, 0.4], [null, 0.1]]",
        **change,
    }
    resp = client.post(url(workflow, "crowd_retirement"), form)
    assert resp.status_code == 400 and message in resp.content.decode()
    assert Workflow.objects.get(pk=workflow.pk).retirement_rule == "count"


def test_permissions(client, workflow, member):
    s = new_subject(workflow, "a")
    owner_only = [("crowd_retirement", ()), ("crowd_retire", (s.pk,)), ("crowd_recompute", ())]
    viewer = member("viewer")
    client.force_login(viewer)
    assert client.get(url(workflow, "crowd_volunteers")).status_code == 200
    assert client.get(url(workflow, "crowd_review")).status_code == 200
    for name, extra in owner_only:
        assert client.post(url(workflow, name, *extra)).status_code == 403
    client.force_login(member("expert"))
    assert client.get(url(workflow, "crowd_review")).status_code == 200
    assert client.get(url(workflow, "crowd_volunteers")).status_code == 403
    client.force_login(member(None, "stranger"))
    for name in ("crowd_volunteers", "crowd_review", "crowd_retirement", "crowd_gold"):
        assert client.get(url(workflow, name)).status_code == 404
    for name, extra in owner_only:
        assert client.post(url(workflow, name, *extra)).status_code == 404
    s.refresh_from_db()
    assert not s.is_retired


def test_dashboard_links_to_the_crowd_pages(client, owner, workflow):
    client.force_login(owner)
    html = client.get(reverse("labeling:project_dashboard", args=[workflow.project.slug])).content.decode()
    for name in ("crowd_gold", "crowd_volunteers", "crowd_review", "crowd_retirement"):
        assert url(workflow, name) in html
