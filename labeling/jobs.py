"""Background work of real/bogus volunteering, as jobs: the Dawid–Skene recompute and the
re-evaluation of retirement after the owner changes the rule. Both are idempotent: running one
twice gives the same state."""

from celery import shared_task

from core.models import Workflow
from jobs.models import Job
from jobs.services import SHORT, JobRun, queue_job, register


@register(Job.AGGREGATE, queue=SHORT, label="Aggregation (Dawid–Skene recompute)")
def aggregation_job(run: JobRun) -> str:
    from labeling.recompute import recompute_workflow

    method = run.job.params.get("method", "dawid_skene")
    summary = recompute_workflow(run.job.workflow_id, method=method)
    result = {"n_votes": summary.n_votes, "n_typed_votes": summary.n_typed_votes, **summary.retirement}
    run.update(params={**run.job.params, "result": result})
    return f"Done: {summary.n_votes} votes aggregated with {method}"


@register(Job.RETIREMENT, queue=SHORT, label="Retirement re-evaluation")
def retirement_job(run: JobRun) -> str:
    from labeling.retirement import reevaluate_workflow

    result = reevaluate_workflow(run.job.workflow_id)
    run.update(params={**run.job.params, "result": result})
    return "Done: retirement re-evaluated"


def request_aggregation(workflow: Workflow, *, user=None, method: str = "dawid_skene") -> Job:
    """Queue a full recompute of the workflow's aggregation (idempotent, so a second one is harmless)."""
    job, _ = queue_job(
        Job.AGGREGATE, project=workflow.project, workflow=workflow, params={"method": method}, user=user
    )
    return job


def request_retirement_check(workflow: Workflow, *, user=None) -> Job:
    """Queue a re-evaluation of every subject against the workflow's retirement rule."""
    job, _ = queue_job(Job.RETIREMENT, project=workflow.project, workflow=workflow, user=user)
    return job


@shared_task(name="skyvote.recompute_all_aggregations", ignore_result=True)
def recompute_all_aggregations() -> int:
    """Scheduled (settings.CELERY_BEAT_SCHEDULE): one aggregation job per active real/bogus workflow."""
    workflows = Workflow.objects.filter(is_active=True, kind=Workflow.REAL_BOGUS).select_related("project")
    n = 0
    for workflow in workflows.order_by("pk"):
        request_aggregation(workflow)
        n += 1
    return n
