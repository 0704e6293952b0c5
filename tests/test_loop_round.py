"""A training round, run through the task functions: train → evaluate → register → promote → score → rank.

Tiny rounds on ~160 synthetic subjects (2 epochs), eager Celery (the conftest), real DB and storage.
"""

import hashlib

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage

from core.models import ModelVersion, Participant, Subject
from core.storage import private_storage
from jobs.models import Job
from jobs.services import JobLost, JobRun, claim, run_job, sweep_jobs
from labeling import model_voter
from labeling.selection import TOP_FEW, next_subject
from loop import services as loop
from tests.loop_support import label_subjects, make_pool, ranking, tiny_loop_settings

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def loop_settings(settings, tmp_path):
    return tiny_loop_settings(settings, tmp_path)


def run_round(workflow, capture, **kwargs) -> Job:
    with capture(execute=True):
        job, created = loop.request_training(workflow, **kwargs)
    assert created
    job.refresh_from_db()
    return job


def test_round_registers_promotes_and_reranks_the_pool(
    workflow, project, loop_settings, django_capture_on_commit_callbacks
):
    pool = make_pool(project, workflow)
    before = ranking(workflow)
    assert before == sorted(before)  # no model yet: every priority is 0

    job = run_round(workflow, django_capture_on_commit_callbacks)

    assert job.status == Job.SUCCEEDED, job.error
    assert job.progress == 1.0 and job.dispatched_at and job.finished_at and job.attempts == 1
    version = job.model_version
    workflow.refresh_from_db()
    assert workflow.active_model == version and version.status == ModelVersion.ACTIVE
    assert version.version == 1 and version.n_train == len(pool.labeled)
    # What it trained on is recorded: the model as a voter never votes on those (labeling.model_voter).
    trained, complete = model_voter.trained_subject_ids(workflow)
    assert complete and trained.tolist() == sorted(pool.labeled)
    assert version.device.startswith("cpu") or version.device.startswith("cuda")
    assert version.duration_s > 0
    heldout = version.metrics["heldout"]
    assert heldout["n"] == len(pool.gold) and 0.0 <= heldout["roc_auc"] <= 1.0
    assert set(version.metrics["timings_s"]) == {"export", "train", "evaluate", "register", "score", "write"}
    # The artifact in (private) storage is the one whose SHA-256 was recorded.
    with private_storage().open(version.artifact.name, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == version.artifact_sha256
    # Plots are drawn on first request from the held-out data the round keeps, then stored.
    assert len(version.metrics["plot_data"]["y"]) == len(pool.gold) and version.metrics["plots"] == {}
    for name in ("roc", "reliability", "learning_curve"):
        stored = loop.plot_file(version, name)
        assert version.metrics["plots"][name] == stored and loop.plot_file(version, name) == stored
        assert private_storage().exists(stored) and not default_storage.exists(stored)
        with private_storage().open(stored, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    # Every unretired subject was scored and ranked by the workflow's strategy (entropy).
    active = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    assert not active.filter(model_score__isnull=True).exists()
    assert active.count() == version.metrics["pool"]["n"] == len(pool.gold) + len(pool.unlabeled)
    after = ranking(workflow)
    assert after != before
    rows = list(
        Subject.objects.filter(pk__in=after)
        .order_by("-priority")
        .values_list("model_uncertainty", "acquisition_score")
    )
    uncertainty = [u for u, _ in rows]
    assert uncertainty == sorted(uncertainty, reverse=True)
    assert all(abs(u - a) < 1e-6 for u, a in rows)  # entropy strategy: acquisition score = entropy
    # Retired (labelled) subjects keep no new ranking.
    assert not Subject.objects.filter(pk__in=pool.labeled, model_score__isnull=False).exists()

    # The selector now serves from the top of the new ranking.
    workflow.exploration_share = 0.0
    workflow.gold_schedule = [[None, 0.0]]
    workflow.save()
    participant = Participant.objects.create(kind=Participant.ANONYMOUS, session_key="s1")
    picks = {next_subject(workflow, participant).pk for _ in range(20)}
    assert picks <= set(after[:TOP_FEW])


def test_labels_decided_while_a_round_waits_do_not_start_another_round_at_once(
    workflow, project, loop_settings, django_capture_on_commit_callbacks
):
    pool = make_pool(project, workflow)
    workflow.train_every = 20
    workflow.save(update_fields=["train_every"])
    # Queued when only 10 labels were decided; the other 50 arrived before a worker took the round.
    job = run_round(workflow, django_capture_on_commit_callbacks, reason="labels", decided=10)
    assert job.status == Job.SUCCEEDED, job.error
    assert job.model_version.n_train == len(pool.labeled)

    workflow.refresh_from_db()
    assert workflow.labels_at_last_round == len(pool.labeled)
    assert loop.check_trigger(workflow, reason="sweep") == workflow.train_every
    assert not Job.objects.filter(workflow=workflow, kind=Job.TRAIN, status=Job.QUEUED).exists()


def test_a_worse_model_is_not_promoted_until_the_owner_forces_it(
    workflow, project, loop_settings, settings, django_capture_on_commit_callbacks
):
    pool = make_pool(project, workflow)
    first = run_round(workflow, django_capture_on_commit_callbacks).model_version
    v1_auc = first.metrics["heldout"]["roc_auc"]
    assert v1_auc > 0.6, "the first model should have learnt something on easy synthetic data"
    ranked_by_v1 = ranking(workflow)

    # Round 2 learns from inverted crowd labels, from scratch: worse on the held-out set.
    settings.SKYVOTE_LOOP = {**settings.SKYVOTE_LOOP, "warm_start": False, "train_max_epochs": 4}
    label_subjects(pool.labeled, 1 - pool.truth[: len(pool.labeled)])
    job = run_round(workflow, django_capture_on_commit_callbacks)
    second = job.model_version
    assert job.status == Job.SUCCEEDED
    assert second.metrics["compared_with"] == {"version": 1, "roc_auc": pytest.approx(v1_auc)}
    assert second.metrics["heldout"]["roc_auc"] < v1_auc
    assert second.status == ModelVersion.REJECTED
    workflow.refresh_from_db()
    assert workflow.active_model == first
    assert ranking(workflow) == ranked_by_v1  # the ranking volunteers see did not move

    # The owner promotes it anyway: verified, activated, and the pool re-ranked by a score job.
    with django_capture_on_commit_callbacks(execute=True):
        score_job = loop.promote_version(second)
    score_job.refresh_from_db()
    assert score_job.kind == Job.SCORE and score_job.status == Job.SUCCEEDED, score_job.error
    workflow.refresh_from_db()
    first.refresh_from_db()
    assert workflow.active_model == second and first.status == ModelVersion.RETIRED
    second.refresh_from_db()
    assert (
        second.metrics["pool"]["n"]
        == Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE).count()
    )


def test_a_round_with_nan_training_fails_cleanly_and_keeps_the_active_model(
    workflow, project, loop_settings, django_capture_on_commit_callbacks
):
    make_pool(project, workflow)
    first = run_round(workflow, django_capture_on_commit_callbacks).model_version
    scores_before = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "priority"))

    job = run_round(workflow, django_capture_on_commit_callbacks, train_config={"learning_rate": 1e30})

    assert job.status == Job.FAILED
    assert "Training failed" in job.error and ("nan" in job.error.lower() or "inf" in job.error.lower())
    workflow.refresh_from_db()
    assert workflow.active_model == first
    assert (
        not ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.ACTIVE)
        .exclude(pk=first.pk)
        .exists()
    )
    assert dict(Subject.objects.filter(workflow=workflow).values_list("pk", "priority")) == scores_before
    # ... and the next trigger works.
    job = run_round(workflow, django_capture_on_commit_callbacks)
    assert job.status == Job.SUCCEEDED and job.model_version.version == 2


def test_a_round_without_a_held_out_set_fails_with_a_clear_message(
    workflow, project, loop_settings, django_capture_on_commit_callbacks
):
    make_pool(project, workflow, n=80, n_labeled=60, n_gold=0)
    job = run_round(workflow, django_capture_on_commit_callbacks)
    assert job.status == Job.FAILED
    assert "held-out set needs both real and bogus" in job.error
    assert not ModelVersion.objects.filter(workflow=workflow).exists()


def test_corrupt_or_foreign_model_files_never_become_active(
    workflow, project, loop_settings, django_capture_on_commit_callbacks, tmp_path
):
    make_pool(project, workflow)
    run_round(workflow, django_capture_on_commit_callbacks)
    run_round(workflow, django_capture_on_commit_callbacks)
    workflow.refresh_from_db()
    active_before = workflow.active_model_id
    candidate = ModelVersion.objects.exclude(pk=active_before).get(workflow=workflow)
    status_before = candidate.status
    path = private_storage().path(candidate.artifact.name)

    # 1. Bytes changed on disk after registration.
    with open(path, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00" * 16)
    with pytest.raises(loop.ModelRejected, match="changed since it was registered"):
        loop.promote_version(candidate)

    # 2. A foreign file whose hash was also recorded (someone edited the database too).
    torch.save({"weights": torch.zeros(3)}, path)
    with open(path, "rb") as handle:
        ModelVersion.objects.filter(pk=candidate.pk).update(
            artifact_sha256=hashlib.sha256(handle.read()).hexdigest()
        )
    candidate.refresh_from_db()
    with pytest.raises(loop.ModelRejected, match="not a Skyvote mlcore checkpoint"):
        loop.promote_version(candidate)

    # 3. A pickle that would run code when unpickled: refused by weights_only loading.
    torch.save({"evil": np.random.default_rng(0)}, path)
    with open(path, "rb") as handle:
        ModelVersion.objects.filter(pk=candidate.pk).update(
            artifact_sha256=hashlib.sha256(handle.read()).hexdigest()
        )
    candidate.refresh_from_db()
    with pytest.raises(loop.ModelRejected, match="refused"):
        loop.promote_version(candidate)

    workflow.refresh_from_db()
    assert workflow.active_model_id == active_before
    assert ModelVersion.objects.get(pk=candidate.pk).status == status_before != ModelVersion.ACTIVE


def test_a_worker_lost_mid_round_is_retried_by_the_sweep_then_fails_when_out_of_attempts(
    workflow, project, loop_settings, settings, django_capture_on_commit_callbacks
):
    make_pool(project, workflow)
    first = run_round(workflow, django_capture_on_commit_callbacks).model_version

    # A worker claims the round and dies: status running, heartbeat going stale.
    job, _ = loop.request_training(workflow)
    claimed = claim(job.pk)
    zombie = JobRun(claimed)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=claimed.heartbeat_at - loop_timedelta(600))

    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_jobs()
    assert job.pk in report.requeued and job.pk in report.dispatched
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED and job.attempts == 2, job.error
    assert "worker lost" in job.log
    # The dead attempt, were it still alive somewhere, can no longer write anything.
    with pytest.raises(JobLost):
        zombie.progress(0.5, "still here", force=True)

    # Out of attempts: the round fails and the previous model stays active.
    settings.SKYVOTE_JOBS = {**settings.SKYVOTE_JOBS, "max_attempts": 1}
    workflow.refresh_from_db()
    active = workflow.active_model
    job, _ = loop.request_training(workflow)
    claimed = claim(job.pk)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=claimed.heartbeat_at - loop_timedelta(600))
    report = sweep_jobs()
    job.refresh_from_db()
    assert job.pk in report.failed and job.status == Job.FAILED
    assert "stopped responding" in job.error
    workflow.refresh_from_db()
    assert workflow.active_model == active and active is not None and first is not None


def test_a_duplicate_delivery_does_nothing(
    workflow, project, loop_settings, django_capture_on_commit_callbacks
):
    make_pool(project, workflow)
    job = run_round(workflow, django_capture_on_commit_callbacks)
    assert run_job(job.pk) is None
    assert ModelVersion.objects.filter(workflow=workflow).count() == 1
    job.refresh_from_db()
    assert job.attempts == 1


def loop_timedelta(seconds):
    from datetime import timedelta

    return timedelta(seconds=seconds)
