"""The workflow builder's services: making and changing workflows and subject sets, the rules their
settings must follow, the launch checklist. The pages (core.views_workflows), the REST API
(core.api), the commands (`create_workflow`, `ingest --create`) and the demo (`seed_demo`) all go
through here, so a workflow made one way is the same as one made another.

Every rule raises BuilderError (or returns field → message) with a sentence for a person: forms show
it beside the field, the API answers 400 with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils.text import slugify

from core import answers as answer_rules
from core import followups as followup_rules
from core import workflow_content
from core.models import Project, Subject, SubjectSet, Workflow

DEFAULT_SET_NAME = "default"
# Words the project's own pages use right under /p/<project>/: a workflow may not take them.
RESERVED_SLUGS = frozenset(
    {
        "workflows", "subject-sets", "upload", "exports", "batches", "search", "field-guide", "settings",
        "team", "edit", "members", "invitations", "api", "model", "new", "about", "cover", "delete",
    }
)  # fmt: skip
# At most 15: a similarity vote's database constraint bounds how many candidates one answer may pick.
MIN_CANDIDATES, MAX_CANDIDATES = 2, 15
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 256

# Fields the builder (pages, API) may set on a workflow, beyond name, question and answers.
SETTING_FIELDS = (
    "retirement_rule", "retirement_limit", "min_votes", "max_votes", "swap_prior", "swap_p_low", "swap_p_high",
    "consensus_fraction", "gold_schedule", "exploration_share", "acquisition_strategy", "train_every",
    "model_input_size", "comparison_source", "comparison_set", "n_candidates", "show_light_curve",
    "model_pixel_scale", "model_uncertainty_channel", "gem_share", "type_retirement", "type_confidence",
    "model_votes", "model_helped_training",
)  # fmt: skip


class BuilderError(ValueError):
    """A workflow or subject set that cannot be made as asked; `field` names the culprit if one does."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# --- Rules --------------------------------------------------------------------------------------


def strategy_names() -> tuple[str, ...]:
    from mlcore.acquisition import STRATEGY_NAMES

    return STRATEGY_NAMES


def slug_for(name: str) -> str:
    return slugify(name or "")[:50]


def check_slug(project: Project, slug: str, instance: Workflow | None = None) -> str:
    slug = (slug or "").strip().lower()
    if not slug:
        raise BuilderError("Give the workflow an address (letters, digits and hyphens).", "slug")
    if slug != slugify(slug) or len(slug) > 50:
        raise BuilderError("The address may use lower-case letters, digits and hyphens (at most 50).", "slug")
    if slug in RESERVED_SLUGS:
        raise BuilderError(
            f"'{slug}' is the name of one of the project's pages: choose another address.", "slug"
        )
    taken = Workflow.objects.filter(project=project, slug=slug)
    if instance is not None and instance.pk:
        taken = taken.exclude(pk=instance.pk)
    if taken.exists():
        raise BuilderError(f"This project already has a workflow at '{slug}'.", "slug")
    return slug


def check_n_candidates(n) -> None:
    if n is None or not MIN_CANDIDATES <= int(n) <= MAX_CANDIDATES:
        raise BuilderError(
            f"A task shows {MIN_CANDIDATES} to {MAX_CANDIDATES} candidate images.", "n_candidates"
        )


def check_gold_schedule(schedule) -> list:
    """[[N, share], ..., [None, share]]: shares from 0 to 1, limits whole numbers that increase, the
    last row without a limit (the share for everyone after). BuilderError otherwise."""
    if not isinstance(schedule, list) or not schedule:
        raise BuilderError(
            "The gold schedule needs at least one row: the share of gold for everyone.", "gold_schedule"
        )
    previous = 0
    cleaned = []
    for i, row in enumerate(schedule, start=1):
        if not (isinstance(row, list | tuple) and len(row) == 2):
            raise BuilderError(f"Row {i} of the gold schedule is not a [limit, share] pair.", "gold_schedule")
        limit, share = row
        if (
            share is None
            or isinstance(share, bool)
            or not isinstance(share, int | float)
            or not 0 <= share <= 1
        ):
            raise BuilderError(f"Row {i}: the share of gold must be a number from 0 to 1.", "gold_schedule")
        if limit is None:
            if i != len(schedule):
                raise BuilderError(
                    f"Row {i} has no limit, so it covers everyone after: only the last row may.",
                    "gold_schedule",
                )
        elif isinstance(limit, bool) or not isinstance(limit, int) or limit <= previous:
            raise BuilderError(
                f"Row {i}: limits must be whole numbers that increase from row to row ({limit} after {previous}).",
                "gold_schedule",
            )
        else:
            previous = limit
        cleaned.append([limit, float(share)])
    if cleaned[-1][0] is not None:
        raise BuilderError(
            "The schedule does not add up: the last row needs an empty limit, the share for everyone "
            f"who has seen more than {previous} subjects.",
            "gold_schedule",
        )
    return cleaned


def settings_errors(values: dict) -> dict[str, str]:
    """field → message for every rule the settings break (empty when they are fine)."""
    errors: dict[str, str] = {}
    v = values.get
    if v("retirement_limit") is not None and v("retirement_limit") < 1:
        errors["retirement_limit"] = "At least 1: a subject needs a vote before it retires."
    if v("train_every") is not None and v("train_every") < 0:
        errors["train_every"] = "0 (train only by hand) or more."
    # Every kind's settings are checked, whether its pages use them or not: the database holds
    # constraints on all of them (a negative min_votes on a similarity workflow must be a 400, not a 500).
    if v("retirement_rule") not in (None, *dict(Workflow.RULES)):
        errors["retirement_rule"] = f"One of {', '.join(dict(Workflow.RULES))}."
    if v("min_votes") is not None and v("min_votes") < 1:
        errors["min_votes"] = "At least 1."
    elif None not in (v("min_votes"), v("max_votes")) and v("min_votes") > v("max_votes"):
        errors["max_votes"] = "Must be at least the minimum number of votes."
    low, high, prior = v("swap_p_low"), v("swap_p_high"), v("swap_prior")
    if None not in (low, high, prior) and not 0 < low < prior < high < 1:
        errors["swap_prior"] = "SWAP needs 0 < low threshold < prior < high threshold < 1."
    fraction = v("consensus_fraction")
    if fraction is not None and not 0.5 < fraction <= 1:
        errors["consensus_fraction"] = "More than 0.5 and at most 1."
    type_confidence = v("type_confidence")
    if type_confidence is not None and not 0.5 <= type_confidence <= 1:
        errors["type_confidence"] = "From 0.5 to 1."
    share = v("exploration_share")
    if share is not None and not 0 <= share <= 1:
        errors["exploration_share"] = "A share from 0 to 1."
    gem_share = v("gem_share")
    if gem_share is not None and not 0 <= gem_share <= 0.5:
        errors["gem_share"] = "A share from 0 to 0.5."
    strategy = v("acquisition_strategy")
    if strategy is not None and strategy not in strategy_names():
        errors["acquisition_strategy"] = f"One of {', '.join(strategy_names())}."
    size = v("model_input_size")
    if size is not None and not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        errors["model_input_size"] = f"From {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} pixels."
    return errors


def check_set_name(project: Project, name: str, instance: SubjectSet | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise BuilderError("Give the subject set a name.", "name")
    if len(name) > 200:
        raise BuilderError("At most 200 characters.", "name")
    taken = SubjectSet.objects.filter(project=project, name=name)
    if instance is not None and instance.pk:
        taken = taken.exclude(pk=instance.pk)
    if taken.exists():
        raise BuilderError(f"This project already has a subject set called '{name}'.", "name")
    return name


# --- Workflows ----------------------------------------------------------------------------------


def create_workflow(
    project: Project,
    slug: str,
    *,
    kind: str = Workflow.REAL_BOGUS,
    name: str = "",
    question: str = "",
    answers=None,
    is_active: bool = False,
    followups=None,
    **settings,
) -> tuple[Workflow, bool]:
    """The project's workflow at `slug`, made with the builder's defaults if it does not exist:
    (workflow, created). Idempotent: an existing workflow is returned as it is (its kind must match).

    A new real/bogus workflow gets the answers (real and bogus by default), the default tutorial and
    the built-in ZTF field guide; every new workflow gets an empty "default" subject set. New
    workflows are drafts (`is_active=False`) until launched, unless `is_active` says otherwise.
    `followups`: the follow-up questions (core.followups), none by default.
    """
    if kind not in dict(Workflow.KINDS):
        raise BuilderError(f"The kind must be one of {', '.join(dict(Workflow.KINDS))}.", "kind")
    existing = Workflow.objects.filter(project=project, slug=slug).first()
    if existing is not None:
        if existing.kind != kind:
            raise BuilderError(
                f"'{project.slug}/{slug}' exists already and is a {existing.kind} workflow.", "kind"
            )
        return existing, False
    slug = check_slug(project, slug)
    if kind == Workflow.REAL_BOGUS:
        cleaned_answers = _answers(answers if answers is not None else answer_rules.default_answers())
        tutorial, guide = workflow_content.default_tutorial(), workflow_content.default_field_guide()
        default_question = Workflow._meta.get_field("question").default
    else:
        cleaned_answers, tutorial, guide = [], [], []
        # Not "on the left": on a phone the comparison image is above the grid.
        default_question = "Which of these images look like the comparison image?"
    workflow = Workflow(
        project=project,
        slug=slug,
        kind=kind,
        name=(name or slug.replace("-", " ").capitalize())[:200],
        question=(question or default_question)[:300],
        answers=cleaned_answers,
        tutorial=tutorial,
        field_guide=guide,
        is_active=is_active,
    )
    if followups:
        if kind != Workflow.REAL_BOGUS:
            raise BuilderError("Similarity workflows have no answers to follow up.", "followups")
        workflow.followups = _followups(followups, cleaned_answers)
    _apply_settings(workflow, settings)
    with transaction.atomic():
        workflow.save()
        default_subject_set(workflow)
    return workflow, True


def update_workflow(workflow: Workflow, **changes) -> Workflow:
    """Change a workflow's name, question, answers, content or settings, checking every rule first.
    The kind and address never change (votes and links depend on them)."""
    for fixed in ("kind", "slug", "project"):
        if fixed in changes and changes[fixed] != getattr(
            workflow, fixed if fixed != "project" else "project"
        ):
            raise BuilderError(f"A workflow's {fixed} cannot change once it exists.", fixed)
        changes.pop(fixed, None)
    old_followups = workflow.followups
    if "answers" in changes and "followups" not in changes and workflow.followups:
        # A removed answer takes its follow-up question with it (an answer with votes cannot go).
        new_keys = answer_rules.keys(changes["answers"] or [])
        changes["followups"] = followup_rules.keep_answered(workflow.followups, new_keys)
    if "answers" in changes:
        if workflow.kind != Workflow.REAL_BOGUS:
            if changes["answers"]:
                raise BuilderError("Similarity workflows have no answers to configure.", "answers")
        else:
            new = _answers(changes["answers"])
            _check_answer_keys_kept(workflow, new)
            workflow.answers = new
        changes.pop("answers")
    if "followups" in changes:
        raw = changes.pop("followups")
        if workflow.kind != Workflow.REAL_BOGUS:
            if raw:
                raise BuilderError("Similarity workflows have no answers to follow up.", "followups")
        else:
            new_followups = _followups(raw, workflow.answers)
            _check_types_kept(workflow, old_followups, new_followups)
            workflow.followups = new_followups
    for field in ("name", "question"):
        if field in changes:
            value = str(changes.pop(field) or "").strip()
            if field == "name" and not value:
                raise BuilderError("Give the workflow a name.", "name")
            setattr(workflow, field, value[: Workflow._meta.get_field(field).max_length])
    if "tutorial" in changes:
        workflow.tutorial = _content(
            workflow_content.clean_steps, workflow, changes.pop("tutorial"), "tutorial"
        )
    if "field_guide" in changes:
        workflow.field_guide = _content(
            workflow_content.clean_entries, workflow, changes.pop("field_guide"), "field_guide"
        )
    if "is_active" in changes:
        workflow.is_active = bool(changes.pop("is_active"))
    _apply_settings(workflow, changes)
    workflow.save()
    return workflow


def _answers(raw) -> list[dict]:
    try:
        return answer_rules.validate(raw)
    except answer_rules.AnswerError as exc:
        raise BuilderError(str(exc), "answers")


def _followups(raw, answers) -> list[dict]:
    try:
        return followup_rules.validate(raw, answers)
    except followup_rules.FollowupError as exc:
        raise BuilderError(str(exc), "followups")


def used_type_keys(workflow: Workflow) -> set[str]:
    """The follow-up answers standing votes store: the types an edit may not remove."""
    from django.apps import apps

    vote = apps.get_model("labeling", "Vote")
    return set(
        vote.objects.filter(workflow=workflow, retracted=False)
        .exclude(followup="")
        .values_list("followup", flat=True)
        .distinct()
    )


def _check_types_kept(workflow: Workflow, old: list[dict], new: list[dict]) -> None:
    if not workflow.pk or not followup_rules.type_keys(old):
        return
    try:
        followup_rules.check_edit(old, new, used_type_keys(workflow))
    except followup_rules.FollowupError as exc:
        raise BuilderError(str(exc), "followups")


def _check_answer_keys_kept(workflow: Workflow, new: list[dict]) -> None:
    """Votes store answer keys: an answer that has votes may be relabelled but not removed."""
    from django.apps import apps

    gone = set(workflow.answer_keys) - {o["key"] for o in new}
    if not gone:
        return
    vote = apps.get_model("labeling", "Vote")
    used = sorted(
        vote.objects.filter(workflow=workflow, answer__in=gone).values_list("answer", flat=True).distinct()
    )
    if used:
        raise BuilderError(
            f"Volunteers have answered {', '.join(used)}: keep those keys (change their labels instead).",
            "answers",
        )


def _content(clean, workflow, value, field):
    try:
        return clean(workflow, value)
    except workflow_content.ContentError as exc:
        raise BuilderError(str(exc), field)


def _apply_settings(workflow: Workflow, settings: dict) -> None:
    unknown = set(settings) - set(SETTING_FIELDS)
    if unknown:
        raise BuilderError(f"Unknown workflow setting(s): {', '.join(sorted(unknown))}.", sorted(unknown)[0])
    if "gold_schedule" in settings:
        settings["gold_schedule"] = check_gold_schedule(settings["gold_schedule"])
    if "n_candidates" in settings:
        check_n_candidates(settings["n_candidates"])
    comparison_set = settings.get("comparison_set")
    if comparison_set is not None and not isinstance(comparison_set, SubjectSet):
        comparison_set = SubjectSet.objects.filter(project=workflow.project, pk=comparison_set).first()
        if comparison_set is None:
            raise BuilderError("No such subject set in this project.", "comparison_set")
        settings["comparison_set"] = comparison_set
    if "comparison_source" in settings and settings["comparison_source"] not in dict(
        Workflow.COMPARISON_SOURCES
    ):
        raise BuilderError(
            f"The comparison source is one of {', '.join(dict(Workflow.COMPARISON_SOURCES))}.",
            "comparison_source",
        )
    values = {f: getattr(workflow, f) for f in SETTING_FIELDS}
    values.update(settings)
    errors = settings_errors(_numbers(values))
    if errors:
        field, message = next(iter(errors.items()))
        raise BuilderError(message, field)
    if values.get("comparison_source") == Workflow.COMPARE_SET and values.get("comparison_set") is None:
        raise BuilderError("Choose the subject set comparison images come from.", "comparison_set")
    for field, value in settings.items():
        setattr(workflow, field, value)


def _numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in ("gold_schedule", "comparison_set")}


# --- Subject sets -------------------------------------------------------------------------------


def default_subject_set(workflow: Workflow) -> SubjectSet:
    """The workflow's "default" set: where subjects go when an ingest names no set."""
    found = SubjectSet.objects.filter(
        project_id=workflow.project_id, name=DEFAULT_SET_NAME, workflows=workflow
    )
    subject_set = found.order_by("pk").first()
    if subject_set is None:
        subject_set = SubjectSet.objects.create(project_id=workflow.project_id, name=DEFAULT_SET_NAME)
        subject_set.workflows.add(workflow)
    return subject_set


def create_subject_set(project: Project, name: str, workflows=()) -> SubjectSet:
    name = check_set_name(project, name)
    with transaction.atomic():
        subject_set = SubjectSet.objects.create(project=project, name=name)
        for workflow in workflows:
            attach(subject_set, workflow)
    return subject_set


def rename_subject_set(subject_set: SubjectSet, name: str) -> SubjectSet:
    subject_set.name = check_set_name(subject_set.project, name, subject_set)
    subject_set.save(update_fields=["name"])
    return subject_set


def attach(subject_set: SubjectSet, workflow: Workflow) -> int:
    """Link the set to the workflow. Its subjects that no workflow shows yet join this one (a subject
    is shown by one workflow: its votes, counts and retirement are that workflow's). Returns how
    many joined."""
    if workflow.project_id != subject_set.project_id:
        raise BuilderError("The subject set and the workflow belong to different projects.", "workflows")
    with transaction.atomic():
        subject_set.workflows.add(workflow)
        return Subject.objects.filter(subject_set=subject_set, workflow__isnull=True).update(
            workflow=workflow
        )


def detach(subject_set: SubjectSet, workflow: Workflow) -> int:
    """Unlink the set from the workflow. Its subjects in that workflow that nobody has answered leave
    it (volunteers stop seeing them); answered ones stay, with their votes. Returns how many left."""
    with transaction.atomic():
        subject_set.workflows.remove(workflow)
        return Subject.objects.filter(
            subject_set=subject_set, workflow=workflow, vote_count=0, gold_label=""
        ).update(workflow=None)


def set_workflows(subject_set: SubjectSet, workflows) -> None:
    """Attach and detach so the set is linked to exactly `workflows`."""
    wanted = {w.pk: w for w in workflows}
    current = {w.pk: w for w in subject_set.workflows.all()}
    for pk in current.keys() - wanted.keys():
        detach(subject_set, current[pk])
    for pk in wanted.keys() - current.keys():
        attach(subject_set, wanted[pk])


# --- The launch checklist -----------------------------------------------------------------------


@dataclass
class CheckItem:
    name: str
    ok: bool
    text: str
    required: bool = True  # a required item blocks the launch; the others are advice


def checklist(workflow: Workflow) -> list[CheckItem]:
    """What a workflow needs before volunteers see it, each with a sentence for the scientist."""
    subjects = Subject.objects.filter(workflow=workflow)
    n_active = subjects.filter(status=Subject.ACTIVE).count()
    items = []
    if workflow.kind == Workflow.SIMILARITY:
        need = workflow.n_candidates + 1
        items.append(
            CheckItem(
                "subjects",
                n_active >= need,
                f"{n_active} subjects to show (a task needs at least {need}: one comparison and "
                f"{workflow.n_candidates} candidates).",
            )
        )
    else:
        items.append(
            CheckItem(
                "subjects",
                n_active > 0,
                f"{n_active} subjects waiting for volunteers."
                if n_active
                else "No subjects yet: add a subject set with subjects.",
            )
        )
    items.append(
        CheckItem(
            "tutorial",
            bool(workflow.tutorial),
            f"A tutorial of {len(workflow.tutorial)} steps."
            if workflow.tutorial
            else "No tutorial yet: volunteers see a generic one.",
            required=False,
        )
    )
    if workflow.kind == Workflow.REAL_BOGUS:
        n_gold = subjects.exclude(gold_label="").count()
        wants_gold = any(share > 0 for _, share in workflow.gold_schedule)
        if n_gold:
            gold = CheckItem(
                "gold", True, f"{n_gold} gold subjects check volunteers and give them feedback.", False
            )
        elif not wants_gold:
            gold = CheckItem("gold", True, "Runs without gold: the gold schedule's shares are all 0.", False)
        else:
            gold = CheckItem(
                "gold",
                False,
                "No gold subjects: volunteers get no feedback and skills come only from agreement. "
                "Label some on the gold page, or set the gold schedule's shares to 0 to run without.",
                required=False,
            )
        items.append(gold)
    errors = settings_errors({f: getattr(workflow, f) for f in SETTING_FIELDS if f != "comparison_set"})
    if workflow.kind == Workflow.REAL_BOGUS:
        rule = dict(Workflow.RULES).get(workflow.retirement_rule, workflow.retirement_rule)
        detail = {
            Workflow.RULE_COUNT: f"after {workflow.retirement_limit} votes",
            Workflow.RULE_SWAP: f"at P(real) ≤ {workflow.swap_p_low} or ≥ {workflow.swap_p_high}",
            Workflow.RULE_CONSENSUS: f"at {workflow.consensus_fraction:.0%} agreement",
        }.get(workflow.retirement_rule, "")
        text = f"Retirement: {rule.lower()} ({detail})."
    else:
        text = f"Retirement: after {workflow.retirement_limit} answers per task."
    if errors:
        text = "Retirement settings need fixing: " + " ".join(errors.values())
    items.append(CheckItem("retirement", not errors, text))
    return items


def can_launch(items: list[CheckItem]) -> bool:
    return all(item.ok for item in items if item.required)


def launch(workflow: Workflow) -> list[CheckItem]:
    """Make the workflow live if every required item of its checklist is met; the checklist either way."""
    items = checklist(workflow)
    if can_launch(items):
        workflow.is_active = True
        workflow.save(update_fields=["is_active"])
    return items
