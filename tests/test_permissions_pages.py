"""Who may open which page: every page whose URL names a project, for every kind of visitor.

The rules (core.permissions):

- anonymous visitors are sent to log in (302) on every page that is not a volunteer page;
- someone with no role in the project (here: another project's owner) gets 404, never 403, so
  the project's existence does not leak;
- a member whose role is not enough gets 403;
- staff are nobody special: without a membership they get 404 like any outsider (unless the
  deployment sets SKYVOTE_STAFF_SEE_ALL_PROJECTS; tests/test_security_private.py);
- volunteer pages (classify, vote, tutorial, field guide) of a public project are open to everyone,
  logged in or not (a private project's: tests/test_security_private.py).

| roles | pages |
| --- | --- |
| everyone | volunteer pages (of a public project), the project's about page and cover |
| owner, scientist, viewer (READ) | dashboard, volunteer skill, model pages and plots, similarity search and model pages, workflows and subject sets (lists, a workflow's page) |
| owner, scientist (WRITE) | upload, the workflow builder (new, edit, settings, follow-ups, tutorial, field guide, launch, preview, a subject set's page) |
| owner, scientist, viewer (EXPORT) | exports |
| owner, scientist, expert (EXPERT) | gold labeling |
| owner, scientist, viewer, expert (MEMBER) | review queue |
| owner, scientist (OWNER) | project settings and state, train, promote, recompute, retire/unretire, retirement rule |
| owner (TEAM) | team (members, invitations), deleting the project, paid-panel batches |

PAGES below is the table per URL name, the role sets are spelled out here on purpose (not imported from
core.permissions): a change to who may do what has to change this file too. A new page that names a
project fails `test_every_project_page_is_in_the_table` until it has a row.
"""

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse
from rest_framework.views import APIView

from core.models import ModelVersion, Project, ProjectMembership, SubjectSet, Workflow
from core.storage import private_storage
from jobs.models import Job
from panels import services as tasklinks
from tests.tasklinks_support import make_batch, make_subjects

pytestmark = pytest.mark.django_db

PUBLIC = "everyone"
TEAM = {"owner"}
OWNER = {"owner", "scientist"}
READ = {"owner", "scientist", "viewer"}
WRITE = {"owner", "scientist"}
EXPORT = {"owner", "scientist", "viewer"}
EXPERT = {"owner", "scientist", "expert"}
MEMBER = {"owner", "scientist", "viewer", "expert"}

# Who visits: anonymous, another project's owner, the project's members, and staff (no membership).
VISITORS = ("anonymous", "rival", "viewer", "expert", "scientist", "owner", "staff")
MEMBERS = ("viewer", "expert", "scientist")

# URL name: (method, POST data, roles allowed, status an allowed visitor gets).
PAGES = {
    # core
    "core:upload": ("GET", None, WRITE, 200),
    "core:upload_progress": ("GET", None, WRITE, 200),
    "core:exports": ("GET", None, EXPORT, 200),
    "core:export_progress": ("GET", None, EXPORT, 200),
    "core:export_download": ("GET", None, EXPORT, 200),
    # core: the project builder
    "core:project_settings": ("GET", None, OWNER, 200),
    "core:project_delete": ("GET", None, TEAM, 200),
    "core:team": ("GET", None, TEAM, 200),
    "core:project_about": ("GET", None, PUBLIC, 200),
    "core:project_cover": ("GET", None, PUBLIC, 404),  # let in, and this project has no cover
    # core: the workflow builder
    "core:workflows": ("GET", None, READ, 200),
    "core:workflow_new": ("GET", None, WRITE, 200),
    "core:workflow": ("GET", None, READ, 200),
    "core:workflow_edit": ("GET", None, WRITE, 200),
    "core:workflow_settings": ("GET", None, WRITE, 200),
    "core:workflow_tutorial": ("GET", None, WRITE, 200),
    "core:workflow_followups": ("GET", None, WRITE, 200),
    "core:workflow_field_guide": ("GET", None, WRITE, 200),
    "core:workflow_content_image": ("GET", None, PUBLIC, 404),  # let in, and there is no such image
    "core:workflow_launch": ("POST", {"action": "pause"}, WRITE, 302),
    "core:workflow_preview": ("GET", None, WRITE, 200),
    "core:subject_sets": ("GET", None, READ, 200),
    "core:subject_set": ("GET", None, WRITE, 200),
    # labeling: volunteer pages
    "labeling:field_guide": ("GET", None, PUBLIC, 200),
    "labeling:classify": ("GET", None, PUBLIC, 200),
    "labeling:submit_vote": ("POST", {}, PUBLIC, 400),  # let in, and the empty vote refused
    "labeling:tutorial_seen": ("POST", {}, PUBLIC, 302),
    "labeling:undo_vote": ("POST", {}, PUBLIC, 404),  # let in, and there is nothing to undo
    # labeling: scientist pages
    "labeling:project_dashboard": ("GET", None, READ, 200),
    "labeling:crowd_gold": ("GET", None, EXPERT, 200),
    "labeling:crowd_gold_label": ("POST", {"label": "skip"}, EXPERT, 302),
    "labeling:crowd_gold_reset": ("POST", {}, EXPERT, 302),
    "labeling:crowd_volunteers": ("GET", None, READ, 200),
    "labeling:crowd_recompute": ("POST", {}, OWNER, 302),
    "labeling:crowd_review": ("GET", None, MEMBER, 200),
    "labeling:crowd_retire_by_id": ("POST", {"external_id": "s-o1"}, OWNER, 302),
    "labeling:crowd_unretire_by_id": ("POST", {"external_id": "s-o1"}, OWNER, 302),
    "labeling:crowd_retire": ("POST", {}, OWNER, 302),
    "labeling:crowd_unretire": ("POST", {}, OWNER, 302),
    "labeling:crowd_retirement": ("GET", None, OWNER, 200),
    # loop: the real/bogus model pages
    "loop:models": ("GET", None, READ, 200),
    "loop:job": ("GET", None, READ, 200),
    "loop:subject": ("GET", None, READ, 200),
    "loop:saliency": ("GET", None, READ, 200),
    "loop:train": ("POST", {}, OWNER, 302),
    "loop:promote": ("POST", {}, OWNER, 302),
    "loop:start_from": ("POST", {}, OWNER, 302),
    "loop:plot": ("GET", None, READ, 200),
    # gems: the rare-gem candidates; rating them
    "gems:gems": ("GET", None, MEMBER, 200),
    "gems:rate": ("POST", {"rating": "3"}, EXPERT, 302),
    "gems:send": ("POST", {}, OWNER, 302),  # let in, and the missing workflow told on the page
    # panels: batches show worker ids and payments
    "panels:batches": ("GET", None, TEAM, 200),
    "panels:batch_new": ("GET", None, TEAM, 200),
    "panels:batch": ("GET", None, TEAM, 200),
    "panels:batch_status": ("POST", {"status": "open"}, TEAM, 302),
    "panels:batch_csv": ("GET", None, TEAM, 200),
    "panels:batch_review": ("POST", {"decision": "approved"}, TEAM, 302),
    # similarity
    "similarity:classify": ("GET", None, PUBLIC, 200),
    "similarity:submit": ("POST", {}, PUBLIC, 400),  # let in, and the empty answer refused
    "similarity:tutorial_seen": ("POST", {}, PUBLIC, 302),
    "similarity:search": ("GET", None, READ, 200),
    "similarity:models": ("GET", None, READ, 200),
    "similarity:job_status": ("GET", None, READ, 200),
    "similarity:train_now": ("POST", {}, OWNER, 302),
    "similarity:preview": ("GET", None, WRITE, 200),
}


def _project_pages() -> dict[str, list[str]]:
    """Every page (not API) URL name whose pattern has a `project` kwarg → its kwarg names."""
    found: dict[str, list[str]] = {}

    def walk(patterns, prefix, namespace):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                inner = ":".join(n for n in (namespace, pattern.namespace) if n)
                walk(pattern.url_patterns, route, inner)
                continue
            kwargs = list(pattern.pattern.regex.groupindex)
            view_class = getattr(pattern.callback, "cls", None)
            if "project" not in kwargs or (isinstance(view_class, type) and issubclass(view_class, APIView)):
                continue
            name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            assert name not in found, f"two page patterns are named {name}"
            found[name] = kwargs

    walk(get_resolver().url_patterns, "", "")
    return found


def expected(visitor: str, allowed, ok: int) -> int | str:
    if allowed == PUBLIC:
        return ok
    if visitor == "anonymous":
        return "login"
    if visitor in allowed:
        return ok
    return 403 if visitor in MEMBERS else 404


@pytest.fixture
def world(django_user_model):
    users = {
        name: django_user_model.objects.create_user(name, password=f"pw-{name}-123456")
        for name in ("owner", "rival", "viewer", "expert", "scientist")
    }
    users["staff"] = django_user_model.objects.create_user("staff", password="pw-staff-123456", is_staff=True)
    project = Project.objects.create(slug="alpha", name="Alpha", owner=users["owner"])
    Project.objects.create(slug="rival", name="Rival", owner=users["rival"])
    for role in MEMBERS:
        ProjectMembership.objects.create(project=project, user=users[role], role=role)
    rb = Workflow.objects.create(project=project, slug="rb", name="Real or bogus?")
    sim = Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    ordinary, _gold = make_subjects(rb, n_ordinary=8, n_gold=4)
    subject = ordinary[0]

    roc = private_storage().save(f"models/{rb.pk}/v1-roc.png", ContentFile(b"\x89PNG"))
    model = ModelVersion.objects.create(
        workflow=rb,
        version=1,
        status=ModelVersion.ACTIVE,
        artifact_sha256="ab" * 32,
        metrics={"plots": {"roc": roc}},
    )
    rb.active_model = model
    rb.save(update_fields=["active_model"])
    # A cached saliency map, so the saliency page answers without a real model.
    default_storage.save(
        f"saliency/{rb.pk}/v1-{model.artifact_sha256[:8]}/{subject.pk}.png", ContentFile(b"\x89PNG")
    )

    batch = make_batch(rb, users["owner"])
    assignment, _ = tasklinks.start_assignment(batch, "W1")
    ingest_job = Job.objects.create(project=project, workflow=rb, kind=Job.INGEST, status=Job.SUCCEEDED)
    subject_set = SubjectSet.objects.create(project=project, name="night 1")
    export_job = Job.objects.create(
        project=project, kind=Job.EXPORT, status=Job.SUCCEEDED, params={"kind": "labels", "format": "csv"}
    )
    export_job.result.save("labels.csv", ContentFile(b"external_id,label\n"))
    return SimpleNamespace(
        users=users,
        project=project,
        rb=rb,
        sim=sim,
        subject=subject,
        model=model,
        batch=batch,
        assignment=assignment,
        ingest_job=ingest_job,
        export_job=export_job,
        subject_set=subject_set,
    )


def _kwargs(name: str, kwarg_names: list[str], world, project_slug: str | None = None) -> dict:
    values = {
        "project": project_slug or world.project.slug,
        "workflow": (world.sim if name.startswith("similarity:") else world.rb).slug,
        "subject": world.subject.pk,
        "version": world.model.version,
        "plot": "roc",
        "batch": world.batch.pk,
        "assignment": world.assignment.pk,
        "job": (world.ingest_job if name.startswith("core:upload") else world.export_job).pk,
        "subject_set": world.subject_set.pk,
        "name": "missing.png",
    }
    missing = [k for k in kwarg_names if k not in values]
    assert not missing, f"{name}: the test world has no value for {missing}"
    return {k: values[k] for k in kwarg_names}


def _visit(visitor, world, method, url, data) -> int | str:
    client = Client()
    if visitor != "anonymous":
        client.force_login(world.users[visitor])
    response = client.post(url, data) if method == "POST" else client.get(url)
    if response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL)):
        return "login"
    return response.status_code


def test_every_project_page_is_in_the_table():
    pages = set(_project_pages())
    assert not pages - set(PAGES), f"pages without a row in PAGES: {sorted(pages - set(PAGES))}"
    assert not set(PAGES) - pages, f"rows for pages that do not exist: {sorted(set(PAGES) - pages)}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_who_may_open_the_page(name, world):
    method, data, allowed, ok = PAGES[name]
    url = reverse(name, kwargs=_kwargs(name, _project_pages()[name], world))
    got = {visitor: _visit(visitor, world, method, url, data) for visitor in VISITORS}
    want = {visitor: expected(visitor, allowed, ok) for visitor in VISITORS}
    assert got == want, f"{method} {url}\n got: {got}\nwant: {want}"


def test_a_project_that_does_not_exist_is_404_even_for_staff(world):
    for name, kwarg_names in _project_pages().items():
        method, data, _allowed, _ok = PAGES[name]
        url = reverse(name, kwargs=_kwargs(name, kwarg_names, world, project_slug="no-such-project"))
        assert _visit("staff", world, method, url, data) == 404, f"{method} {url}"
