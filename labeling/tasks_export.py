"""Celery task for exports (issue 8): a thin wrapper around labeling.exports.run_export_job."""

from celery import shared_task


@shared_task(name="skyvote.default.run_export")
def run_export(job_id: int) -> None:
    """Run export job `job_id`; idempotent (a finished or live job is left alone)."""
    from .exports import run_export_job

    run_export_job(job_id)
