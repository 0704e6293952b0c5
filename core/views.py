"""Pages every visitor shares: the home page and signing up."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from core.models import Subject, Workflow
from core.permissions import projects_visible_to


def home(request):
    # Live public projects for everyone; members also see their own projects, whatever their state.
    projects = list(
        projects_visible_to(request.user)
        .annotate(
            n_subjects=Count("subjects", distinct=True),
            n_retired=Count("subjects", filter=Q(subjects__status=Subject.RETIRED), distinct=True),
        )
        .order_by("name")
    )
    # Each active workflow once, in creation order (one query for all projects, no join duplicates).
    by_project = {}
    for workflow in Workflow.objects.filter(project__in=projects, is_active=True).order_by(
        "created_at", "pk"
    ):
        by_project.setdefault(workflow.project_id, []).append(workflow)
    for project in projects:
        project.active_workflows = by_project.get(project.pk, [])
        project.percent_retired = (
            round(100 * project.n_retired / project.n_subjects) if project.n_subjects else 0
        )
        project.my_role = project.role_of(request.user)
    return render(request, "core/home.html", {"projects": projects})


def signup(request):
    form = UserCreationForm(request.POST or None)
    # Back to where signing up started (an invitation link), if that is a page of this site.
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = ""
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to Skyvote! Your classifications so far are kept in your account.")
        return redirect(next_url or "core:home_page")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})
