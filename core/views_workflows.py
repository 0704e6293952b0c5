"""The workflow builder's pages: workflows (create, edit, settings, tutorial, field guide, launch
checklist, preview) and subject sets (create, rename, attach, detach).

Who: owners and scientists (WRITE_ROLES) change things; viewers (READ_ROLES) may look at the
workflow list and page. Anyone without a role gets 404 (core.permissions). Thin: the rules are in
core.workflows, core.answers and core.workflow_content.

Preview: a scientist classifies a workflow (live or draft) as volunteers would, and nothing is
stored — no vote, no ticket, no skill, no retirement, nothing in exports or training. The page only
says what the answer would have counted as, and for a gold subject what the experts said.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from core import answers as answer_rules
from core import followups as followup_rules
from core import workflow_content, workflows
from core.forms_workflows import (
    FOLLOWUP_MODES,
    EntryFormSet,
    StepFormSet,
    SubjectSetForm,
    WorkflowForm,
    WorkflowSettingsForm,
    answer_formset,
    followup_blocks,
    followups_from_blocks,
    gold_formset,
)
from core.models import Subject, SubjectSet, Workflow
from core.permissions import READ_ROLES, WRITE_ROLES, project_for_request, volunteer_workflow, workflow_for
from core.sampling import random_one
from core.storage import file_response

SUBJECT_CHOICES = 200  # subject ids offered to pick from when choosing a tutorial image


def _page(request, template, context, form_errors=False):
    return render(request, template, context, status=400 if form_errors else 200)


# --- Workflows ----------------------------------------------------------------------------------


@login_required
def workflow_list(request, project):
    project, role = project_for_request(request, project, READ_ROLES)
    rows = project.workflows.annotate(n_subjects=Count("subjects")).order_by("pk")
    context = {"project": project, "role": role, "workflows": rows, "can_edit": role in WRITE_ROLES}
    return render(request, "core/workflows/list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_new(request, project):
    project, role = project_for_request(request, project, WRITE_ROLES)
    form = WorkflowForm(request.POST or None, project=project, initial={"kind": Workflow.REAL_BOGUS})
    answers = answer_formset(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        kind = form.cleaned_data["kind"]
        if kind == Workflow.SIMILARITY or answers.is_valid():
            data = form.cleaned_data
            extra = {}
            if kind == Workflow.SIMILARITY:
                extra = {
                    "comparison_source": data["comparison_source"],
                    "comparison_set": data.get("comparison_set"),
                    "n_candidates": data["n_candidates"],
                }
            try:
                workflow, _ = workflows.create_workflow(
                    project,
                    data["slug"],
                    kind=kind,
                    name=data["name"],
                    question=data.get("question", ""),
                    answers=answers.answers if kind == Workflow.REAL_BOGUS else None,
                    **extra,
                )
            except workflows.BuilderError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            else:
                messages.success(
                    request, f"Workflow '{workflow.name}' created as a draft. Add subjects, then launch it."
                )
                return redirect("core:workflow", project.slug, workflow.slug)
    context = {"project": project, "role": role, "form": form, "answers": answers, "creating": True}
    return _page(request, "core/workflows/form.html", context, request.method == "POST")


@login_required
def workflow_detail(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, READ_ROLES)
    items = workflows.checklist(workflow)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "can_edit": role in WRITE_ROLES,
        "checklist": items,
        "can_launch": workflows.can_launch(items),
        "subject_sets": workflow.subject_sets.annotate(n_subjects=Count("subjects")).order_by("name"),
        "answers": answer_rules.buttons(workflow.answers) if workflow.kind == Workflow.REAL_BOGUS else [],
    }
    return render(request, "core/workflows/detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_edit(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES)
    post = request.POST if request.method == "POST" else None
    form = WorkflowForm(post, project=workflow.project, instance=workflow)
    real_bogus = workflow.kind == Workflow.REAL_BOGUS
    answers = answer_formset(post, workflow.answers) if real_bogus else None
    if post is not None and form.is_valid() and (answers is None or answers.is_valid()):
        data = form.cleaned_data
        changes = {"name": data["name"], "question": data.get("question", "")}
        if real_bogus:
            changes["answers"] = answers.answers
        else:
            changes.update(
                comparison_source=data["comparison_source"],
                comparison_set=data.get("comparison_set"),
                n_candidates=data["n_candidates"],
            )
        try:
            workflows.update_workflow(Workflow.objects.get(pk=workflow.pk), **changes)
        except workflows.BuilderError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        else:
            messages.success(request, "Saved.")
            return redirect("core:workflow", workflow.project.slug, workflow.slug)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "form": form,
        "answers": answers,
    }
    return _page(request, "core/workflows/form.html", context, post is not None)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_settings(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES)
    post = request.POST if request.method == "POST" else None
    form = WorkflowSettingsForm(post, instance=workflow)
    real_bogus = workflow.kind == Workflow.REAL_BOGUS
    gold = gold_formset(post, workflow.gold_schedule) if real_bogus else None
    if post is not None and form.is_valid() and (gold is None or gold.is_valid()):
        rule_changed = {
            f for f in ("retirement_rule", "retirement_limit", "min_votes", "max_votes", "swap_p_low", "swap_p_high",
                        "consensus_fraction", "type_retirement", "type_confidence") if f in form.changed_data
        }  # fmt: skip
        changes = {f: form.cleaned_data[f] for f in form.fields}
        if gold is not None:
            changes["gold_schedule"] = gold.schedule
        try:
            with transaction.atomic():
                workflows.update_workflow(Workflow.objects.get(pk=workflow.pk), **changes)
                if rule_changed:
                    # Active subjects may be decided under the new rule: re-evaluate them in the background.
                    from jobs.models import Job
                    from jobs.services import queue_job

                    queue_job(Job.RETIREMENT, project=workflow.project, workflow=workflow, user=request.user)
        except workflows.BuilderError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        else:
            messages.success(
                request,
                "Settings saved." + (" Active subjects are being re-evaluated." if rule_changed else ""),
            )
            return redirect("core:workflow", workflow.project.slug, workflow.slug)
    context = {"project": workflow.project, "workflow": workflow, "role": role, "form": form, "gold": gold}
    return _page(request, "core/workflows/settings.html", context, post is not None)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_followups(request, project, workflow):
    """Follow-up questions ("What kind?") after the workflow's answers: one block per answer with its
    mode, question and types. "Add the field guide's types" fills an answer's block with the defaults
    without saving; Save checks every rule (core.followups) and refuses removing a type votes name."""
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES)
    if workflow.kind != Workflow.REAL_BOGUS:
        raise Http404("Only real/bogus workflows have follow-up questions.")
    post = request.POST if request.method == "POST" else None
    defaults_for = (post.get("defaults") or "") if post is not None else ""
    blocks = followup_blocks(workflow, post, defaults_for=defaults_for)
    error = None
    if post is not None and not defaults_for:
        try:
            workflows.update_workflow(
                Workflow.objects.get(pk=workflow.pk), followups=followups_from_blocks(blocks)
            )
        except workflows.BuilderError as exc:
            error = str(exc)
        else:
            messages.success(request, "Follow-up questions saved.")
            return redirect("core:workflow", workflow.project.slug, workflow.slug)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "blocks": blocks,
        "modes": FOLLOWUP_MODES,
        "error": error,
        "guide_types": followup_rules.guide_types(),
    }
    return _page(request, "core/workflows/followups.html", context, error is not None)


def _subject_choices(workflow):
    return (
        Subject.objects.filter(project=workflow.project, workflow=workflow)
        .exclude(images={})
        .order_by("-pk")
        .values_list("pk", "external_id")[:SUBJECT_CHOICES]
    )


@login_required
@require_http_methods(["GET", "POST"])
def workflow_tutorial(request, project, workflow):
    return _content_page(request, project, workflow, "tutorial")


@login_required
@require_http_methods(["GET", "POST"])
def workflow_field_guide(request, project, workflow):
    return _content_page(request, project, workflow, "field_guide")


def _content_page(request, project, workflow, field):
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES)
    formset_class = StepFormSet if field == "tutorial" else EntryFormSet
    current = getattr(workflow, field) or []
    if field == "field_guide" and not current and workflow.kind == Workflow.REAL_BOGUS:
        current = workflow_content.default_field_guide()
    post = request.POST if request.method == "POST" else None
    # Initial rows only for showing: posted rows are all "extra" (see core.forms_workflows.answer_formset).
    if post is not None:
        formset = formset_class(post, request.FILES or None, prefix=field, workflow=workflow)
    else:
        formset = formset_class(initial=current, prefix=field, workflow=workflow)
    if post is not None and formset.is_valid():
        try:
            workflows.update_workflow(Workflow.objects.get(pk=workflow.pk), **{field: formset.items})
        except workflows.BuilderError as exc:
            formset._non_form_errors = formset.error_class([str(exc)])
        else:
            messages.success(request, "Saved.")
            return redirect(request.path)
    preview = (
        workflow_content.tutorial_steps(workflow)
        if field == "tutorial"
        else workflow_content.field_guide_entries(workflow)
    )
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "formset": formset,
        "field": field,
        "title": "Tutorial" if field == "tutorial" else "Field guide",
        "subject_choices": _subject_choices(workflow),
        "preview": preview,
    }
    return _page(request, "core/workflows/content.html", context, post is not None)


def content_image(request, project, workflow, name):
    """An image a scientist uploaded for a tutorial step or field-guide entry: to those who may
    volunteer in the workflow (or are members, for drafts), and only while the content uses it."""
    found = Workflow.objects.select_related("project").filter(project__slug=project, slug=workflow).first()
    if found is None:
        raise Http404("No such workflow.")
    if not found.is_active:
        workflow_for(request, project, workflow, READ_ROLES)
    else:
        volunteer_workflow(request, project, workflow)
    stored = workflow_content.upload_name(found, name)
    if stored is None:
        raise Http404("No such image.")
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return file_response(
        stored, content_type=workflow_content.IMAGE_SUFFIXES.get(suffix, "application/octet-stream")
    )


@login_required
@require_POST
def workflow_launch(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, WRITE_ROLES)
    if request.POST.get("action") == "pause":
        workflow.is_active = False
        workflow.save(update_fields=["is_active"])
        messages.success(
            request, "The workflow is paused: volunteers no longer see it. Votes so far are kept."
        )
    else:
        items = workflows.launch(workflow)
        if workflow.is_active:
            messages.success(request, "The workflow is live: volunteers can classify it now.")
        else:
            missing = "; ".join(i.text for i in items if i.required and not i.ok)
            messages.error(request, f"Not launched yet: {missing}")
    return redirect("core:workflow", workflow.project.slug, workflow.slug)


@login_required
@require_http_methods(["GET", "POST"])
def workflow_preview(request, project, workflow):
    """Classify as a volunteer would; nothing is stored (see the module's docstring)."""
    workflow, role = workflow_for(request, project, workflow, WRITE_ROLES)
    if workflow.kind == Workflow.SIMILARITY:
        return redirect("similarity:preview", workflow.project.slug, workflow.slug)
    outcome = None
    if request.method == "POST":
        subject = Subject.objects.filter(pk=_int(request.POST.get("subject")), workflow=workflow).first()
        answer = (request.POST.get("answer") or "").strip().lower()
        if subject is None or answer not in {*workflow.answer_keys, answer_rules.SKIP}:
            outcome = {"error": "That answer does not fit this workflow."}
        else:
            option = next((o for o in workflow.answer_options if o["key"] == answer), None)
            outcome = {
                "answer": option["label"] if option else "Skip",
                "counts_as": workflow.answer_class(answer) or ("skipped" if answer == "skip" else "neither"),
                "gold": subject.gold_label,
                "correct": bool(subject.gold_label) and workflow.answer_class(answer) == subject.gold_label,
            }
    pool = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
    # A random active subject by its random key (indexed): no per-participant selection, no ticket.
    subject = random_one(pool)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "subject": subject,
        "outcome": outcome,
        "preview_url": reverse("core:workflow_preview", args=[workflow.project.slug, workflow.slug]),
    }
    template = "core/workflows/preview.html#task" if request.htmx else "core/workflows/preview.html"
    return render(request, template, context, status=400 if outcome and outcome.get("error") else 200)


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# --- Subject sets -------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def subject_sets(request, project):
    project, role = project_for_request(request, project, READ_ROLES)
    can_edit = role in WRITE_ROLES
    form = SubjectSetForm(request.POST or None, project=project) if can_edit else None
    if request.method == "POST":
        if not can_edit:
            project_for_request(request, project.slug, WRITE_ROLES)  # 403 for viewers
        if form.is_valid():
            subject_set = workflows.create_subject_set(
                project, form.cleaned_data["name"], form.cleaned_data["workflows"]
            )
            messages.success(request, f"Subject set '{subject_set.name}' created.")
            return redirect("core:subject_sets", project.slug)
    sets = (
        SubjectSet.objects.filter(project=project)
        .annotate(n_subjects=Count("subjects"))
        .prefetch_related("workflows")
        .order_by("name", "pk")
    )
    context = {"project": project, "role": role, "sets": sets, "form": form, "can_edit": can_edit}
    return _page(request, "core/subject_sets.html", context, request.method == "POST")


@login_required
@require_http_methods(["GET", "POST"])
def subject_set_edit(request, project, subject_set):
    project, role = project_for_request(request, project, WRITE_ROLES)
    subject_set = get_object_or_404(SubjectSet, pk=subject_set, project=project)
    form = SubjectSetForm(
        request.POST or None,
        project=project,
        instance=subject_set,
        initial={"workflows": subject_set.workflows.all()},
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            workflows.rename_subject_set(subject_set, form.cleaned_data["name"])
            workflows.set_workflows(subject_set, form.cleaned_data["workflows"])
        messages.success(request, "Saved.")
        return redirect("core:subject_sets", project.slug)
    context = {
        "project": project,
        "role": role,
        "form": form,
        "subject_set": subject_set,
        "n_subjects": subject_set.subjects.count(),
    }
    return _page(request, "core/subject_set_form.html", context, request.method == "POST")
