"""The owner's learning-loop pages: model versions, plots, the running round, saliency. Thin: see loop.py.

Owners, scientists and viewers of a project see these pages; only owners and scientists press
"train now" and "promote" (other members get 403). Nobody without a role learns that the project exists (404).
Volunteers never reach the model's opinion: the classify page does not show it, and these pages need a
project role.
"""

import io

import numpy as np
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.base import ContentFile
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.followups import type_labels
from core.formats import parse_id
from core.models import ModelVersion, Subject, Workflow
from core.permissions import OWNER_ROLES, READ_ROLES, workflow_for
from core.storage import file_response, open_stored, private_storage, stored_exists
from jobs.models import Job
from loop import services as loop

LOG_TAIL_LINES = 15


def _plot_url(workflow: Workflow, version: ModelVersion | None, plot: str) -> str | None:
    """The plot view's URL (plots are in private storage: only the project's readers see them)."""
    if not loop.has_plot(version, plot):
        return None
    return reverse("loop:plot", args=[workflow.project.slug, workflow.slug, version.version, plot])


def _job_context(workflow: Workflow, watching: int | None = None) -> dict:
    job = loop.open_job(workflow, Job.TRAIN) or loop.open_job(workflow, Job.SCORE)
    if job is None and watching:
        job = Job.objects.filter(pk=watching, workflow=workflow).first()
    log_tail = job.log.splitlines()[-LOG_TAIL_LINES:] if job else []
    return {"job": job, "log_tail": log_tail}


SURVEY_NAMES = {"ztf": "ZTF", "rubin": "Rubin", "other": "other"}


def _survey_rows(by_survey: dict | None) -> list[dict]:
    """Held-out metrics per survey, for a table: [{"survey", "n", "n_real", "roc_auc", "accuracy"}]."""
    return [
        {"survey": SURVEY_NAMES.get(name, name), **values}
        for name, values in sorted((by_survey or {}).items())
        if isinstance(values, dict)
    ]


def _transfer_context(workflow: Workflow, versions: list[ModelVersion]) -> dict | None:
    """The latest round that fine-tuned from another workflow's model and trained one from scratch
    beside it: both held-out AUCs (overall and per survey) and which was kept."""
    for version in versions:
        transfer = (version.metrics or {}).get("transfer")
        if not isinstance(transfer, dict):
            continue
        fine, scratch = transfer.get("fine_tuned") or {}, transfer.get("scratch") or {}
        names = sorted(set(fine.get("by_survey") or {}) | set(scratch.get("by_survey") or {}))
        return {
            "version": version,
            "source": (transfer.get("start_from") or {}).get("label", ""),
            "fine_tuned": fine,
            "scratch": scratch,
            "difference": transfer.get("auc_difference"),
            "beat_scratch": bool(transfer.get("beat_scratch")),
            "kept": transfer.get("kept"),
            "budget_each": transfer.get("time_budget_s_each"),
            "surveys": [
                {
                    "survey": SURVEY_NAMES.get(name, name),
                    "fine_tuned": (fine.get("by_survey") or {}).get(name, {}).get("roc_auc"),
                    "scratch": (scratch.get("by_survey") or {}).get(name, {}).get("roc_auc"),
                }
                for name in names
            ],
        }
    return None


def _model_input(workflow: Workflow):
    """The workflow's model input for the page; None when its settings are unusable (the next round
    says why)."""
    try:
        return loop.input_spec(workflow)
    except loop.LoopError:
        return None


def _uncertainty_bars(version: ModelVersion | None) -> list[dict]:
    pool = (version.metrics or {}).get("pool") if version else None
    if not pool or not pool.get("uncertainty_hist"):
        return []
    counts, edges = pool["uncertainty_hist"], pool["uncertainty_edges"]
    peak = max(counts) or 1
    return [
        {"low": edges[i], "high": edges[i + 1], "count": c, "height": round(100 * c / peak, 1)}
        for i, c in enumerate(counts)
    ]


TYPE_EXAMPLES_PER_TYPE = 2
SHADES = 5  # shading steps of the confusion matrix's cells (CSS classes shade-0 … shade-5)


def _type_context(workflow: Workflow, active: ModelVersion | None) -> dict | None:
    """The active model's type head for the page: the held-out per-type confusion matrix (counts,
    with each row's share as a shading step) and, per type, the pool subjects it puts in that type
    most confidently (their model pages draw the saliency). None without a head or a round's note."""
    metrics = (active.metrics or {}) if active else {}
    head = metrics.get("type_head") if isinstance(metrics.get("type_head"), dict) else {}
    classes = [str(c) for c in head.get("classes") or []]
    if not classes:
        return {"note": str(head["note"])} if head.get("note") else None
    names = type_labels(workflow.followups)
    found = metrics.get("type_confusion") if isinstance(metrics.get("type_confusion"), dict) else {}
    matrix = found.get("matrix") or []
    recalls = found.get("per_class_recall") or [None] * len(classes)
    rows = []
    if len(matrix) == len(classes) == len(recalls):
        for i, (key, counts, recall) in enumerate(zip(classes, matrix, recalls, strict=True)):
            total = sum(counts)
            cells = [
                {
                    "count": c,
                    "percent": round(100 * c / total) if total else 0,
                    "shade": round(SHADES * c / total) if total else 0,
                    "diagonal": i == j,
                    "predicted": names.get(classes[j], classes[j]),
                }
                for j, c in enumerate(counts)
            ]
            rows.append(
                {"key": key, "label": names.get(key, key), "total": total, "recall": recall, "cells": cells}
            )
    examples = []
    for key in classes:
        subjects = list(
            Subject.objects.filter(workflow=workflow, model_type=key, model_type_p__isnull=False)
            .order_by("-model_type_p", "pk")
            .only("id", "external_id", "model_type_p", "model_score")[:TYPE_EXAMPLES_PER_TYPE]
        )
        examples.append({"key": key, "label": names.get(key, key), "subjects": subjects})
    return {
        "classes": [{"key": k, "label": names.get(k, k)} for k in classes],
        "rows": rows,
        "n": found.get("n", 0),
        "accuracy": found.get("accuracy"),
        "n_typed_train": head.get("n_typed_train"),
        "examples": examples,
    }


@login_required
@require_GET
def workflow_models(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    active = workflow.active_model
    versions = list(
        ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.CLASSIFIER).order_by("-version")
    )
    latest = versions[0] if versions else None
    status_counts = dict(
        Subject.objects.filter(workflow=workflow).values_list("status").annotate(n=Count("id")).order_by()
    )
    top_subjects = (
        Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE, gold_label="")
        .order_by("-priority")
        .only("id", "external_id", "model_score", "model_uncertainty", "acquisition_score", "priority")[:15]
        if active
        else []
    )
    labels = loop.label_counts(workflow)
    for v in versions:
        v.survey_rows = _survey_rows((v.metrics or {}).get("heldout_by_survey"))
    start_from = (
        ModelVersion.objects.select_related("workflow__project").filter(pk=workflow.start_from_id).first()
        if workflow.start_from_id
        else None
    )
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "active": active,
        "versions": versions,
        "roc_url": _plot_url(workflow, active, "roc"),
        "reliability_url": _plot_url(workflow, active, "reliability"),
        "learning_curve_url": _plot_url(workflow, latest, "learning_curve"),
        "learning_curve_points": len(loop.learning_curve_points(workflow.pk)),
        "learning_curve_needs_two": loop.LEARNING_CURVE_NEEDS_TWO,
        "uncertainty_bars": _uncertainty_bars(active),
        "pool": (active.metrics or {}).get("pool") if active else None,
        "labels": labels,
        "next_round_in": max(0, loop.labels_until_next_round(workflow, labels.trainable)),
        "n_active": status_counts.get(Subject.ACTIVE, 0),
        "n_retired": status_counts.get(Subject.RETIRED, 0),
        "top_subjects": top_subjects,
        "recent_jobs": Job.objects.filter(workflow=workflow, kind__in=[Job.TRAIN, Job.SCORE]).order_by("-pk")[
            :8
        ],
        "active_surveys": _survey_rows((active.metrics or {}).get("heldout_by_survey")) if active else [],
        "transfer": _transfer_context(workflow, versions),
        "start_from": start_from,
        "start_from_label": loop.model_label(start_from) if start_from else "",
        "start_from_candidates": [
            (v.pk, loop.model_label(v), ((v.metrics or {}).get("heldout") or {}).get("roc_auc"))
            for v in loop.start_from_candidates(workflow, request.user)
        ]
        if role == "owner"
        else [],
        "model_input": _model_input(workflow),
        "min_heldout": int(loop.loop_setting("min_heldout")),
        "promote_tolerance": float(loop.loop_setting("promote_tolerance")),
        "types": _type_context(workflow, active),
        **_job_context(workflow),
    }
    return render(request, "loop/workflow.html", context)


@login_required
@require_GET
def job_status(request, project, workflow):
    """The running-job panel, polled by htmx every second while a job is open."""
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    watching = request.GET.get("job")
    context = {"project": workflow.project, "workflow": workflow, "role": role}
    context.update(_job_context(workflow, parse_id(watching)))
    response = render(request, "loop/job.html", context)
    job = context["job"]
    if request.htmx and job is not None and not job.is_open and watching:
        # The round the page was watching has ended: reload to show the new model and plots.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_GET
def plot(request, project, workflow, version, plot):
    """A model version's plot (ROC, reliability, learning curve), for the project's readers only."""
    workflow, _ = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    model_version = get_object_or_404(
        ModelVersion, workflow=workflow, kind=ModelVersion.CLASSIFIER, version=version
    )
    name = loop.plot_file(model_version, plot)
    if not name:
        raise Http404("No such plot.")
    return file_response(name, content_type="image/png", cache_control="private, max-age=3600")


@login_required
@require_POST
def train_now(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    try:
        job, created = loop.request_training(
            workflow, user=request.user, force_promote=request.POST.get("force") == "1", reason="owner"
        )
    except loop.LoopError as exc:
        messages.error(request, str(exc))
    else:
        if created:
            messages.success(request, f"Training round #{job.pk} queued.")
        else:
            messages.info(request, f"A round is already {job.status} (#{job.pk}); this request joins it.")
    return redirect("loop:models", workflow.project.slug, workflow.slug)


@login_required
@require_POST
def start_from(request, project, workflow):
    """The owner's "start from model" choice: the first round fine-tunes from another workflow's
    promoted model (and trains one from scratch beside it, to show which is better)."""
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    choice = (request.POST.get("model_version") or "").strip()
    try:
        version = loop.set_start_from(workflow, parse_id(choice), request.user)
    except loop.LoopError as exc:
        messages.error(request, str(exc))
    else:
        if version is None:
            messages.success(request, "The first round trains from scratch.")
        elif workflow.active_model_id:
            messages.info(
                request,
                f"Saved: {loop.model_label(version)}. This workflow already has an active model, which later "
                "rounds warm-start from; the choice applies only while there is none.",
            )
        else:
            messages.success(request, f"The first round fine-tunes from {loop.model_label(version)}.")
    return redirect("loop:models", workflow.project.slug, workflow.slug)


@login_required
@require_POST
def promote(request, project, workflow, version):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    model_version = get_object_or_404(
        ModelVersion, workflow=workflow, kind=ModelVersion.CLASSIFIER, version=version
    )
    try:
        loop.promote_version(model_version, user=request.user)
    except loop.LoopError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"v{model_version.version} is now active; the pool is being re-ranked.")
    return redirect("loop:models", workflow.project.slug, workflow.slug)


def _subject(workflow: Workflow, subject_id: int) -> Subject:
    return get_object_or_404(Subject, pk=subject_id, workflow=workflow)


@login_required
@require_GET
def subject_model(request, project, workflow, subject):
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    subject = _subject(workflow, subject)
    rank = None
    if workflow.active_model_id and subject.status == Subject.ACTIVE:
        rank = (
            Subject.objects.filter(
                workflow=workflow, status=Subject.ACTIVE, gold_label="", priority__gt=subject.priority
            ).count()
            + 1
        )
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "subject": subject,
        "active": workflow.active_model,
        "rank": rank,
        "roles": ("science", "reference", "difference"),
        "model_type_label": type_labels(workflow.followups).get(subject.model_type, subject.model_type),
    }
    return render(request, "loop/subject.html", context)


def _saliency_png(maps: np.ndarray, scale: int = 4) -> bytes:
    """Three saliency maps side by side (science, reference, difference), 'inferno' colours, crisp pixels."""
    from matplotlib import colormaps
    from PIL import Image

    gap = np.ones((maps.shape[1], 2))
    strip = np.concatenate([maps[0], gap, maps[1], gap, maps[2]], axis=1)
    rgba = (colormaps["inferno"](strip) * 255).astype(np.uint8)
    rgba[:, maps.shape[2] : maps.shape[2] + 2] = 255
    rgba[:, 2 * maps.shape[2] + 2 : 2 * maps.shape[2] + 4] = 255
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@login_required
@require_GET
def subject_saliency(request, project, workflow, subject):
    """Input-gradient saliency of the active model for one subject, as PNG (cached in private storage:
    it shows the subject, so it is as private as the project; maps cached in media before are read too)."""
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    subject = _subject(workflow, subject)
    version = workflow.active_model
    if version is None:
        raise Http404("There is no active model yet.")
    name = f"saliency/{workflow.pk}/v{version.version}-{version.artifact_sha256[:8]}/{subject.pk}.png"
    if stored_exists(name):
        with open_stored(name) as handle:
            png = handle.read()
    else:
        from core.ingest import IngestError, load_subject_array
        from loop.arrays import subject_stamps

        try:
            model = loop.load_model_version(version).model
            stamps = subject_stamps(
                subject, load_subject_array(subject), sigma=loop.spec_of(model).uncertainty
            )
        except (loop.ModelRejected, IngestError, OSError) as exc:
            return HttpResponse(f"No saliency map: {exc}", status=409, content_type="text/plain")
        _, maps = loop.saliency_maps(model, stamps)
        png = _saliency_png(maps)
        private_storage().save(name, ContentFile(png))
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response
