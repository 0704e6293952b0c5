"""Request bodies of the workflow builder's API (core.api_workflows). They check types and shapes;
the rules (two answers or more, unique keyboard keys, a gold schedule that adds up, ...) are
core.workflows', whose messages come back as 400s by field."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core import answers as answer_rules
from core.models import Workflow


class AnswerSerializer(serializers.Serializer):
    key = serializers.CharField(
        max_length=30, help_text="Stored in every vote; lower-case letters, digits, - or _."
    )
    label = serializers.CharField(max_length=answer_rules.LABEL_MAX, required=False, allow_blank=True)
    shortcut = serializers.CharField(
        max_length=1, required=False, allow_blank=True, help_text="One keyboard letter (S is Skip)."
    )
    help = serializers.CharField(max_length=answer_rules.HELP_MAX, required=False, allow_blank=True)
    counts_as = serializers.ChoiceField(
        choices=["real", "bogus", ""], required=False, allow_blank=True,
        help_text="Which side of P(real) a vote for it counts on; '' for neither (e.g. not sure).",
    )  # fmt: skip


class TutorialStepSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=120, required=False, allow_blank=True)
    text = serializers.CharField(max_length=5000, help_text="Markdown; sanitised when shown.")
    image = serializers.CharField(
        max_length=200, required=False, allow_blank=True,
        help_text="'subject:<id>', 'builtin:<type>', or an 'upload:...' reference the workflow already has.",
    )  # fmt: skip


class FieldGuideEntrySerializer(TutorialStepSerializer):
    answer = serializers.CharField(max_length=30, help_text="The key of the answer this entry illustrates.")
    subtype = serializers.CharField(max_length=40, required=False, allow_blank=True)
    text = serializers.CharField(max_length=5000, required=False, allow_blank=True)


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": "number", "nullable": True},
            "minItems": 2,
            "maxItems": 2,
        },
        "description": "[[N, share], ..., [null, share]]: the share of gold among a volunteer's first N "
        "subjects; limits increase; the last row's limit is null (everyone after).",
    }
)
class GoldScheduleField(serializers.JSONField):
    pass


class FollowupTypeSerializer(serializers.Serializer):
    key = serializers.CharField(
        max_length=30,
        help_text="Stored in votes (`followup`): keep it once volunteers answer; rename the label.",
    )
    label = serializers.CharField(max_length=answer_rules.LABEL_MAX, required=False, allow_blank=True)
    shortcut = serializers.CharField(
        max_length=1, required=False, allow_blank=True,
        help_text="One keyboard letter (its position 1–9 works too; F, U, G, S and the answers' letters are taken).",
    )  # fmt: skip
    guide = serializers.CharField(
        max_length=40, required=False, allow_blank=True,
        help_text="A built-in field-guide type whose example the page shows as a thumbnail.",
    )  # fmt: skip


class FollowupSerializer(serializers.Serializer):
    answer = serializers.CharField(max_length=30, help_text="The key of the answer the question follows.")
    question = serializers.CharField(max_length=200, required=False, allow_blank=True)
    mode = serializers.ChoiceField(
        choices=["required", "optional", "off"], required=False, default="optional",
        help_text="required: always asked; optional: may be passed, fast mode allowed; off: kept, not asked.",
    )  # fmt: skip
    types = FollowupTypeSerializer(
        many=True, help_text='1–9 types; "not_sure" is always allowed, never listed.'
    )


class WorkflowUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    question = serializers.CharField(max_length=300, required=False, allow_blank=True)
    answers = AnswerSerializer(many=True, required=False, help_text="Real/bogus: two or more answers.")
    followups = FollowupSerializer(
        many=True, required=False,
        help_text="Real/bogus: \"What kind?\" questions after answers, replaced as a whole. Removing a type that "
        "votes name is refused (400); renaming it (same key) is fine.",
    )  # fmt: skip
    tutorial = TutorialStepSerializer(many=True, required=False)
    field_guide = FieldGuideEntrySerializer(many=True, required=False)
    is_active = serializers.BooleanField(required=False, help_text="Live: volunteers see the workflow.")
    retirement_rule = serializers.ChoiceField(choices=Workflow.RULES, required=False)
    retirement_limit = serializers.IntegerField(required=False)
    min_votes = serializers.IntegerField(required=False)
    max_votes = serializers.IntegerField(required=False)
    swap_prior = serializers.FloatField(required=False)
    swap_p_low = serializers.FloatField(required=False)
    swap_p_high = serializers.FloatField(required=False)
    consensus_fraction = serializers.FloatField(required=False)
    type_retirement = serializers.BooleanField(
        required=False, help_text="Retire only when the type is decided too (or after max_votes)."
    )
    type_confidence = serializers.FloatField(
        required=False, help_text="A type is decided when its posterior reaches this (0.5 to 1)."
    )
    model_votes = serializers.BooleanField(
        required=False, help_text="Real/bogus: the active model's calibrated score counts as one more vote."
    )
    model_helped_training = serializers.BooleanField(
        required=False,
        help_text="Train on labels the model helped decide (at half weight); off (default) leaves them out.",
    )
    gold_schedule = GoldScheduleField(required=False)
    exploration_share = serializers.FloatField(required=False)
    acquisition_strategy = serializers.CharField(max_length=30, required=False)
    train_every = serializers.IntegerField(required=False, min_value=0)
    model_input_size = serializers.IntegerField(required=False)
    show_light_curve = serializers.BooleanField(required=False)
    comparison_source = serializers.ChoiceField(choices=Workflow.COMPARISON_SOURCES, required=False)
    comparison_set = serializers.IntegerField(
        required=False, allow_null=True, help_text="A subject set's id."
    )
    n_candidates = serializers.IntegerField(required=False, help_text="Similarity: 2–15 candidates per task.")

    def validate(self, data):
        # Nested serializers give OrderedDicts; the services want plain lists of dicts.
        for field in ("answers", "tutorial", "field_guide"):
            if field in data:
                data[field] = [dict(item) for item in data[field]]
        if "followups" in data:
            data["followups"] = [
                {**dict(item), "types": [dict(t) for t in item.get("types", [])]}
                for item in data["followups"]
            ]
        return data


class WorkflowUpdateFixedSerializer(WorkflowUpdateSerializer):
    # Accepted so that a client sending them back unchanged is fine, and one changing them is told no.
    slug = serializers.SlugField(max_length=50, required=False, help_text="Fixed once the workflow exists.")
    kind = serializers.ChoiceField(
        choices=Workflow.KINDS, required=False, help_text="Fixed once the workflow exists."
    )


class WorkflowCreateSerializer(WorkflowUpdateSerializer):
    slug = serializers.SlugField(max_length=50, help_text="The workflow's address: /p/<project>/<slug>/.")
    kind = serializers.ChoiceField(choices=Workflow.KINDS, default=Workflow.REAL_BOGUS)


class SubjectSetWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    workflows = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="Ids of the workflows to link it to."
    )
