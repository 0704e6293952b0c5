"""Scientist pages of the crowd features: gold labeling, volunteer skill, review queue, retirement.

Who may do what (anyone without a role in the project gets 404, never 403, so a project's
existence does not leak; a member whose role does not allow a page gets 403):

| page | roles |
| --- | --- |
| gold labeling (R / B / S keys) | owner, scientist, expert |
| volunteer skill table | owner, scientist, viewer |
| review queue (list) | owner, scientist, viewer, expert |
| retire / unretire by hand, retirement settings, recompute now | owner, scientist |
"""

import json

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.followups import type_keys, type_labels
from core.models import Subject, Workflow
from core.permissions import EXPERT_ROLES, MEMBER_ROLES, OWNER_ROLES, READ_ROLES, workflow_for
from labeling import gold, retirement
from labeling.jobs import request_aggregation, request_retirement_check
from labeling.models import ParticipantSkill

SKIPPED_KEEP = 500  # subjects an expert skipped, remembered in the session per workflow


# --- Gold labeling ------------------------------------------------------------------------------------


def _gold_context(request, workflow, error=None, last=None):
    skipped = request.session.get(f"gold-skipped-{workflow.pk}", [])
    from labeling.fieldguide import subtype_title
    from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES

    subtype_buttons = [
        {"value": f"{answer}:{s}", "title": subtype_title(s), "answer": answer, "key": str(i)}
        for i, (answer, s) in enumerate(
            [("real", s) for s in REAL_SUBTYPES] + [("bogus", s) for s in BOGUS_SUBTYPES], start=1
        )
    ]
    return {
        "project": workflow.project,
        "workflow": workflow,
        "subject": gold.next_for_expert(workflow, exclude_ids=skipped),
        "subtype_buttons": subtype_buttons,
        "n_gold": Subject.objects.filter(workflow=workflow).exclude(gold_label="").count(),
        "n_review": Subject.objects.filter(workflow=workflow, needs_review=True, gold_label="").count(),
        "n_skipped": len(skipped),
        "last": last,
        "error": error,
    }


@login_required
def gold_labeling(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, EXPERT_ROLES, kind=Workflow.REAL_BOGUS)
    return render(request, "labeling/crowd/gold.html", _gold_context(request, workflow))


@login_required
@require_POST
def gold_label_submit(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, EXPERT_ROLES, kind=Workflow.REAL_BOGUS)
    error = last = None
    subject = Subject.objects.filter(pk=request.POST.get("subject") or 0, workflow=workflow).first()
    label = (request.POST.get("label") or "").strip().lower()
    if subject is None:
        error = "That subject is not in this workflow."
    elif label == "skip":
        key = f"gold-skipped-{workflow.pk}"
        request.session[key] = (request.session.get(key, []) + [subject.pk])[-SKIPPED_KEEP:]
    else:
        try:
            answer, subtype = gold.parse_label(label)
            last = gold.set_gold(subject, answer, request.user, subtype)
        except gold.GoldError as exc:
            error = str(exc)
    context = _gold_context(request, workflow, error=error, last=last)
    if request.htmx:
        return render(request, "labeling/crowd/gold.html#task", context)
    if error:
        messages.error(request, error)
    return redirect("labeling:crowd_gold", workflow.project.slug, workflow.slug)


@login_required
@require_POST
def gold_skips_reset(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, EXPERT_ROLES, kind=Workflow.REAL_BOGUS)
    request.session.pop(f"gold-skipped-{workflow.pk}", None)
    return redirect("labeling:crowd_gold", workflow.project.slug, workflow.slug)


# --- Volunteer skill --------------------------------------------------------------------------------


HEAT_STEPS = 10  # the heat map's colour steps (CSS classes heat-0 … heat-10)


def type_heatmap(type_confusion, labels: dict[str, str]) -> dict | None:
    """A volunteer's K×K type confusion (ParticipantSkill.type_confusion) as table rows for the heat map:
    row = true type, column = the type they said; None when the recompute left no matrix."""
    classes = (type_confusion or {}).get("classes") or []
    matrix = (type_confusion or {}).get("matrix") or []
    if not classes or len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
        return None
    names = [labels.get(k, k) for k in classes]
    seen = (type_confusion or {}).get("seen") or []
    if len(seen) != len(classes):  # a matrix from before "seen" was kept: every row is shown
        seen = [None] * len(classes)
    return {
        "columns": [{"n": i, "label": name} for i, name in enumerate(names, start=1)],
        "rows": [
            {
                "n": i,
                "label": names[i - 1],
                # Under half a subject of this type seen: the row is the prior, not what they do.
                "unseen": seen[i - 1] is not None and float(seen[i - 1]) < 0.5,
                "cells": [
                    {
                        "value": float(v),
                        "said": names[j],
                        "heat": round(min(max(float(v), 0.0), 1.0) * HEAT_STEPS),
                    }
                    for j, v in enumerate(row)
                ],
            }
            for i, row in enumerate(matrix, start=1)
        ],
    }


def volunteer_rows(workflow: Workflow, skills) -> list[dict]:
    """One row per volunteer: skill from gold answers (SWAP tallies) and from agreement (DS confusion),
    and the type confusion heat map when the workflow has types."""
    from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
    from mlcore.aggregation import BOGUS, REAL, swap_skill

    project = workflow.project
    labels = type_labels(workflow.followups) if type_keys(workflow.followups) else None
    rows = []
    for skill in skills:
        gold_p_l, gold_p_d = swap_skill(
            skill.real_seen,
            skill.real_said_real,
            skill.bogus_seen,
            skill.bogus_said_bogus,
            pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
        )
        confusion = skill.confusion or []
        has_ds = len(confusion) == 2 and all(len(row) == 2 for row in confusion)
        rows.append(
            {
                "pseudonym": project.pseudonym(skill.participant_id),
                "n_votes": skill.n_votes,
                "n_gold": skill.n_gold,
                "gold_accuracy": (skill.n_gold_correct / skill.n_gold) if skill.n_gold else None,
                "gold_p_l": gold_p_l,
                "gold_p_d": gold_p_d,
                "ds_p_l": confusion[REAL][REAL] if has_ds else None,
                "ds_p_d": confusion[BOGUS][BOGUS] if has_ds else None,
                # What the next vote of this volunteer is weighed with (SWAP step on the request path).
                "informativeness": skill.p_l + skill.p_d - 1.0,
                "types": type_heatmap(skill.type_confusion, labels) if labels is not None else None,
            }
        )
    return rows


@login_required
def volunteers(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, READ_ROLES, kind=Workflow.REAL_BOGUS)
    skills = ParticipantSkill.objects.filter(workflow=workflow, n_votes__gt=0).order_by("-n_votes", "pk")
    page = Paginator(skills, 100).get_page(request.GET.get("page"))
    rows = volunteer_rows(workflow, page.object_list)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "page": page,
        "rows": rows,
        "n_volunteers": skills.count(),
        "type_maps": [r for r in rows if r["types"]],
    }
    return render(request, "labeling/crowd/volunteers.html", context)


@login_required
@require_POST
def recompute_now(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    request_aggregation(workflow, user=request.user)
    messages.success(request, "A full Dawid–Skene recompute is queued; the table updates when it finishes.")
    return redirect("labeling:crowd_volunteers", workflow.project.slug, workflow.slug)


# --- Review queue, retire / unretire by hand --------------------------------------------------------


@login_required
def review_queue(request, project, workflow):
    workflow, role = workflow_for(request, project, workflow, MEMBER_ROLES, kind=Workflow.REAL_BOGUS)
    queue = Subject.objects.filter(workflow=workflow, needs_review=True).order_by("retired_at", "pk")
    recently_retired = (
        Subject.objects.filter(workflow=workflow, status=Subject.RETIRED, needs_review=False)
        .exclude(retired_at=None)
        .order_by("-retired_at", "-pk")[:50]
    )
    shown, recent = list(queue[:200]), list(recently_retired)
    has_types = bool(type_keys(workflow.followups))
    if has_types:  # the decided type in the workflow's words, beside P(real)
        labels = type_labels(workflow.followups)
        for s in shown + recent:
            s.type_label = labels.get(s.decided_type, s.decided_type)
    context = {
        "project": workflow.project,
        "workflow": workflow,
        "role": role,
        "queue": shown,
        "n_queue": queue.count(),
        "recently_retired": recent,
        "can_label": role in EXPERT_ROLES,
        "has_types": has_types,
    }
    return render(request, "labeling/crowd/review.html", context)


def _subject_for_owner(request, project, workflow, subject_id=None):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    if subject_id is None:
        external_id = (request.POST.get("external_id") or "").strip()
        subject = Subject.objects.filter(workflow=workflow, external_id=external_id).first()
        if subject is None:
            messages.error(request, f"No subject '{external_id}' in this workflow.")
        return workflow, subject
    return workflow, get_object_or_404(Subject, pk=subject_id, workflow=workflow)


@login_required
@require_POST
def retire_subject(request, project, workflow, subject=None):
    workflow, subject = _subject_for_owner(request, project, workflow, subject)
    if subject is not None:
        if retirement.manual_retire(subject, request.user):
            messages.success(request, f"Retired {subject.external_id}.")
        else:
            messages.info(request, f"{subject.external_id} was already retired.")
    return redirect("labeling:crowd_review", workflow.project.slug, workflow.slug)


@login_required
@require_POST
def unretire_subject(request, project, workflow, subject=None):
    workflow, subject = _subject_for_owner(request, project, workflow, subject)
    if subject is not None:
        if retirement.manual_unretire(subject, request.user):
            messages.success(request, f"{subject.external_id} is back in the pool.")
        else:
            messages.info(request, f"{subject.external_id} was not retired.")
    return redirect("labeling:crowd_review", workflow.project.slug, workflow.slug)


# --- Retirement settings ----------------------------------------------------------------------------


class RetirementForm(forms.ModelForm):
    gold_schedule = forms.CharField(
        widget=forms.TextInput(attrs={"size": 36}),
        help_text="Share of gold subjects by how many a volunteer has seen: [[20, 0.4], [40, 0.3], [null, 0.1]] "
        "means 40% for the first 20, 30% up to 40, then 10%.",
    )

    class Meta:
        model = Workflow
        fields = [
            "retirement_rule",
            "retirement_limit",
            "min_votes",
            "max_votes",
            "swap_prior",
            "swap_p_low",
            "swap_p_high",
            "consensus_fraction",
            "type_retirement",
            "type_confidence",
        ]
        labels = {
            "type_retirement": "Wait for the type",
            "type_confidence": "Type decided at posterior ≥",
            "swap_prior": "SWAP prior P(real)",
            "swap_p_low": "SWAP P(real) low threshold",
            "swap_p_high": "SWAP P(real) high threshold",
        }
        help_texts = {
            "retirement_limit": "Count rule: votes to retire.",
            "min_votes": "SWAP and consensus: never retire with fewer votes.",
            "max_votes": "SWAP and consensus: undecided at this many votes → expert review queue.",
            "swap_prior": "SWAP: P(real) before any vote.",
            "swap_p_low": "SWAP: retire as bogus at or below this P(real).",
            "swap_p_high": "SWAP: retire as real at or above this P(real).",
            "consensus_fraction": "Consensus: share of votes the leading answer needs (0.5–1).",
            "type_retirement": "With follow-up types: a decided subject retires once its type is decided too, "
            "or at the maximum votes (its reason then says the type stayed undecided).",
            "type_confidence": "From 0.5 to 1, after at least two typed votes.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type_confidence"].required = False
        if not self.is_bound:
            self.initial["gold_schedule"] = json.dumps(self.instance.gold_schedule)

    def clean_type_confidence(self):
        # Optional: a form sent without it (an older page, a script) keeps the workflow's.
        value = self.cleaned_data.get("type_confidence")
        return self.instance.type_confidence if value is None else value

    def clean_gold_schedule(self):
        text = self.cleaned_data["gold_schedule"]
        try:
            schedule = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg}.")
        if not isinstance(schedule, list) or not schedule:
            raise forms.ValidationError("A list of [seen fewer than N, share] pairs, the last with null.")
        previous = 0
        for i, pair in enumerate(schedule):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise forms.ValidationError(f"Entry {i + 1} is not a [limit, share] pair.")
            limit, share = pair
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
                raise forms.ValidationError(f"Entry {i + 1}: the share must be a number from 0 to 1.")
            if limit is None:
                if i != len(schedule) - 1:
                    raise forms.ValidationError("Only the last entry may have no limit (null).")
            elif isinstance(limit, bool) or not isinstance(limit, int) or limit <= previous:
                raise forms.ValidationError(f"Entry {i + 1}: limits must be whole numbers that increase.")
            else:
                previous = limit
        if schedule[-1][0] is not None:
            raise forms.ValidationError("The last entry needs a null limit (the share for everyone after).")
        return schedule

    def clean(self):
        data = super().clean()
        low, high, prior = data.get("swap_p_low"), data.get("swap_p_high"), data.get("swap_prior")
        if None not in (low, high, prior) and not 0 < low < prior < high < 1:
            raise forms.ValidationError("SWAP needs 0 < P low < prior < P high < 1.")
        if data.get("min_votes") is not None and data.get("max_votes") is not None:
            if data["min_votes"] < 1:
                self.add_error("min_votes", "At least 1.")
            elif data["min_votes"] > data["max_votes"]:
                self.add_error("max_votes", "Must be at least the minimum number of votes.")
        fraction = data.get("consensus_fraction")
        if fraction is not None and not 0.5 < fraction <= 1:
            self.add_error("consensus_fraction", "Between 0.5 (exclusive) and 1.")
        if data.get("retirement_limit") is not None and data["retirement_limit"] < 1:
            self.add_error("retirement_limit", "At least 1.")
        return data

    def save(self, commit=True):
        self.instance.gold_schedule = self.cleaned_data["gold_schedule"]
        fields = [*self.Meta.fields, "gold_schedule"]
        if commit:
            self.instance.save(update_fields=fields)
        return self.instance


@login_required
def retirement_settings(request, project, workflow):
    workflow, _ = workflow_for(request, project, workflow, OWNER_ROLES, kind=Workflow.REAL_BOGUS)
    form = RetirementForm(request.POST or None, instance=workflow)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            request_retirement_check(workflow, user=request.user)
        messages.success(request, "Saved. Active subjects are being re-evaluated under the new rule.")
        return redirect("labeling:crowd_retirement", workflow.project.slug, workflow.slug)
    active = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE).count()
    context = {"project": workflow.project, "workflow": workflow, "form": form, "n_active": active}
    return render(request, "labeling/crowd/retirement.html", context, status=400 if form.errors else 200)
