"""Upload page for project owners and scientists (WRITE_ROLES, as the uploads API).

Files → Job(kind=ingest) → core.ingest. Thin: logic lives in ingest.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from core import ingest
from core.permissions import WRITE_ROLES, project_for_request
from jobs.models import Job

MAX_FILES_PER_UPLOAD = 500


def _recent_jobs(project):
    return (
        Job.objects.filter(project=project, kind=Job.INGEST)
        .select_related("workflow")
        .order_by("-created_at")[:10]
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload(request, project):
    project, _ = project_for_request(request, project, WRITE_ROLES)
    workflows = project.workflows.order_by("name")
    errors: list[str] = []
    if request.method == "POST":
        uploads = request.FILES.getlist("files")
        workflow = workflows.filter(pk=request.POST.get("workflow") or 0).first()
        if workflow is None:
            errors.append("Choose a workflow.")
        if not uploads:
            errors.append("Choose at least one file.")
        elif len(uploads) > MAX_FILES_PER_UPLOAD:
            errors.append(f"At most {MAX_FILES_PER_UPLOAD} files per upload.")
        if not errors:
            try:
                job = ingest.create_ingest_job(
                    project=project,
                    workflow=workflow,
                    uploads=uploads,
                    user=request.user,
                    subject_set_name=request.POST.get("subject_set", ""),
                )
            except ingest.IngestError as exc:
                errors.append(str(exc))
            else:
                return redirect("core:upload_progress", project.slug, job.pk)
    context = {
        "project": project,
        "workflows": workflows,
        "errors": errors,
        "jobs": _recent_jobs(project),
        "selected_workflow": request.POST.get("workflow", ""),
        "subject_set": request.POST.get("subject_set", ""),
    }
    return render(request, "core/upload.html", context, status=400 if errors else 200)


@login_required
@require_GET
def upload_progress(request, project, job):
    project, _ = project_for_request(request, project, WRITE_ROLES)
    job = get_object_or_404(Job.objects.select_related("workflow"), pk=job, project=project, kind=Job.INGEST)
    context = {"project": project, "job": job}
    if request.htmx:
        return render(request, "core/upload_progress.html", context)
    context.update(
        {"workflows": project.workflows.order_by("name"), "errors": [], "jobs": _recent_jobs(project)}
    )
    return render(request, "core/upload.html", context)
