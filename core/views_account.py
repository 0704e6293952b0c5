"""Account and scientist pages: personal API tokens and the per-project exports page.

Thin views: tokens are made and revoked by core.authentication, exports by core.exporters (the
exports offered are the ones the apps register there).
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core import exporters
from core.authentication import create_token, revoke_token
from core.models import ApiToken
from core.permissions import EXPORT_ROLES, project_for_request
from jobs.models import Job


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    # Optional so that scripts posting only a name keep getting the tokens they always got.
    scope = forms.ChoiceField(choices=ApiToken.SCOPES, required=False)
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False)


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    """List your tokens; POST makes one (read-only or not, expiring or not) and shows its key on this
    response only."""
    new_key = None
    new_token = None
    form = ApiTokenForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        new_token, new_key = create_token(
            request.user,
            form.cleaned_data["name"],
            scope=form.cleaned_data["scope"] or ApiToken.WRITE,
            expires_in_days=form.cleaned_data["expires_in_days"],
        )
    tokens = ApiToken.objects.filter(user=request.user).order_by("-created_at")
    response = render(
        request,
        "core/api_tokens.html",
        {"tokens": tokens, "new_key": new_key, "new_token": new_token, "form": form, "now": timezone.now()},
        status=201 if new_key else 400 if form.errors else 200,
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


@login_required
@require_http_methods(["GET", "POST"])
def exports_page(request, project):
    project, role = project_for_request(request, project, EXPORT_ROLES)
    error = None
    if request.method == "POST":
        kind, _, fmt = request.POST.get("export", "").partition(":")
        try:
            exporters.start_export(
                project=project,
                user=request.user,
                role=role,
                kind=kind,
                fmt=fmt,
                workflow_id=request.POST.get("workflow") or None,
            )
        except exporters.ExportError as exc:
            error = str(exc)
        else:
            if not request.htmx:
                return redirect("core:exports", project.slug)
    context = {
        "project": project,
        "role": role,
        "jobs": exporters.export_jobs(project)[:20],
        "choices": exporters.export_choices(project),
        "workflows": project.workflows.order_by("name"),
        "error": error,
        "selected_export": request.POST.get("export", ""),
        "selected_workflow": request.POST.get("workflow", ""),
    }
    # htmx gets the form and the list in one piece, the new export in it (or the error above it).
    template = (
        "core/exports.html#exports" if request.htmx and request.method == "POST" else "core/exports.html"
    )
    return render(request, template, context, status=400 if error else 200)


@login_required
@require_GET
def export_progress(request, project, job):
    project, _role = project_for_request(request, project, EXPORT_ROLES)
    job = get_object_or_404(exporters.export_jobs(project), pk=job)
    return render(request, "core/exports.html#job", {"project": project, "job": job})


@login_required
@require_GET
def export_download(request, project, job):
    project, _role = project_for_request(request, project, EXPORT_ROLES)
    job = get_object_or_404(exporters.export_jobs(project), pk=job)
    if job.status != Job.SUCCEEDED or not job.result:
        return HttpResponse(
            f"This export is {job.get_status_display().lower()}.", status=409, content_type="text/plain"
        )
    return exporters.download_response(job)
