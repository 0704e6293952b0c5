"""A database made by the previous version (every model in `labeling`) migrates with nothing lost.

The suite runs with --nomigrations, so the migrations themselves run in a subprocess
(`python -m tests.test_migrations`) on a database of its own: a SQLite file in tmp_path, and, when
the suite runs on PostgreSQL, a temporary PostgreSQL database created and dropped here. The
subprocess migrates to `labeling 0001_initial` + `similarity 0001_initial` (the old schema), writes
one of everything through the historical models, migrates to the latest, reads it all back through
the new models (core, jobs, panels, labeling, similarity) and writes new rows through them, reporting
JSON that the test compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

# Each test starts Django in a subprocess and runs migrations: seconds each.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
MARKER = "MIGRATION-REPORT "
OLD_STATE = [("labeling", "0001_initial"), ("similarity", "0001_initial")]
# Where each model lived before the split, and where it lives now (the table never changed).
MODELS = {
    "Project": ("labeling", "core"),
    "ProjectMembership": ("labeling", "core"),
    "Workflow": ("labeling", "core"),
    "SubjectSet": ("labeling", "core"),
    "Subject": ("labeling", "core"),
    "Participant": ("labeling", "core"),
    "ModelVersion": ("labeling", "core"),
    "ApiToken": ("labeling", "core"),
    "Job": ("labeling", "jobs"),
    "Batch": ("labeling", "panels"),
    "Assignment": ("labeling", "panels"),
    "Vote": ("labeling", "labeling"),
    "ParticipantSkill": ("labeling", "labeling"),
    "SimilarityTask": ("similarity", "similarity"),
    "SimilarityVote": ("similarity", "similarity"),
    "PairStat": ("similarity", "similarity"),
}
VOTE_KEY = uuid.UUID("00000000-0000-4000-8000-000000000001")
PANEL_VOTE_KEY = uuid.UUID("00000000-0000-4000-8000-000000000002")
SIM_VOTE_KEY = uuid.UUID("00000000-0000-4000-8000-000000000003")


# ---------------------------------------------------------------------------------------------
# The subprocess (`python -m tests.test_migrations`, with DATABASE_URL set): Django is imported
# only here, so that importing this module in the pytest process touches no database.


def _snapshot(get_model) -> dict:
    """Every row of every moved table (and the subject set ↔ workflow links), as plain JSON."""
    from django.core.serializers.json import DjangoJSONEncoder

    rows = {}
    for name in MODELS:
        model = get_model(name)
        rows[name] = list(model.objects.order_by("pk").values())
    through = get_model("SubjectSet").workflows.through
    rows["SubjectSet.workflows"] = sorted(through.objects.values_list("subjectset_id", "workflow_id"))
    return json.loads(json.dumps(rows, cls=DjangoJSONEncoder))


def _old_models():
    """The historical models of the old state, as the database has it now."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    state = executor.loader.project_state(list(executor.loader.applied_migrations))
    return state.apps


def _write_old_rows(apps) -> None:
    """One of everything, written the way the previous version's code wrote it."""
    from django.utils import timezone

    def model(name):
        return apps.get_model(MODELS[name][0], name)

    user_model = apps.get_model("auth", "User")
    owner = user_model.objects.create(username="owner", password="!", is_staff=False)
    volunteer = user_model.objects.create(username="volunteer", password="!")
    expert = user_model.objects.create(username="expert", password="!")

    project = model("Project").objects.create(slug="ztf", name="ZTF", owner=owner, pseudonym_salt="salt-1")
    model("ProjectMembership").objects.create(project=project, user=expert, role="expert")
    # Answers as the previous version stored them (its default, a list of strings): the historical
    # models' default is today's callable, which makes objects.
    rb = model("Workflow").objects.create(
        project=project, slug="rb", name="Real or bogus?", retirement_limit=3, answers=["real", "bogus"]
    )
    sim = model("Workflow").objects.create(
        project=project, slug="sim", name="Similar?", kind="similarity", answers=["real", "bogus"]
    )
    version = model("ModelVersion").objects.create(
        workflow=rb, version=1, status="active", metrics={"auc": 0.9}, artifact="models/1/1.pt"
    )
    rb.active_model = version
    rb.save(update_fields=["active_model"])
    subject_set = model("SubjectSet").objects.create(project=project, name="night 1")
    subject_set.workflows.add(rb)

    subject = model("Subject")
    s1 = subject.objects.create(
        project=project, workflow=rb, subject_set=subject_set, external_id="s1", data="subjects/1/1.npy",
        images={"science": "subjects/1/1-sci.png"}, gold_label="real", gold_by=expert, vote_count=2,
        answer_counts={"real": 2},
    )  # fmt: skip
    s2 = subject.objects.create(project=project, workflow=rb, subject_set=subject_set, external_id="s2")
    s3 = subject.objects.create(project=project, workflow=sim, external_id="s3")
    s4 = subject.objects.create(project=project, workflow=sim, external_id="s4")

    participant = model("Participant")
    registered = participant.objects.create(kind="user", user=volunteer)
    participant.objects.create(kind="anonymous", session_key="sess-1", merged_into=registered)
    worker = participant.objects.create(kind="worker", external_id="PW-1")

    batch = model("Batch").objects.create(workflow=rb, name="pilot", created_by=owner, n_assignments=2)
    assignment = model("Assignment").objects.create(
        batch=batch, participant=worker, worker_id="PW-1", subject_ids=[s1.pk, s2.pk], n_done=1
    )
    model("Vote").objects.create(
        workflow=rb, subject=s1, participant=registered, answer="real", idempotency_key=VOTE_KEY
    )
    model("Vote").objects.create(
        workflow=rb, subject=s1, participant=worker, answer="real", idempotency_key=PANEL_VOTE_KEY,
        assignment=assignment, source="panel",
    )  # fmt: skip
    model("ParticipantSkill").objects.create(workflow=rb, participant=registered, n_votes=1, p_l=0.8)

    job = model("Job")
    job.objects.create(
        project=project, workflow=rb, kind="train", status="succeeded", model_version=version,
        created_by=owner, params={"reason": "labels"}, attempts=1, finished_at=timezone.now(),
    )  # fmt: skip
    job.objects.create(
        project=project, kind="export", status="succeeded", created_by=owner,
        params={"kind": "votes", "format": "csv"}, result="jobs/1/2/votes.csv",
    )  # fmt: skip
    model("ApiToken").objects.create(user=owner, name="laptop", prefix="sv_abc", key_hash="f" * 64)

    task = model("SimilarityTask").objects.create(
        workflow=sim, comparison=s3, candidates=[s4.pk], candidate_sources=["random"], model_version=version,
        n_votes=1,
    )  # fmt: skip
    model("SimilarityVote").objects.create(
        workflow=sim,
        task=task,
        participant=registered,
        chosen=[s4.pk],
        n_chosen=1,
        idempotency_key=SIM_VOTE_KEY,
    )
    model("PairStat").objects.create(workflow=sim, comparison=s3, candidate=s4, shown=1, chosen=1)

    # What the admin keeps by content type: a curator's model permission and an object's history.
    content_type = apps.get_model("contenttypes", "ContentType").objects.get(
        app_label="labeling", model="subject"
    )
    curator = user_model.objects.create(username="curator", password="!", is_staff=True)
    curator.user_permissions.add(
        apps.get_model("auth", "Permission").objects.get(content_type=content_type, codename="change_subject")
    )
    apps.get_model("admin", "LogEntry").objects.create(
        user=curator, content_type=content_type, object_id=str(s1.pk), object_repr="s1", action_flag=2,
        change_message="gold label set",
    )  # fmt: skip


def _relations_through_new_models() -> dict:
    """What the new models say about the rows, following every relation across the new apps."""
    from django.contrib.auth import get_user_model

    from core.models import ApiToken, ModelVersion, Participant, Project, Subject, Workflow
    from jobs.models import Job
    from labeling.models import ParticipantSkill, Vote
    from panels.models import Assignment, Batch
    from similarity.models import PairStat, SimilarityTask, SimilarityVote

    project = Project.objects.select_related("owner").get(slug="ztf")
    rb = Workflow.objects.select_related("project", "active_model").get(project=project, slug="rb")
    sim = Workflow.objects.get(project=project, slug="sim")
    s1 = Subject.objects.select_related("project", "workflow", "subject_set", "gold_by").get(external_id="s1")
    registered = Participant.objects.select_related("user").get(kind="user")
    panel_vote = Vote.objects.select_related("assignment__batch__workflow", "participant").get(
        idempotency_key=PANEL_VOTE_KEY
    )
    train = Job.objects.select_related("project", "workflow", "model_version", "created_by").get(kind="train")
    task = SimilarityTask.objects.select_related("comparison", "model_version", "workflow").get()
    sim_vote = SimilarityVote.objects.select_related("task", "participant__user", "workflow").get()
    pair = PairStat.objects.select_related("comparison", "candidate", "workflow").get()
    user = get_user_model()
    return {
        "project": {
            "owner": project.owner.username,
            "salt": project.pseudonym_salt,
            "members": sorted(project.memberships.values_list("user__username", "role")),
            "workflows": sorted(project.workflows.values_list("slug", flat=True)),
            "subject_sets": list(project.subject_sets.values_list("name", flat=True)),
            "subjects": sorted(project.subjects.values_list("external_id", flat=True)),
            "jobs": sorted(project.jobs.values_list("kind", flat=True)),
            "owned_by_owner": list(
                user.objects.get(username="owner").owned_projects.values_list("slug", flat=True)
            ),
        },
        "rb": {
            "active_model": [rb.active_model.version, rb.active_model.status, rb.active_model.metrics],
            "model_versions": list(rb.model_versions.values_list("version", flat=True)),
            "subject_sets": list(rb.subject_sets.values_list("name", flat=True)),
            "subjects": sorted(rb.subjects.values_list("external_id", flat=True)),
            "votes": sorted(rb.votes.values_list("participant__kind", "answer", "source")),
            "skills": list(rb.skills.values_list("participant__user__username", "n_votes", "p_l")),
            "batches": list(rb.batches.values_list("name", "created_by__username")),
            "jobs": list(rb.jobs.values_list("kind", "status")),
        },
        "s1": {
            "project": s1.project.slug,
            "workflow": s1.workflow.slug,
            "subject_set": s1.subject_set.name,
            "gold": [s1.gold_label, s1.gold_by.username],
            "data": s1.data.name,
            "images": s1.images,
            "counts": [s1.vote_count, s1.answer_counts],
            "votes": sorted(s1.votes.values_list("participant__kind", flat=True)),
        },
        "participants": {
            "registered": registered.user.username,
            "volunteer_participant": user.objects.get(username="volunteer").participant.pk == registered.pk,
            "merged_from": list(registered.merged_from.values_list("session_key", flat=True)),
            "votes": list(registered.votes.values_list("subject__external_id", flat=True)),
            "similarity_votes": registered.similarity_votes.count(),
            "worker_assignments": list(
                Participant.objects.get(kind="worker").assignments.values_list("worker_id", flat=True)
            ),
        },
        "panel_vote": {
            "batch": panel_vote.assignment.batch.name,
            "batch_workflow": panel_vote.assignment.batch.workflow.slug,
            "worker": panel_vote.participant.external_id,
            "assignment_votes": panel_vote.assignment.votes.count(),
            "assignments_of_batch": list(
                Batch.objects.get(name="pilot").assignments.values_list("worker_id", "n_done", "subject_ids")
            ),
            "assignment_participant": Assignment.objects.get().participant.kind,
        },
        "train_job": {
            "project": train.project.slug,
            "workflow": train.workflow.slug,
            "model_version": train.model_version.version,
            "created_by": train.created_by.username,
            "params": train.params,
            "jobs_of_version": list(ModelVersion.objects.get().jobs.values_list("kind", flat=True)),
        },
        "export_job": list(Job.objects.filter(kind="export").values_list("workflow", "result", "params")),
        "api_tokens": list(ApiToken.objects.values_list("user__username", "name", "prefix")),
        "skill_unique": ParticipantSkill.objects.filter(workflow=rb, participant=registered).count(),
        "similarity": {
            "task": [
                task.workflow.slug,
                task.comparison.external_id,
                task.model_version.version,
                task.candidates,
            ],
            "task_votes": task.votes.count(),
            "vote": [sim_vote.workflow.slug, sim_vote.participant.user.username, sim_vote.chosen],
            "pair": [pair.workflow.slug, pair.comparison.external_id, pair.candidate.external_id, pair.rate],
            "of_workflow": [
                sim.similarity_tasks.count(),
                sim.similarity_votes.count(),
                sim.pair_stats.count(),
            ],
            "of_subject": Subject.objects.get(external_id="s3").similarity_tasks.count(),
            "of_version": ModelVersion.objects.get().similarity_tasks.count(),
        },
    }


def _admin_records_through_new_models() -> dict:
    """The curator's permission on subjects and subject s1's admin history, as the admin looks them up."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    from core.models import Subject

    s1 = Subject.objects.get(external_id="s1")
    history = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Subject), object_id=str(s1.pk)
    )
    return {
        "curator_can_change_subjects": get_user_model()
        .objects.get(username="curator")
        .has_perm("core.change_subject"),
        "s1_history": list(history.values_list("change_message", flat=True)),
    }


def _write_new_rows() -> dict:
    """New rows through the new models: the id sequences carried over with the tables."""
    from core.models import Participant, Project, Subject, Workflow
    from jobs.models import Job
    from labeling.models import Vote

    owner = Project.objects.get(slug="ztf").owner
    project = Project.objects.create(slug="later", name="Later", owner=owner)
    workflow = Workflow.objects.create(project=project, slug="rb", name="Real or bogus?")
    subject = Subject.objects.create(project=project, workflow=workflow, external_id="s1")
    participant = Participant.objects.create(kind="anonymous", session_key="sess-2")
    vote = Vote.objects.create(workflow=workflow, subject=subject, participant=participant, answer="bogus")
    job = Job.objects.create(project=project, workflow=workflow, kind="ingest")
    return {"project": project.pk, "subject": subject.pk, "vote": vote.pk, "job": job.pk}


def _subprocess_main() -> None:
    import django

    django.setup()
    from django.apps import apps as global_apps
    from django.core.management import call_command

    report = {}
    for app_label, name in OLD_STATE:
        call_command("migrate", app_label, name, verbosity=0, interactive=False)
    for app_label in ("admin", "sessions"):  # the previous version's other apps, already at their latest
        call_command("migrate", app_label, verbosity=0, interactive=False)
    old = _old_models()
    assert "core" not in old.app_configs, "the old state must not know the new apps yet"
    _write_old_rows(old)
    report["old"] = _snapshot(lambda name: old.get_model(MODELS[name][0], name))

    call_command("migrate", verbosity=0, interactive=False)
    report["new"] = _snapshot(lambda name: global_apps.get_model(MODELS[name][1], name))
    report["relations"] = _relations_through_new_models()
    report["admin"] = _admin_records_through_new_models()
    report["new_ids"] = _write_new_rows()
    report["after_writes"] = _snapshot(lambda name: global_apps.get_model(MODELS[name][1], name))
    print(MARKER + json.dumps(report), flush=True)


# ---------------------------------------------------------------------------------------------
# The tests


def _environment(tmp_path: Path, database_url: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CELERY_BROKER_URL", "CACHE_URL", "SQLITE_TEST_NAME", "TEST_DATABASE_NAME")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="skyvote.settings",
        DATABASE_URL=database_url,
        SKYVOTE_VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "media"),
        SKYVOTE_PRIVATE_ROOT=str(tmp_path / "private"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _run(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def _temporary_postgres_database():
    """A temporary PostgreSQL database on the suite's server (its URL), dropped afterwards."""
    import psycopg
    from django.conf import settings
    from psycopg import sql

    conf = settings.DATABASES["default"]
    params = {
        "host": conf.get("HOST") or "localhost",
        "port": conf.get("PORT") or 5432,
        "user": conf.get("USER") or None,
        "password": conf.get("PASSWORD") or None,
    }
    name = f"skyvote_migrations_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    user = params["user"] or ""
    auth = f"{user}:{params['password']}@" if params["password"] else (f"{user}@" if user else "")
    try:
        yield f"postgres://{auth}{params['host']}:{params['port']}/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _migrate_old_database(tmp_path: Path, database_url: str) -> dict:
    result = _run(["-m", "tests.test_migrations"], _environment(tmp_path, database_url))
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    assert result.returncode == 0 and lines, (
        f"the migration subprocess failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return json.loads(lines[-1][len(MARKER) :])


EXPECTED_RELATIONS = {
    "project": {
        "owner": "owner",
        "salt": "salt-1",
        "members": [["expert", "expert"]],
        "workflows": ["rb", "sim"],
        # core 0006 puts set-less subjects (s3, s4 of "sim") into a "default" set of their workflow.
        "subject_sets": ["night 1", "default"],
        "subjects": ["s1", "s2", "s3", "s4"],
        "jobs": ["export", "train"],
        "owned_by_owner": ["ztf"],
    },
    "rb": {
        "active_model": [1, "active", {"auc": 0.9}],
        "model_versions": [1],
        "subject_sets": ["night 1"],
        "subjects": ["s1", "s2"],
        "votes": [["user", "real", "web"], ["worker", "real", "panel"]],
        "skills": [["volunteer", 1, 0.8]],
        "batches": [["pilot", "owner"]],
        "jobs": [["train", "succeeded"]],
    },
    "s1": {
        "project": "ztf",
        "workflow": "rb",
        "subject_set": "night 1",
        "gold": ["real", "expert"],
        "data": "subjects/1/1.npy",
        "images": {"science": "subjects/1/1-sci.png"},
        "counts": [2, {"real": 2}],
        "votes": ["user", "worker"],
    },
    "participants": {
        "registered": "volunteer",
        "volunteer_participant": True,
        "merged_from": ["sess-1"],
        "votes": ["s1"],
        "similarity_votes": 1,
        "worker_assignments": ["PW-1"],
    },
    "panel_vote": {
        "batch": "pilot",
        "batch_workflow": "rb",
        "worker": "PW-1",
        "assignment_votes": 1,
        "assignments_of_batch": [["PW-1", 1, [1, 2]]],
        "assignment_participant": "worker",
    },
    "train_job": {
        "project": "ztf",
        "workflow": "rb",
        "model_version": 1,
        "created_by": "owner",
        "params": {"reason": "labels"},
        "jobs_of_version": ["train"],
    },
    "export_job": [[None, "jobs/1/2/votes.csv", {"kind": "votes", "format": "csv"}]],
    "api_tokens": [["owner", "laptop", "sv_abc"]],
    "skill_unique": 1,
    "similarity": {
        "task": ["sim", "s3", 1, [4]],
        "task_votes": 1,
        "vote": ["sim", "volunteer", [4]],
        "pair": ["sim", "s3", "s4", 1.0],
        "of_workflow": [1, 1, 1],
        "of_subject": 1,
        "of_version": 1,
    },
}


def _old_columns(snapshot: dict, old: dict) -> dict:
    """The snapshot cut down to the columns the old schema had: later migrations may add columns (none
    may drop one)."""
    cut = {"SubjectSet.workflows": snapshot["SubjectSet.workflows"]}  # (subject set, workflow) pairs
    for table in MODELS:
        columns = set(old[table][0])
        for row in snapshot[table]:
            assert columns <= set(row), f"{table} lost columns {sorted(columns - set(row))}"
        cut[table] = [{key: row[key] for key in columns} for row in snapshot[table]]
    return cut


def _data_migrated(old: dict) -> dict:
    """What the old rows become by design of the data migrations (core 0006, the workflow builder):
    answers, once strings, are objects with the same keys; subjects without a subject set join a new
    "default" set linked to their workflow. Everything else stays as it was."""
    old = json.loads(json.dumps(old))
    known = {"real": ("Real", "R", "real"), "bogus": ("Bogus", "B", "bogus")}
    for workflow in old["Workflow"]:
        workflow["answers"] = [
            {"key": a, "label": known[a][0], "shortcut": known[a][1], "help": "", "counts_as": known[a][2]}
            for a in workflow["answers"]
        ]
    next_set = max(row["id"] for row in old["SubjectSet"]) + 1
    for workflow_id in sorted({s["workflow_id"] for s in old["Subject"] if s["subject_set_id"] is None}):
        old["SubjectSet"].append({"id": next_set, "name": "default", "project_id": 1})
        old["SubjectSet.workflows"] = sorted([*old["SubjectSet.workflows"], [next_set, workflow_id]])
        for subject in old["Subject"]:
            if subject["subject_set_id"] is None and subject["workflow_id"] == workflow_id:
                subject["subject_set_id"] = next_set
        next_set += 1
    return old


def _without_new_sets_times(rows: dict, old: dict) -> dict:
    # The "default" sets were made by the migration, at a time the old database cannot know.
    n_old = len(old["SubjectSet"])
    rows["SubjectSet"] = [
        {k: v for k, v in row.items() if i < n_old or k != "created_at"}
        for i, row in enumerate(rows["SubjectSet"])
    ]
    return rows


def _check(report: dict) -> None:
    old = report["old"]
    # Every row of the old database, column for column, read through the new models.
    assert {name: len(rows) for name, rows in old.items()} == {
        "Project": 1, "ProjectMembership": 1, "Workflow": 2, "SubjectSet": 1, "Subject": 4,
        "Participant": 3, "ModelVersion": 1, "ApiToken": 1, "Job": 2, "Batch": 1, "Assignment": 1,
        "Vote": 2, "ParticipantSkill": 1, "SimilarityTask": 1, "SimilarityVote": 1, "PairStat": 1,
        "SubjectSet.workflows": 1,
    }  # fmt: skip
    migrated = _data_migrated(old)
    assert _without_new_sets_times(_old_columns(report["new"], old), old) == migrated
    # Every relation, followed across the new apps in both directions.
    assert report["relations"] == EXPECTED_RELATIONS
    # New rows get fresh ids (the sequences came along with the tables).
    after = _old_columns(report["after_writes"], old)
    for name, table in (("project", "Project"), ("subject", "Subject"), ("vote", "Vote"), ("job", "Job")):
        assert report["new_ids"][name] > max(row["id"] for row in old[table])
        assert after[table][:-1] == migrated[table] and after[table][-1]["id"] == report["new_ids"][name]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated(request, tmp_path_factory):
    """The report of one old database migrated to the latest: a SQLite file, or a PostgreSQL database."""
    tmp_path = tmp_path_factory.mktemp(f"migrations-{request.param}")
    if request.param == "sqlite":
        return _migrate_old_database(tmp_path, f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with _temporary_postgres_database() as database_url:
        return _migrate_old_database(tmp_path, database_url)


def test_a_database_of_the_previous_version_migrates_with_every_row_and_relation(migrated):
    _check(migrated)


def test_admin_permissions_and_history_follow_the_moved_models(migrated):
    assert migrated["admin"] == {"curator_can_change_subjects": True, "s1_history": ["gold label set"]}


def test_the_models_and_the_migrations_agree(tmp_path):
    result = _run(
        ["manage.py", "makemigrations", "--check", "--dry-run", "-v", "1"],
        _environment(tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite3'}"),
        timeout=120,
    )
    assert result.returncode == 0, f"models changed without a migration:\n{result.stdout}\n{result.stderr}"
    assert "No changes detected" in result.stdout


if __name__ == "__main__":
    _subprocess_main()
