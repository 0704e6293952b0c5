"""Rare gems: volunteers flag an unusual subject with their vote (real/bogus page, similarity page, vote
API); refused votes flag nothing; notes are plain text, at most 280 characters and rate-limited; one
flag per person and subject; "My classifications", the exports and the API show them."""

import csv
import io
import json
import random
import re
import uuid
import zipfile

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import gems
from core.authentication import create_token
from core.models import GemFlag, Participant, Project, ProjectMembership, Subject, Workflow
from core.workflow_content import default_tutorial
from labeling.exporters import export_labels, export_votes
from labeling.models import Vote
from similarity.exporters import export_similarity
from similarity.models import SimilarityVote

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('gem')</script>"


# ---------------------------------------------------------------------------------------------
# Helpers: the pages' forms as a browser sends them


def classify_url(workflow):
    return reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])


def vote_url(workflow):
    return reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])


def form_of(html: str, names=("subject", "ticket", "key")) -> dict:
    return {name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1) for name in names}


def answer(client, workflow, html, value="real", **gem):
    """Answer the subject on `html` with htmx, as the page does; `gem`: gem="1", gem_note="..."."""
    return client.post(vote_url(workflow), {**form_of(html), "answer": value, **gem}, HTTP_HX_REQUEST="true")


def first_page(client, workflow) -> str:
    response = client.get(classify_url(workflow))
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def subjects(project, workflow):
    def make(n):
        return [
            Subject.objects.create(
                project=project, workflow=workflow, external_id=f"gem-s{i}", random_key=random.random()
            )
            for i in range(n)
        ]

    return make


@pytest.fixture
def sim_workflow(project):
    workflow = Workflow.objects.create(
        project=project, slug="sim", name="Similar galaxies", kind=Workflow.SIMILARITY, answers=[]
    )
    for i in range(18):
        Subject.objects.create(
            project=project, workflow=workflow, external_id=f"gal-{i}", random_key=random.random()
        )
    return workflow


def sim_answer(client, workflow, html, **extra):
    task = int(re.search(r'name="task" value="(\d+)"', html).group(1))
    chosen = re.findall(r'class="sim-candidate" data-subject="(\d+)"', html)[:2]
    body = {"task": task, "chosen": ",".join(chosen), **form_of(html, ("ticket", "key")), **extra}
    url = reverse("similarity:submit", args=[workflow.project.slug, workflow.slug])
    return task, client.post(url, body, HTTP_HX_REQUEST="true")


def me_page(client) -> str:
    response = client.get(reverse("core:me"))
    assert response.status_code == 200
    return response.content.decode()


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@pytest.fixture(autouse=True)
def _own_cache(settings):
    """Rate limits counted in a cache of each test's own: counts are kept by participant id, and the
    test database hands out the same ids again, so notes of one test would count against the next."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }


@pytest.fixture
def own_limits(settings):
    """A note limit of the test's choosing; votes and serving out of the way."""
    big = (1_000_000, 60)

    def set_note_limit(per_participant):
        settings.SKYVOTE_RATE_LIMITS = {
            "serve": {"participant": big, "address": big},
            "vote": {"participant": big, "address": big},
            "gem_note": {"participant": (per_participant, 60), "address": big},
        }

    return set_note_limit


# ---------------------------------------------------------------------------------------------
# Flags come with votes, on both kinds of task page


def test_the_real_bogus_page_has_the_control_and_a_flag_comes_with_the_vote(client, workflow, subjects):
    subjects(3)
    html = first_page(client, workflow)
    assert 'data-testid="gem-toggle"' in html  # gems.js shows it and makes it a toggle (aria-pressed)
    assert 'aria-keyshortcuts="G"' in html and 'name="gem" value=""' in html
    assert '<label for="gem-note">' in html and 'id="gem-note" name="gem_note" maxlength="280"' in html
    served = int(form_of(html)["subject"])

    reply = answer(client, workflow, html, "real", gem="1", gem_note="  a ring\taround   it \x00\x1b ")
    assert reply.status_code == 200
    vote = Vote.objects.get()
    flag = GemFlag.objects.get()
    assert (flag.subject_id, flag.workflow_id, flag.participant_id) == (
        served,
        workflow.pk,
        vote.participant_id,
    )
    assert flag.vote_key == vote.idempotency_key and flag.note == "a ring around it"
    assert vote.answer == "real"  # the flag never replaces the answer
    # The next subject comes with a fresh, unflagged control; no message about the note.
    body = reply.content.decode()
    assert 'name="gem" value=""' in body and 'data-testid="gem-message"' not in body

    answer(client, workflow, body, "bogus")  # no flag asked for: none stored
    assert Vote.objects.count() == 2 and GemFlag.objects.count() == 1


def test_a_flag_comes_with_a_similarity_answer_on_the_comparison_image(client, sim_workflow):
    html = client.get(sim_workflow.get_absolute_url()).content.decode()
    assert 'data-testid="gem-toggle"' in html and 'name="gem_note" maxlength="280"' in html
    task_id, reply = sim_answer(client, sim_workflow, html, gem="1", gem_note="spiral arms with a ring")
    assert reply.status_code == 200
    vote = SimilarityVote.objects.get()
    flag = GemFlag.objects.get()
    assert flag.subject_id == vote.task.comparison_id and vote.task_id == task_id
    assert flag.workflow_id == sim_workflow.pk and flag.vote_key == vote.idempotency_key
    assert flag.note == "spiral arms with a ring"
    assert "sim-task" in reply.content.decode() and 'name="gem" value=""' in reply.content.decode()


def test_the_vote_api_takes_a_flag_and_says_so(workflow, subjects):
    subjects(2)
    api = APIClient()
    served = api.get(reverse("api_workflow_next", args=[workflow.project.slug, workflow.pk])).json()
    body = {
        "workflow": workflow.pk, "subject": served["subject"], "answer": "bogus", "ticket": served["ticket"],
        "idempotency_key": str(uuid.uuid4()), "gem": True, "gem_note": "an arc",
    }  # fmt: skip
    reply = api.post("/api/votes/", body, format="json")
    assert reply.status_code == 201, reply.content
    assert (
        reply.json()["gem"] is True
        and reply.json()["gem_note"] == "an arc"
        and reply.json()["gem_detail"] == ""
    )
    assert GemFlag.objects.get().subject_id == served["subject"]


# ---------------------------------------------------------------------------------------------
# A refused vote flags nothing


def test_a_vote_refused_for_its_ticket_or_an_unserved_subject_flags_nothing(client, workflow, subjects):
    made = subjects(3)
    html = first_page(client, workflow)
    form = form_of(html)
    other = next(s for s in made if s.pk != int(form["subject"]))  # never served to this volunteer
    gem = {"answer": "real", "gem": "1", "gem_note": "look"}
    unserved = client.post(vote_url(workflow), {**form, "subject": other.pk, **gem}, HTTP_HX_REQUEST="true")
    bad_ticket = client.post(vote_url(workflow), {**form, "ticket": "forged", **gem}, HTTP_HX_REQUEST="true")
    assert unserved.status_code == 403 and bad_ticket.status_code == 403
    assert not Vote.objects.exists() and not GemFlag.objects.exists()

    api = APIClient()  # the API: a subject picked by the client, not served, with no ticket
    body = {
        "workflow": workflow.pk,
        "subject": other.pk,
        "answer": "real",
        "idempotency_key": str(uuid.uuid4()),
    }
    refused = api.post("/api/votes/", {**body, "gem": True, "gem_note": "look"}, format="json")
    assert refused.status_code == 400 and "ticket" in refused.json()["detail"]
    assert not Vote.objects.exists() and not GemFlag.objects.exists()


def test_a_refused_similarity_answer_flags_nothing(client, sim_workflow):
    html = client.get(sim_workflow.get_absolute_url()).content.decode()
    _task, reply = sim_answer(client, sim_workflow, html, ticket="forged", gem="1", gem_note="odd")
    assert reply.status_code == 403
    assert not SimilarityVote.objects.exists() and not GemFlag.objects.exists()


# ---------------------------------------------------------------------------------------------
# Notes: plain text, at most 280 characters, rate-limited; none of that costs the vote


def test_clean_note_strips_controls_collapses_whitespace_and_keeps_markup_as_text():
    assert gems.clean_note(" a\r\n\tb\u202e c\x00 ") == "a b c"
    assert gems.clean_note(SCRIPT) == SCRIPT  # plain text: the templates escape it
    assert gems.clean_note("👩\u200d🔬 x") == "👩\u200d🔬 x"  # the joiner of an emoji stays
    assert len(gems.clean_note("x" * 280)) == 280
    with pytest.raises(gems.GemNoteError, match="at most 280 characters"):
        gems.clean_note("x" * 281)
    assert gems.clean_note("y" + " " * 400 + "z") == "y z"  # collapsed first, then measured
    with pytest.raises(gems.GemNoteError, match="yours has 1000000"):
        gems.clean_note("x" * 1_000_000)  # refused before it is cleaned character by character


def test_a_note_over_280_characters_is_refused_with_a_message_and_the_vote_counts(client, workflow, subjects):
    subjects(3)
    html = first_page(client, workflow)
    reply = answer(client, workflow, html, "bogus", gem="1", gem_note="n" * 281)
    assert reply.status_code == 200
    body = reply.content.decode()
    assert (
        'data-testid="gem-message"' in body and "at most 280 characters" in body and "yours has 281" in body
    )
    assert Vote.objects.get().answer == "bogus" and re.search(r'data-testid="counter">1<', body)
    assert GemFlag.objects.get().note == ""  # flagged all the same, without the note

    # Without JavaScript the page redirects, and the message comes with the next page.
    page = client.post(
        vote_url(workflow), {**form_of(body), "answer": "real", "gem": "1", "gem_note": "m" * 300}
    )
    assert page.status_code == 302 and Vote.objects.count() == 2
    assert "at most 280 characters" in client.get(page.url).content.decode()


def test_notes_are_rate_limited_and_the_vote_still_counts(client, workflow, subjects, own_limits):
    own_limits(2)
    subjects(4)
    html = first_page(client, workflow)
    for i in range(3):
        reply = answer(client, workflow, html, "real", gem="1", gem_note=f"note {i}")
        assert reply.status_code == 200
        html = reply.content.decode()
    assert "faster than we can take them" in html and Vote.objects.count() == 3
    assert sorted(GemFlag.objects.values_list("note", flat=True)) == ["", "note 0", "note 1"]
    # A flag without a note is not a note: it is never refused.
    answer(client, workflow, html, "real", gem="1")
    assert GemFlag.objects.count() == 4 and Vote.objects.count() == 4


def test_the_api_refuses_a_long_note_in_words_and_keeps_vote_and_flag(workflow, subjects):
    subjects(1)
    api = APIClient()
    served = api.get(reverse("api_workflow_next", args=[workflow.project.slug, workflow.pk])).json()
    body = {
        "workflow": workflow.pk, "subject": served["subject"], "answer": "real", "ticket": served["ticket"],
        "idempotency_key": str(uuid.uuid4()), "gem": True, "gem_note": "z" * 5000,
    }  # fmt: skip
    reply = api.post("/api/votes/", body, format="json")
    assert reply.status_code == 201
    assert reply.json()["gem"] is True and "at most 280 characters" in reply.json()["gem_detail"]
    assert Vote.objects.count() == 1 and GemFlag.objects.get().note == ""
    too_big = api.post(
        "/api/votes/", {**body, "idempotency_key": str(uuid.uuid4()), "gem_note": "z" * 20_000}
    )
    assert too_big.status_code == 400  # a body no note could need is malformed, not a server error


# ---------------------------------------------------------------------------------------------
# One flag per person and subject


def test_a_second_flag_on_the_same_subject_updates_the_first(client, workflow, subjects):
    subjects(1)  # a skipped subject comes straight back when nothing else is left
    html = first_page(client, workflow)
    subject = form_of(html)["subject"]
    html = answer(client, workflow, html, "skip", gem="1", gem_note="an odd ring").content.decode()
    assert form_of(html)["subject"] == subject
    answer(client, workflow, html, "real", gem="1", gem_note="a ring and an arc")
    flag = GemFlag.objects.get()  # one row, the note of the second flag, the standing answer's key
    standing = Vote.objects.get(retracted=False)
    assert flag.note == "a ring and an arc" and flag.vote_key == standing.idempotency_key

    participant = standing.participant  # sent again without a note, the note stays
    gems.record_flag(
        workflow_id=workflow.pk, subject_id=int(subject), participant=participant, vote_key=uuid.uuid4()
    )
    assert GemFlag.objects.get().note == "a ring and an arc"


def test_a_flag_sent_with_a_skip_follows_the_answer_that_replaces_it(client, workflow, subjects, tmp_path):
    subjects(1)
    html = first_page(client, workflow)
    html = answer(client, workflow, html, "skip", gem="1", gem_note="two blobs").content.decode()
    answer(client, workflow, html, "bogus")  # answered when it came back, without flagging again
    export_votes(workflow.project, tmp_path / "votes.csv", "csv")
    rows = csv_rows(tmp_path / "votes.csv")
    assert [(r["answer"], r["gem"], r["gem_note"]) for r in rows] == [("bogus", "true", "two blobs")]


def test_undo_takes_the_flag_back_with_the_answer(client, workflow, subjects):
    subjects(2)
    html = first_page(client, workflow)
    body = answer(client, workflow, html, "real", gem="1", gem_note="hm").content.decode()
    assert GemFlag.objects.count() == 1
    undo_key = re.search(r'name="vote" value="([^"]*)"', body).group(1)
    undo_url = reverse("labeling:undo_vote", args=[workflow.project.slug, workflow.slug])
    assert client.post(undo_url, {"vote": undo_key}, HTTP_HX_REQUEST="true").status_code == 200
    assert not GemFlag.objects.exists()


# ---------------------------------------------------------------------------------------------
# "My classifications"


def test_my_page_lists_gems_with_notes_escaped_and_counts_them(client, workflow, subjects, sim_workflow):
    subjects(3)
    html = first_page(client, workflow)
    html = answer(client, workflow, html, "real", gem="1", gem_note=SCRIPT).content.decode()
    answer(client, workflow, html, "bogus")
    sim_html = client.get(sim_workflow.get_absolute_url()).content.decode()
    sim_answer(client, sim_workflow, sim_html, gem="1")

    page = me_page(client)
    assert SCRIPT not in page and "&lt;script&gt;alert(&#x27;gem&#x27;)&lt;/script&gt;" in page
    assert re.findall(r'data-testid="gem-count">(\d+)<', page) == ["1", "1"]  # per workflow
    assert "Rare gems I flagged" in page and page.count("gem-note-text") == 2 and "no note" in page
    # Still what it always showed: classifications per workflow, recent answers with the consensus.
    assert f"<td>{workflow.name}</td><td>2</td>" in page and f"<td>{sim_workflow.name}</td><td>1</td>" in page
    assert "<td>real</td>" in page and "<td>bogus</td>" in page and "2 of 15 similar" in page


def test_my_page_reads_each_apps_votes_through_the_registry():
    from core import contributions

    kinds = {c.kind for c in contributions.registered()}
    assert {"real_bogus_votes", "similarity_answers"} <= kinds
    import core.views_projects as views

    assert not hasattr(views, "_vote_tables")  # no more guessing vote tables from field names


def test_an_anonymous_volunteers_gems_follow_them_into_their_account(client, workflow, subjects):
    subjects(2)
    html = first_page(client, workflow)
    answer(client, workflow, html, "real", gem="1", gem_note="before signing up")
    password = "a-long-pass-phrase-42"
    signed_up = client.post(
        reverse("core:signup"), {"username": "vera", "password1": password, "password2": password}
    )
    assert signed_up.status_code == 302  # signing up merges the anonymous participant into the account's
    assert "before signing up" in me_page(client)


# ---------------------------------------------------------------------------------------------
# Tutorial and field guide


def test_tutorial_and_field_guide_say_what_is_worth_flagging(client, workflow, subjects, sim_workflow):
    assert default_tutorial()[-1]["title"] == "Rare gems"  # new real/bogus workflows get the step
    subjects(1)
    Workflow.objects.filter(pk=workflow.pk).update(tutorial=[])  # the page's built-in tutorial
    for url in (classify_url(workflow), sim_workflow.get_absolute_url()):
        html = client.get(url).content.decode()
        tutorial = html[html.index('<dialog id="tutorial"') :]
        assert (
            "Rare gems" in tutorial and "none of the field guide" in tutorial and "show a friend" in tutorial
        )
    guide = client.get(reverse("labeling:field_guide", args=[workflow.project.slug])).content.decode()
    assert 'id="rare-gems"' in guide and "rings, arcs" in guide and "on or next to a galaxy" in guide


# ---------------------------------------------------------------------------------------------
# Exports


def test_exports_carry_flags_and_notes_as_plain_text_with_formulas_escaped(
    client, workflow, subjects, tmp_path
):
    made = subjects(3)
    html = first_page(client, workflow)
    flagged = int(form_of(html)["subject"])
    html = answer(client, workflow, html, "real", gem="1", gem_note='=HYPERLINK("http://x") ' + SCRIPT)
    answer(client, workflow, html.content.decode(), "bogus")

    export_votes(workflow.project, tmp_path / "votes.csv", "csv")
    rows = {int(r["subject_id"]): r for r in csv_rows(tmp_path / "votes.csv")}
    assert (
        rows[flagged]["gem"] == "true" and rows[flagged]["gem_note"] == '\'=HYPERLINK("http://x") ' + SCRIPT
    )
    assert [(r["gem"], r["gem_note"]) for s, r in rows.items() if s != flagged] == [("false", "")]

    export_votes(workflow.project, tmp_path / "votes.jsonl", "jsonl")
    lines = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert sorted((line["gem"], line["gem_note"]) for line in lines) == [
        (False, None), (True, "=HYPERLINK(\"http://x\") " + SCRIPT)
    ]  # fmt: skip

    export_labels(workflow.project, tmp_path / "labels.csv", "csv")
    counts = {int(r["subject_id"]): int(r["n_gem_flags"]) for r in csv_rows(tmp_path / "labels.csv")}
    assert counts == {s.pk: int(s.pk == flagged) for s in made}


def test_the_similarity_export_carries_the_flag_on_each_row_of_the_answer(client, sim_workflow, tmp_path):
    html = client.get(sim_workflow.get_absolute_url()).content.decode()
    sim_answer(client, sim_workflow, html, gem="1", gem_note="@odd")
    export_similarity(sim_workflow.project, tmp_path / "sim.zip", workflow=sim_workflow)
    with zipfile.ZipFile(tmp_path / "sim.zip") as archive:
        text = archive.read("choices.csv").decode()
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    assert len(rows) == 15 and {(r["gem"], r["gem_note"]) for r in rows} == {("true", "'@odd")}


# ---------------------------------------------------------------------------------------------
# The API: the team reads flags


@pytest.fixture
def flagged(client, workflow, subjects, sim_workflow):
    subjects(2)
    html = first_page(client, workflow)
    answer(client, workflow, html, "real", gem="1", gem_note=SCRIPT)
    sim_html = client.get(sim_workflow.get_absolute_url()).content.decode()
    sim_answer(client, sim_workflow, sim_html, gem="1", gem_note="ring")
    return workflow


def _auth(user):
    _token, key = create_token(user, "test", scope="read")
    return {"Authorization": f"Bearer {key}"}


def test_the_team_reads_flags_and_nobody_else(flagged, owner, django_user_model):
    project = flagged.project
    url = reverse("api_gem_flags", args=[project.slug])
    rival = django_user_model.objects.create_user("rival", password="pw-rival-12345")
    Project.objects.create(slug="rival", name="Rival", owner=rival)
    members = {}
    for role in ("scientist", "viewer", "expert"):
        members[role] = django_user_model.objects.create_user(f"m-{role}", password="pw-member-12345")
        ProjectMembership.objects.create(project=project, user=members[role], role=role)

    api = Client()
    listed = api.get(url, headers=_auth(owner))
    assert listed.status_code == 200
    rows = listed.json()["results"]
    assert {r["note"] for r in rows} == {SCRIPT, "ring"}  # JSON carries the text as typed: plain text
    row = next(r for r in rows if r["workflow"] == flagged.pk)
    participant = GemFlag.objects.get(workflow=flagged).participant_id
    assert row["participant"] == project.pseudonym(participant) and row["worker_id"] is None
    assert set(row) >= {"subject", "subject_external_id", "workflow_slug", "vote_key", "created_at"}
    assert [r["note"] for r in api.get(url + "?workflow=sim", headers=_auth(owner)).json()["results"]] == [
        "ring"
    ]
    assert api.get(url + "?subject=abc", headers=_auth(owner)).status_code == 400

    for role in ("scientist", "viewer"):
        assert api.get(url, headers=_auth(members[role])).status_code == 200, role
    # The API knows no experts (core.permissions): they review on the pages, like another project's owner.
    assert api.get(url, headers=_auth(members["expert"])).status_code == 404
    assert api.get(url, headers=_auth(rival)).status_code == 404
    assert api.get(url).status_code in (401, 403)  # anonymous


def test_the_vote_lists_of_the_api_show_the_flag_of_each_vote(flagged, owner):
    api = Client()
    api.force_login(owner)
    votes = api.get(reverse("api_votes", args=[flagged.project.slug])).json()["results"]
    assert [(v["gem"], v["gem_note"]) for v in votes] == [(True, SCRIPT)]
    answers = api.get(reverse("api_similarity_votes", args=[flagged.project.slug])).json()["results"]
    assert [(a["gem"], a["gem_note"]) for a in answers] == [(True, "ring")]
    assert Participant.objects.count() == 1  # one volunteer made both
