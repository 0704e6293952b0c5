"""The Celery tasks of the job system: one that runs any job by id, and the sweep.

Both are idempotent (a redelivered message finds its job running or finished and does nothing), so
acks_late is safe; a worker killed mid-job is recovered by the sweep through the job's heartbeat.
The queue a job runs on is chosen when it is sent (its kind's queue), not by the task's name.
"""

from celery import shared_task

from jobs import services

__all__ = ["run_job", "sweep_jobs"]


@shared_task(name=services.RUN_TASK, acks_late=True, ignore_result=True)
def run_job(job_id: int) -> None:
    services.run_job(job_id)


@shared_task(name=services.SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_jobs() -> dict:
    return services.sweep_jobs().as_dict()
