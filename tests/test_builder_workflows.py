"""The workflow builder: creating and editing workflows (pages, API, CLI), their settings, tutorial and
field guide, the three-answer workflow end to end, the launch checklist and preview."""

import re
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core import answers as answer_rules
from core import workflows
from core.models import Project, ProjectMembership, Subject, SubjectSet, Workflow
from labeling import labels, recompute
from labeling.models import ParticipantSkill, Vote

pytestmark = pytest.mark.django_db

THREE = [
    {"key": "real", "label": "Real", "shortcut": "R", "help": "", "counts_as": "real"},
    {"key": "bogus", "label": "Bogus", "shortcut": "B", "help": "", "counts_as": "bogus"},
    {"key": "not_sure", "label": "Not sure", "shortcut": "N", "help": "Can't tell", "counts_as": ""},
]


def u(name, project, *args):
    return reverse(f"core:{name}", args=[project.slug, *args])


def answer_rows(rows, prefix="answers", extra=0):
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows) + extra),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"{prefix}-{i}-{key}"] = value
    return data


def gold_rows(rows):
    data = {"gold-TOTAL_FORMS": str(len(rows)), "gold-INITIAL_FORMS": "0", "gold-MIN_NUM_FORMS": "0",
            "gold-MAX_NUM_FORMS": "1000"}  # fmt: skip
    for i, (limit, share) in enumerate(rows):
        data[f"gold-{i}-limit"] = "" if limit is None else str(limit)
        data[f"gold-{i}-share"] = str(share)
    return data


@pytest.fixture
def member(django_user_model, project):
    def make(role):
        user = django_user_model.objects.create_user(role, password="pass-12345-word")
        ProjectMembership.objects.create(project=project, user=user, role=role)
        return user

    return make


# --- Answers: rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"key": "real", "counts_as": "real"}], "at least two answers"),
        ([{"key": "real", "shortcut": "R", "counts_as": "real"}, {"key": "bogus", "shortcut": "r", "counts_as": "bogus"}],
         "both use the keyboard key R"),
        ([{"key": "real", "counts_as": "real"}, {"key": "real", "counts_as": "bogus"}], "keys must be unique"),
        ([{"key": "a", "counts_as": "real"}, {"key": "b", "counts_as": "real"}], "one as bogus"),
        ([{"key": "real", "shortcut": "S", "counts_as": "real"}, {"key": "bogus", "counts_as": "bogus"}], "taken by Skip"),
        ([{"key": "skip"}, {"key": "bogus", "counts_as": "bogus"}], "reserved"),
        ([{"key": "Real Thing", "counts_as": "real"}, {"key": "bogus", "counts_as": "bogus"}], "lower-case"),
    ],
)  # fmt: skip
def test_answer_rules_refuse_with_a_reason(raw, message):
    with pytest.raises(answer_rules.AnswerError, match=message):
        answer_rules.validate(raw)


def test_old_string_answers_still_read_as_objects(workflow):
    workflow.answers = ["real", "bogus"]
    assert workflow.answer_keys == ["real", "bogus"]
    assert workflow.answer_class("real") == "real" and workflow.answer_class("bogus") == "bogus"
    assert [b["keys"] for b in answer_rules.buttons(workflow.answers)] == [["R", "1"], ["B", "2"], ["S", "3"]]


# --- Pages: create and edit ---------------------------------------------------------------------


def test_owner_creates_a_three_answer_workflow_on_the_page(client, owner, project):
    client.force_login(owner)
    assert client.get(u("workflow_new", project)).status_code == 200
    data = {"name": "Real, bogus or unsure", "slug": "", "kind": "real_bogus", "question": "Real?",
            "comparison_source": "pool", "n_candidates": "15", **answer_rows(THREE, extra=2)}  # fmt: skip
    resp = client.post(u("workflow_new", project), data)
    assert resp.status_code == 302
    workflow = Workflow.objects.get(project=project, slug="real-bogus-or-unsure")
    assert workflow.answer_keys == ["real", "bogus", "not_sure"]
    assert workflow.answer_class("not_sure") == ""
    assert not workflow.is_active  # a draft until launched
    assert workflow.tutorial and len(workflow.field_guide) >= 9  # the built-in ZTF guide by default
    assert SubjectSet.objects.filter(project=project, name="default", workflows=workflow).exists()


@pytest.mark.parametrize(
    "rows, message",
    [
        (THREE[:1], "at least two answers"),
        ([THREE[0], {**THREE[1], "shortcut": "R"}], "both use the keyboard key R"),
    ],
)
def test_bad_answers_are_form_errors(client, owner, project, rows, message):
    client.force_login(owner)
    data = {"name": "W", "slug": "w", "kind": "real_bogus", "comparison_source": "pool", "n_candidates": "15",
            **answer_rules_rows(rows)}  # fmt: skip
    resp = client.post(u("workflow_new", project), data)
    assert resp.status_code == 400 and message in resp.content.decode()
    assert not Workflow.objects.filter(project=project, slug="w").exists()


def answer_rules_rows(rows):
    return answer_rows(rows)


def test_similarity_workflow_on_the_page_and_bad_candidates(client, owner, project):
    client.force_login(owner)
    base = {"name": "Similar", "slug": "similar", "kind": "similarity", "comparison_source": "pool",
            **answer_rows([])}  # fmt: skip
    resp = client.post(u("workflow_new", project), {**base, "n_candidates": "99"})
    assert resp.status_code == 400 and "2 to 15 candidate" in resp.content.decode()
    resp = client.post(u("workflow_new", project), {**base, "n_candidates": "12"})
    assert resp.status_code == 302
    workflow = Workflow.objects.get(slug="similar")
    assert workflow.kind == Workflow.SIMILARITY and workflow.n_candidates == 12 and workflow.answers == []
    resp = client.post(u("workflow_new", project), {**base, "n_candidates": "12"})
    assert resp.status_code == 400 and "already has a workflow" in resp.content.decode()
    resp = client.post(u("workflow_new", project), {**base, "slug": "upload", "n_candidates": "12"})
    assert resp.status_code == 400 and "one of the project&#x27;s pages" in resp.content.decode()


def test_edit_keeps_answer_keys_that_have_votes(client, owner, workflow, make_subjects):
    from core.models import Participant
    from labeling.services import record_vote

    (subject,) = make_subjects(1)
    record_vote(workflow=workflow, subject_id=subject.pk, participant=Participant.objects.create(kind="anonymous"),
                answer="bogus", idempotency_key=uuid.uuid4(), trusted=True)  # fmt: skip
    client.force_login(owner)
    url = u("workflow_edit", workflow.project, workflow.slug)
    assert client.get(url).status_code == 200
    renamed = [{**THREE[0], "label": "Genuine"}, {**THREE[2], "counts_as": "bogus"}]
    resp = client.post(url, {"name": "RB", "question": "Q", "comparison_source": "pool", "n_candidates": "15",
                             **answer_rows(renamed)})  # fmt: skip
    assert resp.status_code == 400 and "keep those keys" in resp.content.decode()
    relabelled = [{**THREE[0], "label": "Genuine"}, THREE[1], THREE[2]]
    resp = client.post(url, {"name": "RB", "question": "Q", "comparison_source": "pool", "n_candidates": "15",
                             **answer_rows(relabelled)})  # fmt: skip
    assert resp.status_code == 302
    workflow.refresh_from_db()
    assert workflow.answer_options[0]["label"] == "Genuine" and workflow.answer_keys[2] == "not_sure"


# --- Settings --------------------------------------------------------------------------------------


def settings_data(**changes):
    data = {"retirement_rule": "count", "retirement_limit": "4", "min_votes": "2", "max_votes": "20",
            "swap_prior": "0.5", "swap_p_low": "0.01", "swap_p_high": "0.99", "consensus_fraction": "0.8",
            "exploration_share": "0.1", "acquisition_strategy": "entropy", "train_every": "50",
            "model_input_size": "63", **gold_rows([(20, 0.4), (None, 0.1)])}  # fmt: skip
    data.update(changes)
    return data


def test_settings_page_saves_rule_and_gold_table(client, owner, workflow, django_capture_on_commit_callbacks):
    client.force_login(owner)
    url = u("workflow_settings", workflow.project, workflow.slug)
    html = client.get(url).content.decode()
    assert 'data-rule-section="count"' in html and "skyvote/builder.js" in html and "<script>" not in html
    with django_capture_on_commit_callbacks(execute=False):
        resp = client.post(url, settings_data(retirement_rule="consensus", consensus_fraction="0.7",
                                              **gold_rows([(10, 0.5), (30, 0.2), (None, 0.0)])))  # fmt: skip
    assert resp.status_code == 302
    workflow.refresh_from_db()
    assert workflow.retirement_rule == "consensus" and workflow.consensus_fraction == 0.7
    assert workflow.gold_schedule == [[10, 0.5], [30, 0.2], [None, 0.0]]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"retirement_limit": "0"}, "At least 1"),
        (gold_rows([(20, 0.4), (10, 0.3), (None, 0.1)]), "limits must be whole numbers that increase"),
        (gold_rows([(20, 1.5), (None, 0.1)]), "from 0 to 1"),
        (gold_rows([(20, 0.4), (40, 0.1)]), "does not add up"),
        ({"swap_p_low": "0.6"}, "SWAP needs"),
        ({"exploration_share": "2"}, "from 0 to 1"),
        ({"acquisition_strategy": "psychic"}, "Select a valid choice"),
        ({"model_input_size": "4"}, "From 16 to 256"),
    ],
)
def test_settings_page_refuses_bad_values(client, owner, workflow, changes, message):
    client.force_login(owner)
    before = (workflow.retirement_limit, workflow.gold_schedule)
    resp = client.post(u("workflow_settings", workflow.project, workflow.slug), settings_data(**changes))
    assert resp.status_code == 400 and message in resp.content.decode()
    workflow.refresh_from_db()
    assert (workflow.retirement_limit, workflow.gold_schedule) == before


# --- Tutorial and field guide ----------------------------------------------------------------------


def content_rows(prefix, rows):
    data = {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}  # fmt: skip
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"{prefix}-{i}-{key}"] = value
    return data


def test_tutorial_markdown_is_sanitised_and_shown_on_the_classify_page(
    client, owner, workflow, make_subjects
):
    (subject,) = make_subjects(1)
    client.force_login(owner)
    url = u("workflow_tutorial", workflow.project, workflow.slug)
    rows = [
        {"title": "Look", "text": "**Bold** <script>alert(1)</script> [x](javascript:alert(1))", "image": subject.external_id},
        {"title": "", "text": "Second", "image": "builtin:cosmic_ray"},
    ]  # fmt: skip
    resp = client.post(url, content_rows("tutorial", rows))
    assert resp.status_code == 302
    workflow.refresh_from_db()
    assert workflow.tutorial[0]["image"] == f"subject:{subject.pk}"
    html = client.get(
        reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])
    ).content.decode()
    assert "<strong>Bold</strong>" in html and "<script>alert" not in html and "javascript:" not in html
    assert 'class="tutorial-image"' in html


def test_tutorial_upload_and_bad_image_reference(client, owner, workflow):
    import io

    from PIL import Image

    client.force_login(owner)
    url = u("workflow_tutorial", workflow.project, workflow.slug)
    resp = client.post(url, content_rows("tutorial", [{"text": "x", "image": "subject:999999"}]))
    assert resp.status_code == 400 and "no subject" in resp.content.decode()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "example.png"
    resp = client.post(
        url, {**content_rows("tutorial", [{"text": "With a picture"}]), "tutorial-0-upload": buffer}
    )
    assert resp.status_code == 302
    workflow.refresh_from_db()
    ref = workflow.tutorial[0]["image"]
    assert ref.startswith("upload:workflow-content/")
    image_url = reverse(
        "core:workflow_content_image", args=[workflow.project.slug, workflow.slug, ref.rsplit("/", 1)[1]]
    )
    assert client.get(image_url).status_code == 200
    client.logout()
    assert client.get(image_url).status_code == 200  # a public live workflow's volunteers see it
    assert client.get(image_url.replace(".png", "x.png")).status_code == 404


def test_field_guide_entries_per_answer(client, owner, project):
    workflow, _ = workflows.create_workflow(project, "three", answers=THREE, is_active=True)
    client.force_login(owner)
    url = u("workflow_field_guide", project, workflow.slug)
    assert "Cosmic ray" in client.get(url).content.decode()  # the built-in guide is the default
    rows = [{"answer": "not_sure", "subtype": "", "title": "Faint blobs", "text": "*Too faint* to tell", "image": ""},
            {"answer": "real", "subtype": "variable_star", "title": "Variable", "text": "", "image": "builtin:variable_star"}]  # fmt: skip
    assert client.post(url, content_rows("field_guide", rows)).status_code == 302
    html = client.get(reverse("labeling:field_guide", args=[project.slug])).content.decode()
    assert "Faint blobs" in html and "<em>Too faint</em>" in html and "Not sure" in html
    bad = [{**rows[0], "answer": "maybe"}]
    resp = client.post(url, content_rows("field_guide", bad))
    assert resp.status_code == 400 and "Select a valid choice" in resp.content.decode()


# --- The three-answer workflow end to end ----------------------------------------------------------


def served_form(html):
    return {n: re.search(rf'name="{n}" value="([^"]*)"', html).group(1) for n in ("subject", "ticket", "key")}


def test_three_answers_end_to_end(client, project, make_subjects):
    workflow, _ = workflows.create_workflow(
        project, "three", answers=THREE, is_active=True, retirement_rule="consensus", min_votes=3, max_votes=10,
        consensus_fraction=0.6,
    )  # fmt: skip
    subjects = make_subjects(4, wf=workflow)
    url = reverse("labeling:classify", args=[project.slug, workflow.slug])
    html = client.get(url).content.decode()
    # The page follows the configured answers and keys: position digits, and S / 4 for skip.
    assert re.search(r'value="not_sure"[^>]*data-keys="N 3"', html)
    assert 'data-keys="S 4"' in html and "Not sure <kbd>N</kbd>" in html and 'title="Can&#x27;t tell"' in html
    vote_url = reverse("labeling:submit_vote", args=[project.slug, workflow.slug])
    for answer in ("not_sure", "real", "real"):
        html = client.post(
            vote_url, {**served_form(html), "answer": answer}, HTTP_HX_REQUEST="true"
        ).content.decode()
    votes = {v.subject_id: v.answer for v in Vote.objects.filter(workflow=workflow)}
    assert sorted(votes.values()) == ["not_sure", "real", "real"]

    # Aggregation: "not sure" moves no belief; the others do.
    unsure = Subject.objects.get(pk=next(s for s, a in votes.items() if a == "not_sure"))
    assert unsure.p_real is None and unsure.vote_count == 1 and unsure.answer_counts == {"not_sure": 1}
    for pk in (s for s, a in votes.items() if a == "real"):
        assert Subject.objects.get(pk=pk).p_real > 0.5
    arrays = recompute.vote_arrays(workflow)
    assert len(arrays.labels) == 2  # the not-sure vote is not a real/bogus label
    # Consensus counts sides: 2 real + 1 not sure is 2/2 = 100 % real once min_votes is reached.
    from core.models import Participant
    from labeling.services import record_vote

    target = next(s for s in subjects if s.pk not in votes)
    for answer in ("real", "real", "not_sure"):
        record_vote(workflow=workflow, subject_id=target.pk, participant=Participant.objects.create(kind="anonymous"),
                    answer=answer, idempotency_key=uuid.uuid4(), trusted=True)  # fmt: skip
    target.refresh_from_db()
    assert target.status == Subject.RETIRED and target.retired_reason.startswith("consensus: real")
    # Labels: the retired subject is a decided real label; the not-sure-only one is none.
    decided = {label.subject_id: label.p_real for label in labels.training_labels(workflow)}
    assert target.pk in decided and decided[target.pk] > 0.5 and unsure.pk not in decided
    assert ParticipantSkill.objects.filter(workflow=workflow).exists()


def test_gold_feedback_follows_what_answers_count_as(project, make_subjects):
    from core.models import Participant
    from labeling.services import record_vote

    custom = [
        {"key": "yes", "label": "Yes", "counts_as": "real"},
        {"key": "no", "label": "No", "counts_as": "bogus"},
    ]
    workflow, _ = workflows.create_workflow(project, "yes-no", answers=custom, is_active=True)
    (subject,) = make_subjects(1, wf=workflow)
    Subject.objects.filter(pk=subject.pk).update(gold_label="real")
    result = record_vote(workflow=workflow, subject_id=subject.pk, participant=Participant.objects.create(kind="anonymous"),
                         answer="yes", idempotency_key=uuid.uuid4(), trusted=True)  # fmt: skip
    assert result.vote.gold_correct is True and result.feedback["correct"] is True


# --- Checklist and preview -------------------------------------------------------------------------


def test_checklist_launch_and_preview_store_nothing(client, owner, project, make_subjects):
    client.force_login(owner)
    workflow, _ = workflows.create_workflow(project, "draft")
    page = client.get(u("workflow", project, workflow.slug)).content.decode()
    assert 'data-check="subjects"' in page and "No subjects yet" in page and "No gold subjects" in page
    resp = client.post(u("workflow_launch", project, workflow.slug), {"action": "launch"})
    workflow.refresh_from_db()
    assert resp.status_code == 302 and not workflow.is_active
    # Volunteers cannot see a draft; the preview works for its scientists.
    assert client.get(reverse("labeling:classify", args=[project.slug, workflow.slug])).status_code == 404
    make_subjects(2, wf=workflow)
    workflow.gold_schedule = [[None, 0.0]]
    workflow.save()
    page = client.get(u("workflow", project, workflow.slug)).content.decode()
    assert "Runs without gold" in page and "2 subjects waiting" in page
    preview = u("workflow_preview", project, workflow.slug)
    html = client.get(preview).content.decode()
    assert 'data-testid="preview-notice"' in html
    subject = re.search(r'name="subject" value="(\d+)"', html).group(1)
    resp = client.post(preview, {"subject": subject, "answer": "real"}, HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and "would count as <strong>real</strong>" in resp.content.decode()
    assert client.post(preview, {"subject": subject, "answer": "nope"}).status_code == 400
    assert Vote.objects.count() == 0 and Subject.objects.get(pk=subject).vote_count == 0
    client.post(u("workflow_launch", project, workflow.slug), {"action": "launch"})
    workflow.refresh_from_db()
    assert workflow.is_active
    assert client.get(reverse("labeling:classify", args=[project.slug, workflow.slug])).status_code == 200
    client.post(u("workflow_launch", project, workflow.slug), {"action": "pause"})
    workflow.refresh_from_db()
    assert not workflow.is_active


def test_page_permissions(client, project, workflow, member, django_user_model):
    pages = [u("workflow_new", project), u("workflow_edit", project, workflow.slug),
             u("workflow_settings", project, workflow.slug), u("workflow_tutorial", project, workflow.slug),
             u("workflow_preview", project, workflow.slug)]  # fmt: skip
    client.force_login(member("scientist"))
    for page in pages:
        assert client.get(page).status_code == 200, page
    client.force_login(member("viewer"))
    assert client.get(u("workflows", project)).status_code == 200
    assert client.get(u("workflow", project, workflow.slug)).status_code == 200
    for page in pages:
        assert client.get(page).status_code == 403, page
    assert client.post(u("workflow_launch", project, workflow.slug)).status_code == 403
    client.force_login(django_user_model.objects.create_user("stranger", password="pass-12345-word"))
    for page in [*pages, u("workflows", project)]:
        assert client.get(page).status_code == 404, page
    client.logout()
    assert client.get(u("workflows", project)).status_code == 302  # to the login page


# --- API ---------------------------------------------------------------------------------------------


def api(client, method, path, data=None):
    return getattr(client, method)(path, data=data, content_type="application/json")


def test_api_creates_and_updates_workflows(client, owner, project):
    client.force_login(owner)
    url = reverse("api_workflows", args=[project.slug])
    resp = api(client, "post", url, {"slug": "api-rb", "name": "From the API", "answers": THREE,
                                     "gold_schedule": [[10, 0.3], [None, 0.1]]})  # fmt: skip
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert [a["key"] for a in body["answers"]] == ["real", "bogus", "not_sure"] and body["is_active"] is False
    detail = reverse("api_workflow", args=[project.slug, body["id"]])
    resp = api(
        client, "patch", detail, {"retirement_limit": 7, "tutorial": [{"text": "<script>x</script>Hi"}]}
    )
    assert resp.status_code == 200 and resp.json()["retirement_limit"] == 7
    resp = api(client, "post", url, {"slug": "sim", "kind": "similarity", "n_candidates": 9})
    assert resp.status_code == 201 and resp.json()["n_candidates"] == 9 and resp.json()["answers"] == []
    assert api(client, "post", url, {"slug": "sim", "kind": "similarity"}).status_code == 400


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"answers": THREE[:1]}, "answers", "at least two answers"),
        ({"answers": [THREE[0], {**THREE[1], "shortcut": "R"}]}, "answers", "keyboard key R"),
        ({"gold_schedule": [[20, 0.4], [40, 0.1]]}, "gold_schedule", "does not add up"),
        ({"gold_schedule": "nonsense"}, "gold_schedule", "gold schedule"),
        ({"retirement_limit": 0}, "retirement_limit", "At least 1"),
        ({"acquisition_strategy": "psychic"}, "acquisition_strategy", "One of"),
        ({"n_candidates": 50}, "n_candidates", "2 to 15"),
        ({"tutorial": [{"text": "x", "image": "subject:424242"}]}, "tutorial", "no subject"),
        ({"kind": "similarity"}, "kind", "cannot change"),
    ],
)
def test_api_bad_input_is_a_400_by_field(client, owner, workflow, body, field, message):
    client.force_login(owner)
    resp = api(client, "patch", reverse("api_workflow", args=[workflow.project.slug, workflow.pk]), body)
    assert resp.status_code == 400, resp.content
    assert field in resp.json() and message in str(resp.json()[field])


def test_a_similarity_workflows_settings_are_checked_too(client, owner, project):
    """The database's constraints hold for every kind: bad numbers are a 400 by field, never a 500."""
    similar = Workflow.objects.create(project=project, slug="sim", name="Similar", kind=Workflow.SIMILARITY)
    client.force_login(owner)
    url = reverse("api_workflow", args=[project.slug, similar.pk])
    for body, field in [
        ({"min_votes": -50}, "min_votes"),
        ({"exploration_share": 3e244}, "exploration_share"),
    ]:
        resp = api(client, "patch", url, body)
        assert resp.status_code == 400 and field in resp.json(), resp.content


def test_api_permissions(client, project, workflow, member, django_user_model):
    url = reverse("api_workflows", args=[project.slug])
    detail = reverse("api_workflow", args=[project.slug, workflow.pk])
    body = {"slug": "by-someone"}
    client.force_login(member("scientist"))
    assert api(client, "post", url, body).status_code == 201
    assert api(client, "patch", detail, {"name": "Renamed"}).status_code == 200
    for role in ("viewer",):
        client.force_login(member(role))
        assert client.get(url).status_code == 200
        assert api(client, "post", url, {"slug": "nope"}).status_code == 403
        assert api(client, "patch", detail, {"name": "x"}).status_code == 403
    client.force_login(member("expert"))  # experts label gold on the pages; to the API they have no role
    assert api(client, "post", url, {"slug": "nope"}).status_code == 404
    other = django_user_model.objects.create_user("other-owner", password="pass-12345-word")
    Project.objects.create(slug="theirs", name="Theirs", owner=other)
    client.force_login(other)
    assert api(client, "patch", detail, {"name": "x"}).status_code == 404
    assert api(client, "post", url, {"slug": "nope"}).status_code == 404
    client.logout()
    assert api(client, "post", url, {"slug": "nope"}).status_code in (401, 403)
    assert not Workflow.objects.filter(slug="nope").exists()


# --- Commands on a fresh database -------------------------------------------------------------------


def test_create_workflow_command_is_idempotent(owner, project, capsys):
    call_command(
        "create_workflow", project.slug, "cli", "--kind", "real_bogus", "--answers", "real,bogus,not_sure"
    )
    out = capsys.readouterr().out
    assert "Created workflow 'ztf/cli'" in out and "real, bogus, not_sure" in out
    workflow = Workflow.objects.get(slug="cli")
    assert workflow.answer_class("not_sure") == "" and workflow.answer_options[2]["label"] == "Not sure"
    call_command("create_workflow", project.slug, "cli", "--kind", "real_bogus")
    assert "exists already" in capsys.readouterr().out
    with pytest.raises(CommandError, match="is a real_bogus workflow"):
        call_command("create_workflow", project.slug, "cli", "--kind", "similarity")
    with pytest.raises(CommandError, match="at least two answers"):
        call_command("create_workflow", project.slug, "one", "--answers", "real")
    call_command("create_workflow", project.slug, "sim", "--kind", "similarity", "--live")
    assert Workflow.objects.get(slug="sim").is_active


def test_ingest_create_makes_project_and_workflow(owner, tmp_path, capsys):
    import numpy as np

    from mlcore.synth import generate_triplets

    np.save(tmp_path / "stack.npy", generate_triplets(2, seed=1).images)
    call_command("ingest", "--project", "fresh", "--workflow", "rb", "--create", "--owner", "owner",
                 "--no-progress", str(tmp_path / "stack.npy"))  # fmt: skip
    out = capsys.readouterr().out
    assert "Created project 'fresh'" in out and "Created workflow 'fresh/rb'" in out
    assert out.strip().splitlines()[-1] == "ingested 2, duplicates 0, failed 0"
    workflow = Workflow.objects.get(project__slug="fresh", slug="rb")
    assert Subject.objects.filter(workflow=workflow, subject_set__name="default").count() == 2
    call_command("ingest", "--project", "fresh", "--workflow", "rb", "--create", "--no-progress",
                 str(tmp_path / "stack.npy"))  # fmt: skip
    out = capsys.readouterr().out
    assert "Created" not in out and out.strip().splitlines()[-1] == "ingested 0, duplicates 2, failed 0"
