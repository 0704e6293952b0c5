"""Follow-up questions ("What kind?" after an answer): the rules (core.followups), the builder's page
and API, the vote through the page, the API and a task link, the refusals, replays and gold feedback."""

import re
import uuid

import pytest
from django.urls import reverse

from core import followups
from core.models import Participant, Project, Subject, Workflow
from labeling.models import Vote
from labeling.services import VoteError, record_vote
from panels import services as tasklinks
from tests import tasklinks_support as panel

pytestmark = pytest.mark.django_db

ANSWERS = [
    {"key": "real", "label": "Real", "shortcut": "R", "counts_as": "real"},
    {"key": "bogus", "label": "Bogus", "shortcut": "B", "counts_as": "bogus"},
]
# Small on purpose: one type with a field-guide thumbnail (rendering each example costs time).
BOGUS_TYPES = [
    {"key": "cosmic_ray", "label": "Cosmic ray", "shortcut": "C", "guide": "cosmic_ray"},
    {"key": "streak", "label": "Satellite streak"},
]
QUESTION = {"answer": "bogus", "question": "What kind of bogus?", "mode": "optional", "types": BOGUS_TYPES}


@pytest.fixture
def asking(workflow):
    """The conftest workflow, asking "What kind?" after bogus (optional)."""
    workflow.followups = followups.validate([QUESTION], workflow.answers)
    workflow.save(update_fields=["followups"])
    return workflow


def vote(workflow, subject, answer, followup="", participant=None, key=None, **kw):
    return record_vote(
        workflow=workflow,
        subject_id=subject.pk,
        participant=participant or Participant.objects.create(kind="anonymous"),
        answer=answer,
        followup=followup,
        idempotency_key=key or uuid.uuid4(),
        trusted=True,
        **kw,
    )


def db_subjects(workflow, n, **fields):
    return [
        Subject.objects.create(
            project=workflow.project, workflow=workflow, external_id=f"f{i}", random_key=i / (n + 1), **fields
        )
        for i in range(n)
    ]


# --- Rules --------------------------------------------------------------------------------------


def test_defaults_validate_and_fill_labels():
    cleaned = followups.validate(followups.default_followups(ANSWERS), ANSWERS)
    assert [(f["answer"], f["mode"]) for f in cleaned] == [("bogus", "optional"), ("real", "off")]
    assert [t["key"] for t in cleaned[0]["types"]] == list(followups.DEFAULT_BOGUS_TYPES)
    assert cleaned[0]["types"][0]["guide"] == "masked_bright_star"
    bare = followups.validate([{"answer": "Bogus", "types": ["ghost", "my_type"]}], ANSWERS)
    assert bare[0]["types"][0]["label"] == "Ghost / dementor" and bare[0]["types"][1]["label"] == "My type"
    assert bare[0]["question"] == followups.DEFAULT_QUESTION and bare[0]["mode"] == "optional"


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"answer": "maybe", "types": ["a"]}], "not an answer of this workflow"),
        ([{"answer": "bogus", "types": ["a"]}, {"answer": "bogus", "types": ["b"]}], "two follow-up"),
        ([{"answer": "bogus", "types": []}], "at least one type"),
        ([{"answer": "bogus", "types": ["Bad Key!"]}], "lower-case"),
        ([{"answer": "bogus", "types": ["not_sure"]}], "reserved"),
        ([{"answer": "bogus", "types": ["a"]}, {"answer": "real", "types": ["a"]}], "used twice"),
        ([{"answer": "bogus", "types": [f"t{i}" for i in range(10)]}], "at most 9"),
        ([{"answer": "bogus", "types": [{"key": "a", "shortcut": "B"}]}], "the answer 'Bogus'"),
        ([{"answer": "bogus", "types": [{"key": "a", "shortcut": "F"}]}], "F fast mode"),
        (
            [{"answer": "bogus", "types": [{"key": "a", "shortcut": "X"}, {"key": "b", "shortcut": "x"}]}],
            "both use",
        ),
        ([{"answer": "bogus", "mode": "sometimes", "types": ["a"]}], "mode must be"),
        ({"answer": "bogus"}, "must be a list"),
    ],
)
def test_bad_followups_are_refused_with_a_reason(raw, message):
    with pytest.raises(followups.FollowupError, match=message):
        followups.validate(raw, ANSWERS)


def test_check_edit_allows_renaming_and_refuses_removing_or_moving_used_types():
    old = followups.validate([QUESTION], ANSWERS)
    renamed = followups.validate(
        [{**QUESTION, "types": [{**BOGUS_TYPES[0], "label": "CR"}, BOGUS_TYPES[1]]}], ANSWERS
    )
    followups.check_edit(old, renamed, {"cosmic_ray", "streak"})
    followups.check_edit(old, [{**old[0], "mode": "off"}], {"cosmic_ray"})  # turning it off keeps the types
    followups.check_edit(
        old, followups.validate([{**QUESTION, "types": BOGUS_TYPES[:1]}], ANSWERS), {"cosmic_ray"}
    )
    with pytest.raises(followups.FollowupError, match="streak cannot be removed"):
        followups.check_edit(
            old, followups.validate([{**QUESTION, "types": BOGUS_TYPES[:1]}], ANSWERS), {"streak"}
        )
    moved = followups.validate(
        [{**QUESTION, "types": BOGUS_TYPES[:1]}, {"answer": "real", "types": ["streak"]}], ANSWERS
    )
    with pytest.raises(followups.FollowupError, match="cannot move"):
        followups.check_edit(old, moved, {"streak"})


def test_page_keys_are_digits_letters_and_zero():
    questions = followups.page_questions(followups.validate([QUESTION], ANSWERS), [{"keys": ["R", "1"]}])
    (q,) = questions
    assert [t["keys"] for t in q["types"]] == [["C", "1"], ["2"], ["0"]]
    assert q["types"][-1]["key"] == followups.NOT_SURE


# --- Builder: page and API ------------------------------------------------------------------------


def followups_url(workflow):
    return reverse("core:workflow_followups", args=[workflow.project.slug, workflow.slug])


def block_data(answer, mode="optional", question="", types=""):
    return {f"f-{answer}-mode": mode, f"f-{answer}-question": question, f"f-{answer}-types": types}


def test_builder_page_adds_the_field_guide_types_then_saves(client, owner, workflow):
    client.force_login(owner)
    page = client.get(followups_url(workflow))
    assert page.status_code == 200 and "After “Bogus”" in page.content.decode()
    assert 'for="f-bogus-types"' in page.content.decode()  # every field has its label
    filled = client.post(followups_url(workflow), {**block_data("bogus", "none"), **block_data("real", "none"),
                                                    "defaults": "bogus"})  # fmt: skip
    html = filled.content.decode()
    assert filled.status_code == 200 and "cosmic_ray | Cosmic ray |  | cosmic_ray" in html
    workflow.refresh_from_db()
    assert workflow.followups == []  # the button fills the form, it saves nothing
    types = re.search(r'name="f-bogus-types"[^>]*>([^<]*)<', html).group(1)
    saved = client.post(followups_url(workflow), {**block_data("bogus", "required", "Which kind?", types),
                                                   **block_data("real", "none")})  # fmt: skip
    assert saved.status_code == 302
    workflow.refresh_from_db()
    (f,) = workflow.followups
    assert f["mode"] == "required" and f["question"] == "Which kind?" and len(f["types"]) == 6
    detail = client.get(saved.url).content.decode()
    assert "“Which kind?” (always asked)" in detail and "Cosmic ray <code>cosmic_ray</code>" in detail


def test_builder_page_refuses_bad_types_and_removing_used_ones(client, owner, asking):
    client.force_login(owner)
    bad = client.post(
        followups_url(asking), {**block_data("bogus", types="Nope Nope"), **block_data("real", "none")}
    )
    assert bad.status_code == 400 and "lower-case letters" in bad.content.decode()
    (subject,) = db_subjects(asking, 1)
    vote(asking, subject, "bogus", "streak")
    removed = client.post(
        followups_url(asking), {**block_data("bogus", types="cosmic_ray"), **block_data("real", "none")}
    )
    assert removed.status_code == 400 and "streak cannot be removed" in removed.content.decode()
    dropped = client.post(
        followups_url(asking), {**block_data("bogus", "none"), **block_data("real", "none")}
    )
    assert dropped.status_code == 400 and "turn its question off" in dropped.content.decode()
    renamed = client.post(
        followups_url(asking),
        {
            **block_data("bogus", "off", types="cosmic_ray\nstreak | Streak (satellite)"),
            **block_data("real", "none"),
        },
    )
    assert renamed.status_code == 302
    asking.refresh_from_db()
    assert followups.type_labels(asking.followups)["streak"] == "Streak (satellite)"
    assert asking.followups[0]["mode"] == "off"
    assert Vote.objects.get().followup == "streak"  # the old vote still reads, under the new label


def test_builder_page_is_for_writers_only(client, project, asking, django_user_model):
    from core.models import ProjectMembership

    url = followups_url(asking)
    rename = {**block_data("bogus", types="cosmic_ray\nstreak | By {who}"), **block_data("real", "none")}

    def post_as(who):
        return client.post(url, {k: v.format(who=who) for k, v in rename.items()})

    for role, status in (("scientist", 200), ("viewer", 403), ("expert", 403)):
        user = django_user_model.objects.create_user(f"m-{role}")
        ProjectMembership.objects.create(project=project, user=user, role=role)
        client.force_login(user)
        assert client.get(url).status_code == status, role
        assert post_as(role).status_code == (302 if status == 200 else status), role
    other = django_user_model.objects.create_user("other-owner")
    Project.objects.create(slug="theirs", name="Theirs", owner=other)
    client.force_login(other)
    assert client.get(url).status_code == 404 and post_as("rival").status_code == 404
    client.logout()
    assert client.get(url).status_code == 302 and post_as("anonymous").status_code == 302
    asking.refresh_from_db()
    assert followups.type_labels(asking.followups)["streak"] == "By scientist"  # nobody else changed it


def api_patch(client, workflow, body):
    url = reverse("api_workflow", args=[workflow.project.slug, workflow.pk])
    return client.patch(url, body, content_type="application/json")


def test_api_sets_renames_and_refuses_removing_used_types(client, owner, workflow):
    client.force_login(owner)
    resp = api_patch(client, workflow, {"followups": [QUESTION]})
    assert resp.status_code == 200, resp.content
    assert resp.json()["followups"][0]["types"][0]["shortcut"] == "C"
    bad = api_patch(client, workflow, {"followups": [{**QUESTION, "types": [{"key": "not_sure"}]}]})
    assert bad.status_code == 400 and "reserved" in str(bad.json()["followups"])
    (subject,) = db_subjects(workflow, 1)
    workflow.refresh_from_db()
    vote(workflow, subject, "bogus", "cosmic_ray")
    gone = api_patch(client, workflow, {"followups": [{**QUESTION, "types": BOGUS_TYPES[1:]}]})
    assert gone.status_code == 400 and "cosmic_ray cannot be removed" in str(gone.json()["followups"])
    renamed = [{**BOGUS_TYPES[0], "label": "Cosmic-ray hit"}, BOGUS_TYPES[1]]
    assert api_patch(client, workflow, {"followups": [{**QUESTION, "types": renamed}]}).status_code == 200
    create = client.post(
        reverse("api_workflows", args=[workflow.project.slug]),
        {"slug": "typed", "followups": followups.default_followups(ANSWERS)},
        content_type="application/json",
    )
    assert create.status_code == 201 and [f["mode"] for f in create.json()["followups"]] == [
        "optional",
        "off",
    ]


def test_removing_an_answer_takes_its_question_along(owner, project):
    from core import workflows

    three = [*ANSWERS, {"key": "artefact", "label": "Artefact", "counts_as": "bogus"}]
    wf, _ = workflows.create_workflow(
        project, "three", answers=three, followups=[{"answer": "artefact", "types": ["ghost"]}, QUESTION]
    )
    workflows.update_workflow(wf, answers=ANSWERS)
    assert [f["answer"] for f in wf.followups] == ["bogus"]
    with pytest.raises(workflows.BuilderError, match="not an answer"):
        workflows.update_workflow(wf, followups=[{"answer": "artefact", "types": ["ghost"]}])
    similar = Workflow.objects.create(project=project, slug="sim", name="Sim", kind=Workflow.SIMILARITY)
    with pytest.raises(workflows.BuilderError, match="no answers to follow up"):
        workflows.update_workflow(similar, followups=[QUESTION])


# --- The vote: service, page, API, task link --------------------------------------------------------


@pytest.mark.parametrize(
    "answer, followup, message",
    [
        ("bogus", "hot_pixel", "not a type of this question"),
        ("skip", "cosmic_ray", "skip has no follow-up"),
        ("real", "cosmic_ray", "has no follow-up question"),
        ("", "cosmic_ray", "needs a main answer"),
    ],
)
def test_followups_that_do_not_fit_are_refused(asking, answer, followup, message):
    (subject,) = db_subjects(asking, 1)
    with pytest.raises(VoteError, match=message):
        vote(asking, subject, answer, followup)
    assert not Vote.objects.exists()


def test_an_off_question_takes_no_answer_and_not_sure_is_always_allowed(asking):
    a, b = db_subjects(asking, 2)
    assert vote(asking, a, "bogus", "NOT_SURE").vote.followup == "not_sure"
    assert vote(asking, b, "bogus").vote.followup == ""  # passed
    asking.followups = [{**asking.followups[0], "mode": "off"}]
    asking.save(update_fields=["followups"])
    with pytest.raises(VoteError, match="no follow-up question"):
        vote(asking, b, "bogus", "streak")


def test_replay_returns_the_stored_vote_and_its_followup(asking):
    (subject,) = db_subjects(asking, 1)
    who, key = Participant.objects.create(kind="anonymous"), uuid.uuid4()
    first = vote(asking, subject, "bogus", "cosmic_ray", participant=who, key=key)
    again = vote(asking, subject, "bogus", "cosmic_ray", participant=who, key=key)
    other = vote(asking, subject, "bogus", "streak", participant=who, key=key)  # a retry cannot change it
    assert first.created and not again.created and not other.created
    assert again.vote.pk == other.vote.pk == first.vote.pk and other.vote.followup == "cosmic_ray"
    assert Vote.objects.count() == 1
    subject.refresh_from_db()
    assert subject.vote_count == 1


def classify_url(workflow):
    return reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])


def served_form(html):
    return {n: re.search(rf'name="{n}" value="([^"]*)"', html).group(1) for n in ("subject", "ticket", "key")}


def test_page_asks_and_stores_the_followup(client, asking, make_subjects):
    make_subjects(2)
    html = client.get(classify_url(asking)).content.decode()
    assert 'data-followup="followup-bogus"' in html and 'data-followup="followup-real"' not in html
    assert "What kind of bogus?" in html and 'data-keys="C 1"' in html and 'data-keys="0"' in html
    assert "fieldguide/" in html and "cosmic_ray-difference.png" in html  # the type's thumbnail
    assert "data-followup-pass" in html and "data-fast-mode" in html  # optional: pass and fast mode
    url = reverse("labeling:submit_vote", args=[asking.project.slug, asking.slug])
    first = served_form(html)
    reply = client.post(url, {**first, "answer": "bogus", "followup": "streak"}, HTTP_HX_REQUEST="true")
    assert reply.status_code == 200
    assert Vote.objects.get(subject_id=first["subject"]).followup == "streak"
    second = served_form(reply.content.decode())
    refused = client.post(url, {**second, "answer": "bogus", "followup": "unicorn"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and "not a type of this question" in refused.content.decode()
    assert Vote.objects.count() == 1


def test_required_question_has_no_pass_and_no_fast_mode(client, asking, make_subjects):
    asking.followups = [{**asking.followups[0], "mode": "required"}]
    asking.save(update_fields=["followups"])
    make_subjects(1)
    html = client.get(classify_url(asking)).content.decode()
    assert 'data-mode="required"' in html
    assert "data-followup-pass" not in html and "data-fast-mode" not in html


def test_api_serves_the_questions_and_takes_the_followup(client, asking, make_subjects):
    (subject,) = make_subjects(1)
    served = client.get(f"/api/projects/{asking.project.slug}/workflows/{asking.pk}/next/").json()
    assert served["followups"][0]["answer"] == "bogus"
    assert [t["key"] for t in served["followups"][0]["types"]] == ["cosmic_ray", "streak"]
    body = {"workflow": asking.pk, "subject": subject.pk, "answer": "bogus", "ticket": served["ticket"]}
    bad = client.post("/api/votes/", {**body, "followup": "ghost", "idempotency_key": str(uuid.uuid4())},
                      content_type="application/json")  # fmt: skip
    assert bad.status_code == 400 and "not a type" in bad.json()["detail"]
    ok = client.post("/api/votes/", {**body, "followup": "cosmic_ray", "idempotency_key": str(uuid.uuid4())},
                     content_type="application/json")  # fmt: skip
    assert ok.status_code == 201 and ok.json()["followup"] == "cosmic_ray"
    client.force_login(asking.project.owner)
    listed = client.get(reverse("api_votes", args=[asking.project.slug]))
    assert listed.status_code == 200 and listed.json()["results"][0]["followup"] == "cosmic_ray"


def test_task_link_page_asks_and_stores_the_followup(client, owner, asking):
    panel.make_subjects(asking, n_ordinary=3, n_gold=0)
    batch = panel.make_batch(asking, owner, tasks_per_assignment=2, gold_share=0)
    assert panel.start(client, batch, "worker-1").status_code == 302
    assignment = batch.assignments.get()
    urls = panel.urls_of(assignment, batch)
    html = client.get(urls["task"]).content.decode()
    assert 'data-followup="followup-bogus"' in html
    subject_id, key = panel.task_form(html)
    bad = client.post(urls["vote"], {"subject": subject_id, "answer": "real", "followup": "streak", "key": key},
                      **panel.HTMX)  # fmt: skip
    assert "has no follow-up question" in bad.content.decode() and not Vote.objects.exists()
    client.post(urls["vote"], {"subject": subject_id, "answer": "bogus", "followup": "streak", "key": key},
                **panel.HTMX)  # fmt: skip
    stored = Vote.objects.get()
    assert (stored.source, stored.followup, stored.assignment_id) == ("panel", "streak", assignment.pk)
    assert tasklinks.progress(assignment).done == 1


def test_gold_feedback_names_the_experts_type(asking):
    asking.followups = followups.validate(
        [{**QUESTION, "types": [*BOGUS_TYPES, {"key": "satellite_streak", "label": "A satellite"}]}],
        asking.answers,
    )
    asking.save(update_fields=["followups"])
    a, b, c = db_subjects(asking, 3, gold_label="bogus", gold_subtype="satellite_streak")
    right = vote(asking, a, "bogus", "satellite_streak").feedback
    assert right["type_label"] == "A satellite" == right["subtype_label"] and right["type_correct"] is True
    wrong = vote(asking, b, "bogus", "cosmic_ray").feedback
    assert wrong["type_correct"] is False and wrong["followup_label"] == "Cosmic ray"
    unsure = vote(asking, c, "bogus", "not_sure").feedback
    assert unsure["type_correct"] is None and unsure["followup_label"] == followups.NOT_SURE_LABEL


def test_imported_votes_may_carry_a_followup_column(asking):
    from labeling.imports import import_votes

    db_subjects(asking, 3)
    text = "subject_external_id,participant,answer,followup\nf0,ann,bogus,streak\nf1,ann,bogus,\nf2,ann,bogus,ghost\n"
    _, report = import_votes(asking, text)
    assert report.imported == 2 and "not a type of this question" in report.bad_rows[0][1]
    assert dict(Vote.objects.values_list("subject__external_id", "followup")) == {"f0": "streak", "f1": ""}


def test_gold_feedback_on_the_page_says_whether_the_type_matched(client, asking):
    (subject,) = db_subjects(asking, 1, gold_label="bogus", gold_subtype="cosmic_ray")
    asking.gold_schedule = [[None, 1.0]]
    asking.save(update_fields=["gold_schedule"])
    html = client.get(classify_url(asking)).content.decode()
    assert served_form(html)["subject"] == str(subject.pk)
    url = reverse("labeling:submit_vote", args=[asking.project.slug, asking.slug])
    reply = client.post(
        url, {**served_form(html), "answer": "bogus", "followup": "streak"}, HTTP_HX_REQUEST="true"
    )
    text = reply.content.decode()
    assert "the experts said <strong>bogus</strong> — Cosmic ray" in text
    assert "You said Satellite streak." in text
