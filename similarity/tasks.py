"""Celery tasks of the similarity app. Thin: they take primary keys and call services.

`skyvote.gpu.train_embedding` runs on the gpu queue (routing by name, skyvote/celery.py). It is
safe with acks_late: a redelivered message finds its job running or finished and does nothing
(labeling.loop.claim_job); a worker killed mid-round is recovered by the outbox sweep.
"""

from celery import shared_task

__all__ = ["train_embedding", "create_similarity_tasks"]


@shared_task(name="skyvote.gpu.train_embedding", acks_late=True, ignore_result=True)
def train_embedding(job_id: int) -> None:
    from .training import run_embedding_round

    run_embedding_round(job_id)


@shared_task(name="skyvote.default.create_similarity_tasks", acks_late=True, ignore_result=True)
def create_similarity_tasks(workflow_id: int, n_open: int = 50) -> int:
    """Pre-generate a pool of open tasks (idempotent: only tops the pool up to n_open)."""
    from labeling.models import Workflow

    from .selection import ensure_task_pool

    workflow = Workflow.objects.filter(pk=workflow_id, kind=Workflow.SIMILARITY).first()
    return ensure_task_pool(workflow, n_open) if workflow else 0
