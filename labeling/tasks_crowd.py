"""Celery tasks of the crowd features: full aggregation and retirement re-evaluation.

Thin and idempotent: they take primary keys, call labeling.recompute / labeling.retirement,
and running one twice gives the same state. Send them with transaction.on_commit.
"""

import logging

from celery import shared_task

from .models import Workflow

logger = logging.getLogger(__name__)

__all__ = ["recompute_aggregation", "recompute_all_aggregations", "reevaluate_retirement"]


@shared_task(name="skyvote.default.recompute_aggregation")
def recompute_aggregation(workflow_id: int, method: str = "dawid_skene") -> dict:
    from .recompute import recompute_workflow

    if not Workflow.objects.filter(pk=workflow_id).exists():
        logger.warning("recompute_aggregation: workflow %s no longer exists", workflow_id)
        return {}
    summary = recompute_workflow(workflow_id, method=method)
    return {"workflow_id": workflow_id, "method": method, "n_votes": summary.n_votes, **summary.retirement}


@shared_task(name="skyvote.default.recompute_all_aggregations")
def recompute_all_aggregations() -> int:
    """Scheduled (settings.CELERY_BEAT_SCHEDULE): one recompute task per active real/bogus workflow."""
    ids = list(
        Workflow.objects.filter(is_active=True, kind=Workflow.REAL_BOGUS)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for workflow_id in ids:
        recompute_aggregation.delay(workflow_id)
    return len(ids)


@shared_task(name="skyvote.default.reevaluate_retirement")
def reevaluate_retirement(workflow_id: int) -> dict:
    from .retirement import reevaluate_workflow

    if not Workflow.objects.filter(pk=workflow_id).exists():
        logger.warning("reevaluate_retirement: workflow %s no longer exists", workflow_id)
        return {}
    return reevaluate_workflow(workflow_id)
