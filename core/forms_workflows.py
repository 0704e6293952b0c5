"""Forms of the workflow builder: a workflow and its answers, its settings (retirement, gold schedule,
selection, training), its tutorial and field guide, and subject sets.

Validation lives in core.workflows (shared with the API and the CLI); the forms turn its errors into
field errors and add the help text that the pages show.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from core import answers as answer_rules
from core import followups as followup_rules
from core import workflow_content, workflows
from core.models import SubjectSet, Workflow

ROW_ATTRS = {"class": "compact"}


# --- The workflow: name, kind, question, answers, similarity settings ---------------------------


class WorkflowForm(forms.ModelForm):
    class Meta:
        model = Workflow
        fields = ["name", "slug", "kind", "question", "comparison_source", "comparison_set", "n_candidates"]
        labels = {
            "slug": "Address",
            "comparison_source": "Comparison images",
            "n_candidates": "Candidates per task",
        }
        help_texts = {
            "name": "What volunteers see above the images.",
            "slug": "Lower-case letters, digits and hyphens: the workflow's address, /p/<project>/<address>/.",
            "kind": "Real or bogus: one answer per subject. Similarity: pick the images like a comparison image.",
            "question": "The question above the images.",
            "comparison_source": "Similarity: where each task's comparison image comes from.",
            "comparison_set": "Similarity: the subject set comparison images come from, with that source.",
            "n_candidates": "Similarity: how many candidate images each task shows (2–15; 15 by default).",
        }

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["comparison_set"].queryset = SubjectSet.objects.filter(project=project).order_by("name")
        self.fields["comparison_set"].required = False
        self.fields["question"].required = False
        if self.instance.pk:
            # The kind decides what votes mean; it is fixed once the workflow exists.
            self.fields["kind"].disabled = True
            self.fields["slug"].disabled = True
        else:
            self.fields["slug"].required = False
            self.fields["slug"].help_text += " Made from the name when left empty."

    def clean_slug(self):
        if self.instance.pk:
            return self.instance.slug
        slug = self.cleaned_data.get("slug") or ""
        try:
            return workflows.check_slug(
                self.project, slug or workflows.slug_for(self.cleaned_data.get("name", ""))
            )
        except workflows.BuilderError as exc:
            raise ValidationError(str(exc))

    def clean_n_candidates(self):
        n = self.cleaned_data.get("n_candidates")
        try:
            workflows.check_n_candidates(n)
        except workflows.BuilderError as exc:
            raise ValidationError(str(exc))
        return n

    def clean(self):
        data = super().clean()
        if data.get("comparison_source") == Workflow.COMPARE_SET and not data.get("comparison_set"):
            self.add_error("comparison_set", "Choose the subject set comparison images come from.")
        return data


class AnswerRowForm(forms.Form):
    key = forms.CharField(
        max_length=30,
        required=False,
        help_text="Stored in every vote: keep it once volunteers answer.",
        widget=forms.TextInput(attrs={"size": 10}),
    )
    label = forms.CharField(
        max_length=answer_rules.LABEL_MAX, required=False, widget=forms.TextInput(attrs={"size": 14})
    )
    shortcut = forms.CharField(
        max_length=1, required=False, label="Key", widget=forms.TextInput(attrs={"size": 2})
    )
    help = forms.CharField(
        max_length=answer_rules.HELP_MAX, required=False, widget=forms.TextInput(attrs={"size": 30})
    )
    counts_as = forms.ChoiceField(choices=answer_rules.COUNTS_AS_CHOICES, required=False, label="Counts as")

    def is_blank(self) -> bool:
        data = getattr(self, "cleaned_data", {}) or {}
        return not (data.get("key") or data.get("label"))


class BaseAnswerFormSet(forms.BaseFormSet):
    """Rows of answers; blank rows are ignored. `answers` holds the validated list after is_valid()."""

    def clean(self):
        if any(self.errors):
            return
        rows = [f.cleaned_data for f in self.forms if f.cleaned_data and not f.is_blank()]
        for row in rows:
            row["key"] = (
                row.get("key") or answer_rules.option_for_key(row.get("label", "").replace(" ", "_"))["key"]
            )
        try:
            self.answers = answer_rules.validate(rows)
        except answer_rules.AnswerError as exc:
            raise ValidationError(str(exc))


AnswerFormSet = forms.formset_factory(
    AnswerRowForm, formset=BaseAnswerFormSet, extra=2, max_num=answer_rules.MAX_ANSWERS
)


def answer_formset(data=None, answers=None, prefix="answers"):
    # Initial rows only for showing the form: posted rows are all "extra", and an extra row equal to
    # its initial value would count as unchanged and be skipped.
    if data is not None:
        return AnswerFormSet(data, prefix=prefix)
    initial = answer_rules.options(answers) if answers is not None else answer_rules.default_answers()
    return AnswerFormSet(initial=initial, prefix=prefix)


# --- Settings: retirement, gold schedule, selection, training -----------------------------------


class WorkflowSettingsForm(forms.ModelForm):
    acquisition_strategy = forms.ChoiceField(
        choices=[(name, name.replace("_", " ")) for name in workflows.strategy_names()],
        help_text="How the model's scores rank the pool: entropy, margin and least confidence favour "
        "subjects the model is unsure of; bald needs an ensemble; type entropy favours bogus subjects whose "
        "kind the model is unsure of (once a round has typed labels; until then, entropy); '+diverse' spreads "
        "picks out.",
    )

    class Meta:
        model = Workflow
        fields = [
            "retirement_rule", "retirement_limit", "min_votes", "max_votes", "swap_prior", "swap_p_low",
            "swap_p_high", "consensus_fraction", "exploration_share", "acquisition_strategy", "train_every",
            "model_input_size", "gem_share", "type_retirement", "type_confidence", "model_votes",
            "model_helped_training",
        ]  # fmt: skip
        labels = {
            "type_retirement": "Wait for the type",
            "type_confidence": "Type decided at posterior ≥",
            "retirement_rule": "Retire a subject",
            "retirement_limit": "Votes to retire",
            "swap_prior": "Prior P(real)",
            "swap_p_low": "Retire as bogus at P(real) ≤",
            "swap_p_high": "Retire as real at P(real) ≥",
            "consensus_fraction": "Share the leading answer needs",
            "exploration_share": "Exploration share",
            "gem_share": "Rare-gem share",
            "train_every": "Train after this many new labels",
            "model_input_size": "Model input size (pixels)",
            "model_votes": "The model votes",
            "model_helped_training": "Train on labels the model helped decide",
        }
        help_texts = {
            "retirement_limit": "A subject retires after this many votes (skips do not count).",
            "min_votes": "Never retire with fewer votes.",
            "type_retirement": "With follow-up types: a decided subject retires once its type is decided too, or "
            "at the maximum votes (its reason then says the type stayed undecided).",
            "type_confidence": "From 0.5 to 1, after at least two typed votes.",
            "max_votes": "Undecided at this many votes: the subject goes to the expert review queue.",
            "swap_prior": "P(real) before any vote.",
            "swap_p_low": "Between 0 and the prior.",
            "swap_p_high": "Between the prior and 1.",
            "consensus_fraction": "More than 0.5, at most 1. Answers that count as neither side are left out.",
            "exploration_share": "Share of subjects picked at random rather than by the model (0–1).",
            "gem_share": "Share of subjects drawn from the top rare-gem candidates few have seen (0–0.5).",
            "train_every": "A training round starts after this many new decided labels; 0 trains only by hand.",
            "model_input_size": "Side of the square the model sees; stamps are cropped or padded to it (16–256).",
            "model_votes": "The active model's calibrated score counts as one more vote, weighed by how it did on "
            "gold, on subjects it never trained on; a subject the model and volunteers agree on can retire sooner.",
            "model_helped_training": "Off (recommended): labels decided with the model's vote are left out of "
            "training, so the model does not learn its own mistakes. On: they train at half weight.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["gem_share"].required = False
        self.fields["type_confidence"].required = False
        if self.instance.kind == Workflow.SIMILARITY:
            # Similarity tasks retire by count and train an embedding; the rest is real/bogus only.
            for name in list(self.fields):
                if name not in ("retirement_limit", "train_every"):
                    del self.fields[name]

    def clean_gem_share(self):
        # Optional on the page: a form sent without it (an older page, a script) keeps the workflow's.
        value = self.cleaned_data.get("gem_share")
        return self.instance.gem_share if value is None else value

    def clean_type_confidence(self):
        value = self.cleaned_data.get("type_confidence")
        return self.instance.type_confidence if value is None else value

    def clean(self):
        data = super().clean()
        values = {**{f: getattr(self.instance, f) for f in self.Meta.fields}, **data}
        for field, message in workflows.settings_errors(values).items():
            if field in self.fields:
                self.add_error(field, message)
            else:
                self.add_error(None, message)
        return data


class GoldRowForm(forms.Form):
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        label="For a volunteer's first N subjects",
        widget=forms.NumberInput(attrs={"size": 6}),
    )
    share = forms.FloatField(
        required=False, label="Share of gold", widget=forms.NumberInput(attrs={"step": "0.05", "size": 6})
    )

    def is_blank(self) -> bool:
        data = getattr(self, "cleaned_data", {}) or {}
        return data.get("limit") is None and data.get("share") is None


class BaseGoldFormSet(forms.BaseFormSet):
    """Rows of "first N subjects → share"; the last row has no N (everyone after). `schedule` holds the
    validated [[N, share], ..., [None, share]] after is_valid()."""

    def clean(self):
        if any(self.errors):
            return
        rows = [f.cleaned_data for f in self.forms if f.cleaned_data and not f.is_blank()]
        schedule = [[row.get("limit"), row.get("share")] for row in rows]
        try:
            self.schedule = workflows.check_gold_schedule(schedule)
        except workflows.BuilderError as exc:
            raise ValidationError(str(exc))


GoldFormSet = forms.formset_factory(GoldRowForm, formset=BaseGoldFormSet, extra=2, max_num=12)


def gold_formset(data=None, schedule=None, prefix="gold"):
    if data is not None:
        return GoldFormSet(data, prefix=prefix)
    initial = [{"limit": limit, "share": share} for limit, share in (schedule or [])]
    return GoldFormSet(initial=initial, prefix=prefix)


# --- Tutorial and field guide -------------------------------------------------------------------

IMAGE_HELP = (
    "A subject of this project (its id or external id, e.g. subject:12 or ZTF21aaaaaaa), "
    "'builtin:<type>' for a built-in example, or upload a PNG/JPEG below."
)


class StepForm(forms.Form):
    title = forms.CharField(max_length=workflow_content.TITLE_MAX, required=False)
    text = forms.CharField(
        required=False,
        max_length=workflow_content.TEXT_MAX,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Markdown: **bold**, *italic*, lists, links. HTML and scripts are removed.",
    )
    image = forms.CharField(
        required=False,
        max_length=200,
        help_text=IMAGE_HELP,
        widget=forms.TextInput(attrs={"list": "subject-ids"}),
    )
    upload = forms.ImageField(required=False, label="or upload an image")

    def is_blank(self) -> bool:
        data = getattr(self, "cleaned_data", {}) or {}
        return not (data.get("title") or data.get("text") or data.get("image") or data.get("upload"))


class EntryForm(StepForm):
    answer = forms.ChoiceField(choices=[])
    subtype = forms.CharField(
        required=False, max_length=40, label="Type", help_text="Optional: e.g. cosmic_ray."
    )

    field_order = ["answer", "subtype", "title", "text", "image", "upload"]


class BaseContentFormSet(forms.BaseFormSet):
    """Steps or entries; blank rows are dropped, uploads stored, references checked. `items` holds
    the cleaned list after is_valid()."""

    kind = "steps"

    def __init__(self, *args, workflow, **kwargs):
        self.workflow = workflow
        super().__init__(*args, **kwargs)

    def get_form_kwargs(self, index):
        return {}

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        if "answer" in form.fields:
            form.fields["answer"].choices = [(o["key"], o["label"]) for o in self.workflow.answer_options]
        return form

    @property
    def empty_form(self):
        form = super().empty_form
        if "answer" in form.fields:
            form.fields["answer"].choices = [(o["key"], o["label"]) for o in self.workflow.answer_options]
        return form

    def clean(self):
        if any(self.errors):
            return
        items, new_uploads = [], []
        for form in self.forms:
            if not form.cleaned_data or form.is_blank():
                continue
            item = {k: v for k, v in form.cleaned_data.items() if k != "upload"}
            upload = form.cleaned_data.get("upload")
            if upload:
                try:
                    item["image"] = workflow_content.store_upload(self.workflow, upload)
                    new_uploads.append(item["image"])
                except workflow_content.ContentError as exc:
                    raise ValidationError(str(exc))
            items.append(item)
        try:
            clean = workflow_content.clean_steps if self.kind == "steps" else workflow_content.clean_entries
            self.items = clean(self.workflow, items, new_uploads=new_uploads)
        except workflow_content.ContentError as exc:
            raise ValidationError(str(exc))


class BaseEntryFormSet(BaseContentFormSet):
    kind = "entries"


StepFormSet = forms.formset_factory(
    StepForm, formset=BaseContentFormSet, extra=2, max_num=workflow_content.MAX_STEPS
)
EntryFormSet = forms.formset_factory(
    EntryForm, formset=BaseEntryFormSet, extra=2, max_num=workflow_content.MAX_ENTRIES
)


# --- Subject sets -------------------------------------------------------------------------------


class SubjectSetForm(forms.ModelForm):
    class Meta:
        model = SubjectSet
        fields = ["name", "workflows"]
        help_texts = {
            "name": "e.g. 'ZTF night 2026-03-01'. Uploads and `manage.py ingest --subject-set` name it.",
            "workflows": "The workflows that show this set's subjects.",
        }
        widgets = {"workflows": forms.CheckboxSelectMultiple}

    def __init__(self, *args, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["workflows"].queryset = project.workflows.order_by("name")
        self.fields["workflows"].required = False

    def clean_name(self):
        try:
            return workflows.check_set_name(self.project, self.cleaned_data.get("name", ""), self.instance)
        except workflows.BuilderError as exc:
            raise ValidationError(str(exc))


# --- Follow-up questions ------------------------------------------------------------------------

FOLLOWUP_NONE = "none"
FOLLOWUP_MODES = [(FOLLOWUP_NONE, "No follow-up"), *followup_rules.MODES]


def types_text(types) -> str:
    """A follow-up's types as the page's textarea shows them: one per line, "key | label | letter | guide"."""
    lines = []
    for t in types or []:
        parts = [t.get("key", ""), t.get("label", ""), t.get("shortcut", ""), t.get("guide", "")]
        while parts and not parts[-1]:
            parts.pop()
        lines.append(" | ".join(parts))
    return "\n".join(lines)


def parse_types(text: str) -> list[dict]:
    """The textarea's lines back into types: key, then optional label, keyboard letter and guide type."""
    types = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")] + ["", "", ""]
        types.append({"key": parts[0], "label": parts[1], "shortcut": parts[2], "guide": parts[3]})
    return types


def followup_blocks(workflow, data=None, defaults_for: str = "") -> list[dict]:
    """One block per answer of the workflow for the follow-ups page: the answer, and the mode, question
    and types the page shows (posted ones when `data` is given). `defaults_for`: the answer whose types
    become the field guide's (the "Add the field guide's types" button), by which side it counts on."""
    current = {f["answer"]: f for f in workflow.followups or []}
    blocks = []
    for option in answer_rules.options(workflow.answers):
        key = option["key"]
        stored = current.get(key)
        if data is not None:
            mode = data.get(f"f-{key}-mode", FOLLOWUP_NONE)
            question = data.get(f"f-{key}-question", "")
            text = data.get(f"f-{key}-types", "")
        else:
            mode = stored.get("mode", followup_rules.OPTIONAL) if stored else FOLLOWUP_NONE
            question = stored.get("question", "") if stored else ""
            text = types_text(stored["types"]) if stored else ""
        if key == defaults_for:
            side = option.get("counts_as") or answer_rules.BOGUS
            text = types_text(followup_rules.default_types(side))
            question = question or followup_rules.DEFAULT_QUESTION
            if mode == FOLLOWUP_NONE:
                mode = followup_rules.OPTIONAL
        if mode not in dict(FOLLOWUP_MODES):
            mode = FOLLOWUP_NONE
        blocks.append(
            {
                "answer": option,
                "mode": mode,
                "question": question,
                "types": text,
                "stored": stored is not None,
            }
        )
    return blocks


def followups_from_blocks(blocks) -> list[dict]:
    """What core.workflows.update_workflow takes from the page's blocks ("No follow-up" ones left out)."""
    return [
        {
            "answer": b["answer"]["key"],
            "question": b["question"],
            "mode": b["mode"],
            "types": parse_types(b["types"]),
        }
        for b in blocks
        if b["mode"] != FOLLOWUP_NONE
    ]
