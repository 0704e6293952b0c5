"""Celery tasks of the learning loop (labeling/loop.py). Thin: they take primary keys and call the loop.

acks_late is safe for all three: a redelivered train/score message finds its job already running or
finished and does nothing (labeling.loop.claim_job), and the sweep is idempotent. A worker killed
mid-round is recovered by the sweep through the job's heartbeat, not by redelivery.
"""

from celery import shared_task

__all__ = ["train_round", "score_pool", "sweep_outbox"]


@shared_task(name="skyvote.gpu.train_round", acks_late=True, ignore_result=True)
def train_round(job_id: int) -> None:
    from .loop import run_training_round

    run_training_round(job_id)


@shared_task(name="skyvote.gpu.score_pool", acks_late=True, ignore_result=True)
def score_pool(job_id: int) -> None:
    from .loop import run_scoring_job

    run_scoring_job(job_id)


@shared_task(name="skyvote.default.sweep_outbox", acks_late=True, ignore_result=True)
def sweep_outbox() -> dict:
    from .loop import sweep_outbox as sweep

    return sweep().as_dict()
