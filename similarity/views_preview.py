"""Preview of a similarity workflow for its scientists (core.views_workflows links here): a comparison
image and its candidates, chosen as for volunteers, with nothing stored — no task, no vote."""

import random

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from core.models import Subject, Workflow
from core.permissions import WRITE_ROLES, workflow_for
from similarity import selection
from similarity.services import active_embedding


@login_required
def preview(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES, kind=Workflow.SIMILARITY)
    rng = random.Random()
    comparison = selection._pick_comparison(workflow, rng)
    candidates = []
    if comparison is not None:
        ids, _, _ = selection.choose_candidates(
            workflow, comparison, rng, active_embedding(workflow), n=workflow.n_candidates
        )
        by_id = Subject.objects.in_bulk(ids)
        candidates = [by_id[i] for i in ids if i in by_id]
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "comparison": comparison,
        "candidates": candidates,
    }
    return render(request, "similarity/preview.html", context)
