"""Paid-panel batches of similarity tasks: the owner makes one, a worker answers 15-tile tasks (check tasks
among them: the comparison image itself is one of the candidates) and gets a completion code; checks decide
the worker's quality and payment suggestion and never reach pair counts, training data, exports or
volunteers; the page never says which tile is the check."""

import csv
import io
import random
import re
import uuid
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import connection
from django.shortcuts import resolve_url
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core.models import Participant, ProjectMembership, Subject, Workflow
from core.storage import subject_storage
from panels import services as tasklinks
from panels.models import Assignment, Batch
from similarity import selection
from similarity.exporters import export_similarity
from similarity.models import PairStat, SimilarityTask, SimilarityVote
from similarity.training import workflow_answers
from tests.similarity_support import participant
from tests.tasklinks_support import landing_url, make_batch, make_subjects

pytestmark = pytest.mark.django_db

TASK_RE = re.compile(r'name="task" value="(\d+)"')
KEY_RE = re.compile(r'name="key" value="([0-9a-f-]{36})"')
TILE_RE = re.compile(r'<button type="button" class="sim-candidate" data-subject="(\d+)"')
IMAGE_RE = re.compile(r'src="(/t/[^"]+\.png)"')
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1000, 1)
    cache.clear()
    yield
    cache.clear()


def _similarity_workflow(project, n_subjects=24, slug="similar"):
    """A similarity workflow whose subjects have tiny PNGs, each its own (no rendering: these tests only
    serve images, they never look at them). No embedding rounds."""
    workflow = Workflow.objects.create(
        project=project,
        slug=slug,
        name="Which images are similar?",
        kind=Workflow.SIMILARITY,
        is_active=True,
        train_every=0,
    )
    rng = random.Random(0)
    for i in range(n_subjects):
        subject = Subject.objects.create(
            project=project, workflow=workflow, external_id=f"{slug}-{i}", random_key=rng.random()
        )
        png = io.BytesIO()
        Image.new("L", (4, 4), color=i).save(png, "PNG")
        name = subject_storage(project).save(
            f"subjects/{project.pk}/png/{subject.pk}-image.png", ContentFile(png.getvalue())
        )
        Subject.objects.filter(pk=subject.pk).update(images={"image": name})
    return workflow


@pytest.fixture
def sim(project):
    return _similarity_workflow(project)


def _user(django_user_model, name):
    return django_user_model.objects.create_user(name)  # no password: force_login, and no slow hashing


def _batch(workflow, **overrides):
    return make_batch(workflow, **{"tasks_per_assignment": 4, "gold_share": 0.5, **overrides})


def _start(client, batch, worker_id) -> Assignment:
    assert client.get(landing_url(batch, worker_id=worker_id)).status_code == 200
    started = client.post(
        reverse("panels:start", args=[tasklinks.batch_token(batch)]),
        {"worker_id": worker_id, "consent": "yes"},
    )
    assert started.status_code == 302, started.content[:300]
    assignment = Assignment.objects.get(batch=batch, worker_id=worker_id)
    assignment.batch = batch
    return assignment


def _urls(assignment, batch):
    token, akey = tasklinks.batch_token(batch), tasklinks.assignment_token(assignment)
    return {name: reverse(f"panels:{name}", args=[token, akey]) for name in ("task", "vote", "done")}


def _page(html: str) -> dict:
    task, key = TASK_RE.search(html), KEY_RE.search(html)
    assert task and key, "no similarity task on the page"
    return {
        "task": SimilarityTask.objects.get(pk=int(task.group(1))),
        "key": key.group(1),
        "tiles": [int(s) for s in TILE_RE.findall(html)],
        "images": IMAGE_RE.findall(html),
    }


def _answer(client, vote_url, task, chosen=(), none=False, key=None, htmx=True):
    data = {"task": task.pk, "chosen": ",".join(str(c) for c in chosen), "key": key or str(uuid.uuid4())}
    if none:
        data["none"] = "1"
    return client.post(vote_url, data, **(HTMX if htmx else {}))


def attentive(task):
    """Chooses the check tile on check tasks, one candidate otherwise."""
    return [task.check_candidate_id] if task.check_candidate_id else [task.candidates[0]]


def careless(task):
    """Never chooses the check tile."""
    return [next(c for c in task.candidates if c != task.check_candidate_id)]


def _work_through(client, assignment, batch, choose, limit=50):
    urls = _urls(assignment, batch)
    shown = []
    for _ in range(limit):
        page = client.get(urls["task"])
        if page.status_code == 302:
            return page, shown
        assert page.status_code == 200, page.content[:300]
        html = page.content.decode()
        found = _page(html)
        assert len(found["tiles"]) == 15 and found["tiles"] == found["task"].candidates
        assert f"<strong>{len(shown)} of {batch.tasks_per_assignment}</strong> done" in html
        shown.append(found["task"])
        response = _answer(client, urls["vote"], found["task"], choose(found["task"]), key=found["key"])
        if response.headers.get("HX-Redirect"):
            return response, shown
        assert response.status_code == 200, response.content[:300]
    raise AssertionError("the assignment never completed")


def _at_a_human_pace(assignment, seconds=4):
    """Answers `seconds` apart on the server clock (the test client answers in milliseconds: too fast)."""
    base = timezone.now() - timedelta(hours=1)
    votes = SimilarityVote.objects.filter(participant=assignment.participant).order_by("pk")
    for i, vote in enumerate(votes):
        SimilarityVote.objects.filter(pk=vote.pk).update(created_at=base + timedelta(seconds=i * seconds))


def _quality(batch, assignment):
    return next(q for q in tasklinks.batch_quality(batch) if q.assignment.pk == assignment.pk)


def test_owner_creates_a_similarity_batch_and_a_worker_completes_it_with_a_code(client, owner, sim):
    client.force_login(owner)
    form = client.get(reverse("panels:batch_new", args=[sim.project.slug])).content.decode()
    assert f'<option value="{sim.pk}"' in form
    response = client.post(
        reverse("panels:batch_new", args=[sim.project.slug]),
        {
            "workflow": sim.pk,
            "name": "Similarity pilot",
            "tasks_per_assignment": 4,
            "n_assignments": 2,
            "gold_percent": 50,
            "expires_at": (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
            "return_url_template": "https://panel.example.org/done?code={code}",
        },
    )
    batch = Batch.objects.get()
    assert response.status_code == 302 and batch.workflow == sim and batch.gold_share == 0.5
    client.logout()

    preview = client.get(landing_url(batch)).content.decode()  # no worker id: a preview, nothing stored
    assert 'data-testid="sample"' in preview and "comparisons of 15 images" in preview
    assert not Assignment.objects.exists() and not SimilarityTask.objects.exists()

    worker = Client()
    assignment = _start(worker, batch, "SIM-W1")
    tasks = SimilarityTask.objects.filter(pk__in=assignment.subject_ids)
    assert tasks.count() == 4 and len({t.comparison_id for t in tasks}) == 4
    checks = [t for t in tasks if t.check_candidate_id]
    assert len(checks) == 2  # round(4 × 50 %)
    for task in tasks:
        assert len(task.candidates) == 15 and len(set(task.candidates)) == 15
        assert (task.comparison_id in task.candidates) == bool(task.check_candidate_id)

    done, shown = _work_through(worker, assignment, batch, attentive)
    assert done.headers["HX-Redirect"] == _urls(assignment, batch)["done"]
    assert {t.pk for t in shown} == set(assignment.subject_ids)
    assignment.refresh_from_db()
    code = tasklinks.completion_code(assignment)
    page = worker.get(_urls(assignment, batch)["done"]).content.decode()
    assert code in page and f"https://panel.example.org/done?code={code}" in page
    assert tasklinks.verify_completion_code(assignment, code)
    votes = SimilarityVote.objects.filter(participant=assignment.participant)
    assert votes.count() == 4 and {v.source for v in votes} == {"panel"}
    assert assignment.participant.kind == Participant.WORKER

    _at_a_human_pace(assignment)
    q = _quality(batch, assignment)
    assert (q.n_gold, q.n_gold_correct, q.n_attention, q.n_attention_passed) == (2, 2, 2, 2)
    assert q.status == "complete" and q.suggestion == "approve", q.reasons
    client.force_login(owner)
    csv_text = client.get(reverse("panels:batch_csv", args=[sim.project.slug, batch.pk])).content.decode()
    row = next(csv.DictReader(io.StringIO(csv_text)))
    assert (row["worker_id"], row["status"], row["tasks_done"], row["tasks_total"]) == (
        "SIM-W1",
        "complete",
        "4",
        "4",
    )
    assert (row["gold_accuracy"], row["attention_checks_passed"]) == ("1.000", "2/2")
    assert (row["suggestion"], row["completion_code"]) == ("approve", code)


def test_workers_who_miss_the_checks_get_reject_or_review_in_quality_and_the_csv(client, owner, sim):
    batch = _batch(sim, tasks_per_assignment=6, gold_share=0.5, n_assignments=3)

    blind = _start(Client(), batch, "BLIND")
    _work_through(Client(), blind, batch, careless)  # the personal link works from any browser

    missed = []

    def one_slip(task):  # misses the first check only
        if task.check_candidate_id and not missed:
            missed.append(task.pk)
            return careless(task)
        return attentive(task)

    slipped = _start(Client(), batch, "SLIPPED")
    _work_through(Client(), slipped, batch, one_slip)

    # Choosing every tile would pass any check; it does not.
    everything = _start(Client(), batch, "EVERYTHING")
    _work_through(Client(), everything, batch, lambda task: task.candidates)
    for a in (blind, slipped, everything):
        _at_a_human_pace(a)

    q = _quality(batch, blind)
    assert (q.n_attention, q.n_attention_passed) == (3, 0) and q.suggestion == "reject"
    assert any("failed 3 of 3 attention checks" in r for r in q.reasons)
    q = _quality(batch, slipped)
    assert (q.n_attention, q.n_attention_passed) == (3, 2) and q.suggestion == "review"
    assert _quality(batch, everything).suggestion == "reject"

    client.force_login(owner)
    response = client.get(reverse("panels:batch_csv", args=[sim.project.slug, batch.pk]))
    rows = {r["worker_id"]: r for r in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows["BLIND"]["suggestion"] == "reject" and rows["BLIND"]["attention_checks_passed"] == "0/3"
    assert rows["SLIPPED"]["suggestion"] == "review" and rows["SLIPPED"]["attention_checks_passed"] == "2/3"
    assert rows["EVERYTHING"]["suggestion"] == "reject"
    assert all(r["status"] == "complete" and r["completion_code"] for r in rows.values())
    page = client.get(reverse("panels:batch", args=[sim.project.slug, batch.pk])).content.decode()
    assert "BLIND" in page and "reject" in page and "review" in page


def test_the_page_never_says_which_tile_is_the_check(sim):
    batch = _batch(sim, tasks_per_assignment=2, gold_share=1.0)
    worker = Client()
    assignment = _start(worker, batch, "W1")
    html = worker.get(_urls(assignment, batch)["task"]).content.decode()
    found = _page(html)
    task = found["task"]
    assert task.check_candidate_id == task.comparison_id and task.comparison_id in found["tiles"]

    # One opaque URL per image, none naming a subject; the check tile's differs from the comparison's.
    assert len(found["images"]) == 16 and len(set(found["images"])) == 16
    assert "/subjects/" not in html and "check" not in html.lower().replace('class="sim-check"', "")
    # Every tile's markup is the same but for its subject, image, key and position.
    tiles = re.findall(r'<div class="sim-tile">.*?</div>', html, flags=re.S)
    assert len(tiles) == 15
    shapes = {re.sub(r'data-subject="\d+"|/t/[^"]+\.png|\b\d+\b|\b[A-Z]\b', "", t) for t in tiles}
    assert len(shapes) == 1

    # The images themselves: the check tile shows the very comparison image.
    position = task.candidates.index(task.comparison_id)
    comparison_url, tile_url = found["images"][0], found["images"][1 + position]
    anybody = Client()
    first = b"".join(anybody.get(comparison_url).streaming_content)
    assert first[:4] == b"\x89PNG" and first == b"".join(anybody.get(tile_url).streaming_content)
    other = b"".join(anybody.get(found["images"][1 + (position + 1) % 15]).streaming_content)
    assert other != first


def test_images_of_a_task_link_need_its_own_assignment_link(django_user_model, owner, sim):
    batch = _batch(sim, tasks_per_assignment=2, gold_share=0.5)
    worker = Client()
    mine = _start(worker, batch, "W1")
    theirs = _start(Client(), batch, "W2")
    url = _page(worker.get(_urls(mine, batch)["task"]).content.decode())["images"][3]
    token, akey = tasklinks.batch_token(batch), tasklinks.assignment_token(mine)
    item, handle = re.search(r"/img/(\d+)/([0-9a-f]+)\.png$", url).groups()
    forged = [
        url.replace(akey, tasklinks.assignment_token(theirs)),  # another worker's link, my handle
        url.replace(handle, "0" * len(handle)),  # a made-up handle
        url.replace(f"/img/{item}/", f"/img/{theirs.subject_ids[0]}/"),  # a task of another assignment
        url.replace(akey, akey[:-2] + "xx"),  # a tampered link
        url.replace(token, token[:-2] + "xx"),
    ]
    rival = _user(django_user_model, "rival")
    visitors = {"anonymous": Client(), "owner": Client(), "rival": Client()}
    visitors["owner"].force_login(owner)
    visitors["rival"].force_login(rival)
    for role in ("viewer", "expert", "scientist"):
        user = _user(django_user_model, role)
        ProjectMembership.objects.create(project=sim.project, user=user, role=role)
        visitors[role] = Client()
        visitors[role].force_login(user)
    for name, visitor in visitors.items():
        # The link is the key: whoever holds it sees the image (a worker needs no account)...
        assert visitor.get(url).status_code == 200, name
        # ...and nobody, logged in or not, reaches another assignment's images with a changed one.
        for bad in forged:
            assert visitor.get(bad).status_code == 404, (name, bad)


def test_answering_twice_with_the_same_key_stores_one_vote(sim):
    batch = _batch(sim)
    worker = Client()
    assignment = _start(worker, batch, "W1")
    urls = _urls(assignment, batch)
    found = _page(worker.get(urls["task"]).content.decode())
    task, key = found["task"], found["key"]
    first = _answer(worker, urls["vote"], task, attentive(task), key=key)
    again = _answer(worker, urls["vote"], task, attentive(task), key=key)  # a retry: the same answer
    assert first.status_code == 200 and again.status_code == 200
    other_key = _answer(worker, urls["vote"], task, attentive(task), htmx=False)  # a second answer
    assert other_key.status_code == 302
    assert SimilarityVote.objects.filter(task=task).count() == 1
    assert SimilarityTask.objects.get(pk=task.pk).n_votes == 1
    assert tasklinks.progress(assignment).done == 1


def test_unknown_candidates_and_tasks_outside_the_assignment_are_refused_and_store_nothing(sim):
    batch = _batch(sim, n_assignments=2)
    worker = Client()
    assignment = _start(worker, batch, "W1")
    other = _start(Client(), batch, "W2")
    urls = _urls(assignment, batch)
    found = _page(worker.get(urls["task"]).content.decode())
    task, key = found["task"], found["key"]
    stranger = next(s for s in Subject.objects.filter(workflow=sim) if s.pk not in task.candidates)

    for chosen, message in (
        ([stranger.pk], "are not among this task"),
        (["abc"], "is not a candidate id"),
        ([], "Select the similar images"),
    ):
        response = _answer(worker, urls["vote"], task, chosen, key=key, htmx=False)
        html = response.content.decode()
        assert response.status_code == 400 and message in html, (chosen, response.status_code)
        assert _page(html)["task"] == task  # the same task, ready to answer again
    # htmx gets the same refusal in the task section, as an answer to swap in, with the selection kept
    refused = _answer(worker, urls["vote"], task, [task.candidates[2], stranger.pk], key=key).content.decode()
    assert "are not among this task" in refused and _page(refused)["task"] == task
    pressed = re.findall(r'data-subject="(\d+)" data-key="\w"\s+aria-pressed="true"', refused)
    assert pressed == [str(task.candidates[2])]

    # Tasks this link does not reach do not exist for it.
    for task_id in (other.subject_ids[0], 10**9, "x"):
        response = worker.post(
            urls["vote"], {"task": task_id, "chosen": str(task.candidates[0]), "key": str(uuid.uuid4())}
        )
        assert response.status_code == 404, task_id
    assert not SimilarityVote.objects.exists()


def test_check_tasks_stay_out_of_pair_counts_training_data_exports_and_volunteers(tmp_path, sim):
    batch = _batch(sim, tasks_per_assignment=6, gold_share=0.5)
    worker = Client()
    assignment = _start(worker, batch, "W1")
    _work_through(worker, assignment, batch, attentive)
    tasks = list(SimilarityTask.objects.filter(pk__in=assignment.subject_ids))
    checks = {t.pk for t in tasks if t.check_candidate_id}
    ordinary = [t for t in tasks if not t.check_candidate_id]
    assert len(checks) == 3 and len(ordinary) == 3

    # Pair counts: 15 pairs per ordinary answer, none of a check task (nor the subject with itself).
    assert sum(PairStat.objects.filter(workflow=sim).values_list("shown", flat=True)) == 15 * len(ordinary)
    assert not PairStat.objects.filter(
        workflow=sim, comparison_id__in=[t.comparison_id for t in tasks if t.pk in checks]
    ).exists()
    train, heldout = workflow_answers(sim)
    assert len(train) + len(heldout) == len(ordinary)
    assert all(a.comparison not in a.candidates for a in train + heldout)

    target = tmp_path / "similarity.zip"
    export_similarity(sim.project, target, workflow=sim)
    with zipfile.ZipFile(target) as zf:
        exported_tasks = {
            int(r["task_id"]) for r in csv.DictReader(io.StringIO(zf.read("tasks.csv").decode()))
        }
        chosen_rows = list(csv.DictReader(io.StringIO(zf.read("choices.csv").decode())))
    assert exported_tasks and not exported_tasks & checks
    assert {int(r["task_id"]) for r in chosen_rows} == {t.pk for t in ordinary}

    # A volunteer is never handed a check task, however many they answer.
    volunteer = participant("volunteer")
    open_ids = set(selection.open_tasks_for(sim, volunteer).values_list("pk", flat=True))
    assert open_ids and not open_ids & checks
    for _ in range(8):
        task = selection.next_task(sim, volunteer)
        assert task.check_candidate_id is None
        SimilarityVote.objects.create(
            workflow=sim, task=task, participant=volunteer, chosen=[], none_similar=True
        )


@pytest.mark.parametrize("kind", ["similarity", "real_bogus"])
def test_batches_count_subjects_and_assignments_never_load_the_whole_pool(kind, project, workflow, sim):
    if kind == "similarity":
        batch_workflow = sim
    else:
        make_subjects(workflow, n_ordinary=30, n_gold=6)
        batch_workflow = workflow
    table = Subject._meta.db_table

    def subject_reads(queries):
        return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and f'FROM "{table}"' in q["sql"]]

    with CaptureQueriesContext(connection) as made:
        batch = _batch(batch_workflow, tasks_per_assignment=5, gold_share=0.4)
    reads = subject_reads(made.captured_queries)
    assert reads and all("COUNT(" in sql or "LIMIT 1" in sql for sql in reads), reads
    with CaptureQueriesContext(connection) as started:
        assignment, created = tasklinks.start_assignment(batch, "W1")
    assert created and len(assignment.subject_ids) == 5
    # Every read of subjects is a bounded window (LIMIT) or a lookup of ids already chosen (IN).
    for sql in subject_reads(started.captured_queries):
        assert "LIMIT" in sql or '"id" IN (' in sql or "COUNT(" in sql, sql


@pytest.mark.parametrize(
    "visitor, expected",
    [
        ("owner", 302),
        ("rival", 404),
        ("viewer", 403),
        ("expert", 403),
        ("scientist", 403),
        ("anonymous", "login"),
    ],
)
def test_who_may_create_a_similarity_batch(django_user_model, owner, sim, visitor, expected):
    client = Client()
    if visitor == "owner":
        client.force_login(owner)
    elif visitor == "rival":
        client.force_login(_user(django_user_model, "rival"))
    elif visitor != "anonymous":
        user = _user(django_user_model, visitor)
        ProjectMembership.objects.create(project=sim.project, user=user, role=visitor)
        client.force_login(user)
    response = client.post(
        reverse("panels:batch_new", args=[sim.project.slug]),
        {
            "workflow": sim.pk,
            "name": "Pilot",
            "tasks_per_assignment": 3,
            "n_assignments": 1,
            "gold_percent": 34,
            "expires_at": (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    if expected == "login":
        assert response.status_code == 302 and response["Location"].startswith(
            resolve_url(settings.LOGIN_URL)
        )
    else:
        assert response.status_code == expected
    assert Batch.objects.exists() == (expected == 302)


def test_a_similarity_batch_needs_enough_subjects(project):
    small = _similarity_workflow(project, n_subjects=20)
    with pytest.raises(tasklinks.BatchError, match="only 20 subjects a worker could compare"):
        make_batch(small, tasks_per_assignment=21, gold_share=0.0)
    assert make_batch(small, tasks_per_assignment=20, gold_share=1.0).gold_share == 1.0  # checks need no gold


def test_an_idle_similarity_assignment_gives_its_place_back_but_a_working_one_keeps_it(settings, sim):
    settings.SKYVOTE_PANEL_ABANDON_AFTER = timedelta(minutes=5)
    batch = _batch(sim, n_assignments=2)
    worker = Client()
    busy = _start(worker, batch, "BUSY")
    idle = _start(Client(), batch, "IDLE")
    found = _page(worker.get(_urls(busy, batch)["task"]).content.decode())
    _answer(worker, _urls(busy, batch)["vote"], found["task"], attentive(found["task"]), key=found["key"])
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Assignment.objects.filter(batch=batch).update(started_at=an_hour_ago)

    assert tasklinks.release_abandoned(batch) == 1  # only the one without a recent answer
    assert Assignment.objects.get(pk=idle.pk).released_at is not None
    assert Assignment.objects.get(pk=busy.pk).released_at is None
    SimilarityVote.objects.filter(participant=busy.participant).update(created_at=an_hour_ago)
    assert tasklinks.release_abandoned(batch) == 1
    assert worker.get(_urls(busy, batch)["task"]).status_code == 410


def test_answers_faster_than_the_rate_limit_get_the_same_task_back_and_lose_nothing(settings, sim):
    settings.SKYVOTE_PANEL_RATE_LIMIT = (1, 60)
    batch = _batch(sim)
    worker = Client()
    assignment = _start(worker, batch, "W1")
    cache.clear()  # the start used the worker's window
    urls = _urls(assignment, batch)
    first = _page(worker.get(urls["task"]).content.decode())
    assert (
        _answer(worker, urls["vote"], first["task"], attentive(first["task"]), key=first["key"]).status_code
        == 200
    )
    second = _page(worker.get(urls["task"]).content.decode())
    chosen = [second["task"].candidates[4]]
    limited = _answer(worker, urls["vote"], second["task"], chosen, key=second["key"])
    html = limited.content.decode()
    assert limited.status_code == 429 and "faster than we can accept" in html
    assert _page(html)["task"] == second["task"]
    assert re.findall(r'data-subject="(\d+)" data-key="\w"\s+aria-pressed="true"', html) == [str(chosen[0])]
    assert SimilarityVote.objects.count() == 1


def test_with_an_embedding_ordinary_tasks_follow_its_strategy(sim):
    from core.models import ModelVersion
    from core.storage import private_storage
    from similarity.services import clear_caches, load_index

    ids = np.array(sorted(Subject.objects.filter(workflow=sim).values_list("pk", flat=True)), dtype=np.int64)
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = {}
    for part, array in (("vectors", vectors), ("ids", ids)):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        names[part] = private_storage().save(f"test-embedding-{part}.npy", ContentFile(buffer.getvalue()))
    version = ModelVersion.objects.create(
        workflow=sim,
        kind=ModelVersion.EMBEDDING,
        version=1,
        status=ModelVersion.ACTIVE,
        config={"index": names},
    )
    clear_caches()
    try:
        batch = _batch(sim, tasks_per_assignment=4, gold_share=0.5)
        assignment, _ = tasklinks.start_assignment(batch, "W1")
        index = load_index(version)
        for task in SimilarityTask.objects.filter(pk__in=assignment.subject_ids):
            assert task.strategy == SimilarityTask.EMBEDDING and task.model_version == version
            nearest = [
                c for c, s in zip(task.candidates, task.candidate_sources, strict=True) if s == "nearest"
            ]
            top = index.search(index.vector(task.comparison_id), k=4, exclude=[task.comparison_id]).ids
            assert sorted(nearest) == sorted(int(i) for i in top)
            assert len(task.candidates) == 15 and (task.comparison_id in task.candidates) == bool(
                task.check_candidate_id
            )
    finally:
        clear_caches()
