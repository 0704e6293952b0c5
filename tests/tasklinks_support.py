"""Helpers shared by the tests/test_tasklinks_*.py files: subjects, batches and an annotator driving the pages."""

import random
import re
import uuid
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from core.models import Subject
from panels import services as tasklinks
from panels.models import Assignment

SUBJECT_RE = re.compile(r'name="subject" value="(\d+)"')
KEY_RE = re.compile(r'name="key" value="([0-9a-f-]{36})"')
HTMX = {"HTTP_HX_REQUEST": "true"}


def make_subjects(workflow, n_ordinary=8, n_gold=4, seed=0, prefix="s"):
    """Subjects straight in the database (no images needed for the panel flow). Gold alternate real/bogus;
    even gold subjects use obvious subtypes (attention checks), odd ones subtle ones."""
    rng = random.Random(seed)
    ordinary = [
        Subject.objects.create(
            project=workflow.project,
            workflow=workflow,
            external_id=f"{prefix}-o{i}",
            random_key=rng.random(),
            metadata={"magpsf": 18.5, "fid": 2},
        )
        for i in range(n_ordinary)
    ]
    gold = []
    for i in range(n_gold):
        label = "real" if i % 2 == 0 else "bogus"
        subtype = (
            ("new_point_source" if label == "real" else "satellite_streak")
            if i % 4 < 2
            else ("variable_star" if label == "real" else "cosmic_ray")
        )
        gold.append(
            Subject.objects.create(
                project=workflow.project,
                workflow=workflow,
                external_id=f"{prefix}-g{i}",
                random_key=rng.random(),
                gold_label=label,
                gold_subtype=subtype,
                metadata={"magpsf": 18.5, "fid": 2},
            )
        )
    return ordinary, gold


def make_batch(workflow, owner=None, **overrides):
    settings = dict(
        name="Pilot",
        tasks_per_assignment=5,
        n_assignments=3,
        gold_share=0.4,
        expires_at=timezone.now() + timedelta(days=7),
        instructions="Look carefully at the difference image.",
        payment_note="£1.00 for about 5 minutes.",
        return_url_template="https://app.prolific.com/submissions/complete?cc=C1234&code={code}",
    )
    settings.update(overrides)
    return tasklinks.create_batch(workflow=workflow, created_by=owner, **settings)


def landing_url(batch, **query):
    url = reverse("panels:landing", args=[tasklinks.batch_token(batch)])
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def start(client, batch, worker_id, **extra):
    """Consent and start; returns the response (a redirect to the task page on success)."""
    data = {"worker_id": worker_id, "consent": "yes", **extra}
    return client.post(reverse("panels:start", args=[tasklinks.batch_token(batch)]), data)


def task_form(html: str) -> tuple[int, str]:
    subject = SUBJECT_RE.search(html)
    key = KEY_RE.search(html)
    assert subject and key, "no task form on the page"
    return int(subject.group(1)), key.group(1)


def right_answer(subject_id: int) -> str:
    subject = Subject.objects.get(pk=subject_id)
    return subject.gold_label or subject.truth_label or "real"


def answer(client, vote_url, subject_id, answer_value, key=None, htmx=True):
    data = {"subject": subject_id, "answer": answer_value, "key": key or str(uuid.uuid4())}
    return client.post(vote_url, data, **(HTMX if htmx else {}))


def urls_of(assignment: Assignment, batch) -> dict[str, str]:
    token = tasklinks.batch_token(batch)
    akey = tasklinks.assignment_token(assignment)
    return {
        "task": reverse("panels:task", args=[token, akey]),
        "vote": reverse("panels:vote", args=[token, akey]),
        "done": reverse("panels:done", args=[token, akey]),
    }


def work_through(client, task_url, vote_url, choose=right_answer, limit=100):
    """Answer every task shown on the task page until the server sends us to the completion page."""
    for _ in range(limit):
        page = client.get(task_url)
        if page.status_code == 302:
            return page
        assert page.status_code == 200, page.content[:500]
        subject_id, key = task_form(page.content.decode())
        response = answer(client, vote_url, subject_id, choose(subject_id), key)
        if response.headers.get("HX-Redirect"):
            return response
        assert response.status_code == 200, response.content[:500]
    raise AssertionError("the assignment never completed")
