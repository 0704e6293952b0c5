"""What the classifier's training rounds and the similarity embedding's rounds share.

A round is a job (kind train or embed) that produces a ModelVersion. Both apps queue rounds the
same way and clean up the same way when one fails; this module holds that one copy, so the
similarity app needs nothing from the learning loop's app.
"""

from django.db import transaction

from core.models import ModelVersion, Workflow
from jobs.models import Job
from jobs.services import queue_job


def queue_round(workflow: Workflow, kind: str, params: dict, *, counted: int, user=None) -> tuple[Job, bool]:
    """Queue a round of `kind` (train or embed), or join the open one: (job, created).

    `counted` (trainable labels, or answers for similarity workflows) becomes
    Workflow.labels_at_last_round, which the triggers count from. The database allows one open
    round per workflow and kind, so concurrent triggers coalesce into one round.
    """
    with transaction.atomic():
        job, created = queue_job(
            kind, project=workflow.project, workflow=workflow, params=params, user=user, coalesce=True
        )
        if created:
            Workflow.objects.filter(pk=workflow.pk).update(labels_at_last_round=counted)
            workflow.labels_at_last_round = counted
    return job, created


def count_as_trained_on(workflow: Workflow, counted: int) -> None:
    """Called when a round starts: raise Workflow.labels_at_last_round to what the round trains on.

    Labels (or answers) that arrived between the request and the start are in this round; without
    this the next trigger or sweep would start another round at once for labels it already used.
    """
    Workflow.objects.filter(pk=workflow.pk, labels_at_last_round__lt=counted).update(
        labels_at_last_round=counted
    )


def fail_unfinished_versions(job: Job) -> None:
    """A round that failed, or whose worker died: the version it registered but never promoted is
    marked failed; the active model is untouched."""
    version = ModelVersion.objects.filter(jobs=job).order_by("-pk").first()
    if version is not None and version.status == ModelVersion.CANDIDATE:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.FAILED)


# Apps above the rounds' own (the gems app's anomaly scores) follow each successful round without the
# round's app knowing them: they register here, and the round calls `round_succeeded` at its end.
_ROUND_HOOKS: list = []


def on_round_succeeded(fn):
    """Decorator: `fn(workflow_id: int, kind: str)` runs after a successful round of `kind` (train or
    embed) has committed."""
    _ROUND_HOOKS.append(fn)
    return fn


def round_succeeded(workflow: Workflow, kind: str) -> None:
    """Called by a round that succeeded: the hooks run after commit, never inside the round's
    transaction, so whatever they queue cannot hold up or undo the round."""
    workflow_id = workflow.pk
    for fn in list(_ROUND_HOOKS):
        transaction.on_commit(lambda fn=fn: fn(workflow_id, kind))
