"""Account and scientist pages of issue 8: personal API tokens and the per-project exports page.

Thin views: tokens are made and revoked by core.authentication, exports by labeling.exports.
"""

from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.authentication import create_token, revoke_token
from core.models import ApiToken
from core.permissions import EXPORT_ROLES, project_for
from jobs.models import Job
from labeling import exports

EXPORT_CHOICES = [
    ("votes", "csv", "Raw votes — CSV"),
    ("votes", "jsonl", "Raw votes — JSON Lines"),
    ("votes", "parquet", "Raw votes — Parquet"),
    ("labels", "csv", "Labels — CSV"),
    ("labels", "parquet", "Labels — Parquet"),
    ("labels", "fits", "Labels — FITS"),
    ("labels", "ecsv", "Labels — ECSV"),
    ("bundle", "zip", "Training bundle — zip (images .npy, labels, split, manifest)"),
    ("similarity", "zip", "Similarity choices and pair counts — zip"),
]


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    """List your tokens; POST makes one and shows its key on this response only."""
    new_key = None
    new_token = None
    if request.method == "POST":
        new_token, new_key = create_token(request.user, request.POST.get("name", ""))
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    response = render(
        request,
        "core/api_tokens.html",
        {"tokens": tokens, "new_key": new_key, "new_token": new_token},
        status=201 if new_key else 200,
    )
    # The key is in this page only: keep it out of caches and the back/forward cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_token_revoke(request, token):
    token = get_object_or_404(ApiToken, pk=token, user=request.user)
    revoke_token(token)
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) revoked: it no longer works.")
    return redirect("core:api_tokens")


def _export_choices(project):
    has_similarity = exports.similarity_available() and project.workflows.filter(kind="similarity").exists()
    return [c for c in EXPORT_CHOICES if c[0] != "similarity" or has_similarity]


@login_required
@require_http_methods(["GET", "POST"])
def exports_page(request, project):
    project, role = project_for(request.user, project, EXPORT_ROLES)
    error = None
    if request.method == "POST":
        kind, _, fmt = request.POST.get("export", "").partition(":")
        try:
            job = exports.start_export(
                project=project,
                user=request.user,
                role=role,
                kind=kind,
                fmt=fmt,
                workflow_id=request.POST.get("workflow") or None,
            )
        except exports.ExportError as exc:
            error = str(exc)
        else:
            if request.htmx:
                job.refresh_from_db()
                return render(request, "core/exports.html#job", {"project": project, "job": job})
            return redirect("core:exports", project.slug)
    context = {
        "project": project,
        "role": role,
        "jobs": exports.export_jobs(project)[:20],
        "choices": _export_choices(project),
        "workflows": project.workflows.order_by("name"),
        "error": error,
    }
    return render(request, "core/exports.html", context, status=400 if error else 200)


@login_required
@require_GET
def export_progress(request, project, job):
    project, _role = project_for(request.user, project, EXPORT_ROLES)
    job = get_object_or_404(exports.export_jobs(project), pk=job)
    return render(request, "core/exports.html#job", {"project": project, "job": job})


@login_required
@require_GET
def export_download(request, project, job):
    project, _role = project_for(request.user, project, EXPORT_ROLES)
    job = get_object_or_404(exports.export_jobs(project), pk=job)
    if job.status != Job.SUCCEEDED or not job.result:
        return HttpResponse(
            f"This export is {job.get_status_display().lower()}.", status=409, content_type="text/plain"
        )
    return FileResponse(
        job.result.open("rb"),
        as_attachment=True,
        filename=Path(job.result.name).name,
        content_type=exports.CONTENT_TYPES.get(job.params.get("format", ""), "application/octet-stream"),
    )
