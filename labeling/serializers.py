"""REST API serializers of real/bogus volunteering: subjects with their decided label, votes and
volunteer skill (participants as project pseudonyms, core.serializers.ParticipantFields)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core import gems
from core.models import Subject, Workflow
from core.serializers import ParticipantFields
from labeling.labels import label_of
from labeling.models import ParticipantSkill, Vote


class SubjectSerializer(serializers.ModelSerializer):
    workflow_slug = serializers.SlugRelatedField(
        source="workflow", slug_field="slug", read_only=True, allow_null=True
    )
    label = serializers.SerializerMethodField(
        help_text="Gold label if any, else the crowd's label once decided (same rule as the labels export)."
    )
    label_source = serializers.SerializerMethodField(help_text="gold, crowd, or empty while undecided.")
    n_real = serializers.SerializerMethodField()
    n_bogus = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField(help_text="URLs of the rendered PNGs by role.")
    model_version = serializers.SerializerMethodField(help_text="Active model version behind model_score.")

    class Meta:
        model = Subject
        fields = [
            "id", "external_id", "object_id", "workflow", "workflow_slug", "subject_set", "source", "survey",
            "schema_version", "metadata",
            "status", "retired_reason", "retired_at", "needs_review", "vote_count", "n_real", "n_bogus",
            "answer_counts", "p_real", "aggregation_method", "label", "label_source", "gold_label",
            "gold_subtype", "model_score", "model_uncertainty", "model_version", "is_holdout", "images",
            "created_at",
        ]  # fmt: skip

    def _label(self, obj):
        return label_of(obj.gold_label, bool(getattr(obj, "decided", False)), obj.p_real)

    def get_label(self, obj) -> str:
        return self._label(obj)[0]

    def get_label_source(self, obj) -> str:
        return self._label(obj)[1]

    def _votes_for(self, obj, side: str) -> int:
        # The workflow says which answers count as real or bogus ("not sure" counts as neither).
        sides = self.context.setdefault("_answer_sides", {})
        if obj.workflow_id not in sides:
            workflow = Workflow.objects.filter(pk=obj.workflow_id).only("answers").first()
            sides[obj.workflow_id] = (
                {o["key"]: o["counts_as"] for o in workflow.answer_options} if workflow else {}
            )
        side_of = sides[obj.workflow_id] or {Subject.REAL: Subject.REAL, Subject.BOGUS: Subject.BOGUS}
        return sum(int(n) for k, n in (obj.answer_counts or {}).items() if side_of.get(k) == side)

    def get_n_real(self, obj) -> int:
        return self._votes_for(obj, Subject.REAL)

    def get_n_bogus(self, obj) -> int:
        return self._votes_for(obj, Subject.BOGUS)

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string", "format": "uri"}})
    def get_images(self, obj) -> dict:
        request = self.context.get("request")
        urls = {}
        for role in obj.images or {}:
            url = obj.image_url(role)
            urls[role] = request.build_absolute_uri(url) if request and url else url
        return urls

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_model_version(self, obj):
        wf = obj.workflow
        if obj.model_score is None or wf is None or wf.active_model_id is None:
            return None
        return wf.active_model.version


class VoteSerializer(ParticipantFields, serializers.ModelSerializer):
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)
    subject_external_id = serializers.CharField(source="subject.external_id", read_only=True)
    gold = serializers.BooleanField(source="was_gold", read_only=True)
    late = serializers.BooleanField(source="subject_was_retired", read_only=True)
    gem = serializers.SerializerMethodField(
        help_text="The volunteer flagged the subject as a rare gem with this vote."
    )
    gem_note = serializers.SerializerMethodField(help_text="The flag's note (plain text; empty without one).")

    class Meta:
        model = Vote
        fields = [
            "id", "participant", "participant_kind", "worker_id", "workflow", "workflow_slug", "subject",
            "subject_external_id", "answer", "followup", "started_at", "finished_at", "created_at", "gold",
            "gold_correct", "late", "source", "user_agent", "viewport", "gem", "gem_note",
        ]  # fmt: skip

    # gem_note is annotated by the list's queryset (core.gems.with_gem_note).
    def get_gem(self, obj) -> bool:
        return getattr(obj, "gem_note", None) is not None

    def get_gem_note(self, obj) -> str:
        return getattr(obj, "gem_note", None) or ""


class SkillSerializer(ParticipantFields, serializers.ModelSerializer):
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)

    class Meta:
        model = ParticipantSkill
        fields = [
            "participant", "participant_kind", "worker_id", "workflow", "workflow_slug", "n_votes", "n_gold",
            "n_gold_correct", "p_l", "p_d", "confusion", "updated_at",
        ]  # fmt: skip


class VoteInSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    answer = serializers.CharField(max_length=30)
    followup = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=30,
        help_text='The answer to the workflow\'s follow-up question after `answer` ("What kind?"): one of '
        'its type keys, or "not_sure"; empty or absent for none. A type the question does not have, or a '
        "follow-up for an answer without a question (skip included), is a 400.",
    )
    idempotency_key = serializers.UUIDField()
    ticket = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=1000,
        help_text="The ticket that came with the subject from GET /api/projects/{project}/workflows/{id}/next/ "
        "(required: a vote without one, with an expired one or with another participant's is refused).",
    )
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    finished_at = serializers.DateTimeField(required=False, allow_null=True)
    viewport = serializers.CharField(required=False, allow_blank=True, max_length=40)
    gem = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Flag the subject as a rare gem: it looks like none of the field guide's classes. "
        "Never an answer: stored with the vote, once it is accepted.",
    )
    gem_note = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        # Longer notes are answered by core.gems in words (the vote still counts); this only bounds the body.
        max_length=gems.RAW_MAX,
        help_text="Optional plain-text note with `gem` (at most 280 characters after whitespace is collapsed).",
    )


class VoteOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField()
    answer = serializers.CharField()
    followup = serializers.CharField(help_text="The follow-up answer stored with the vote (empty for none).")
    idempotency_key = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    late = serializers.BooleanField(help_text="The subject had already retired (the vote is kept).")
    created = serializers.BooleanField(help_text="False when the idempotency key was seen before.")
    feedback = serializers.DictField(
        allow_null=True,
        help_text="The expert's answer after a subject served as gold; only in the reply that stored the vote.",
    )
    gem = serializers.BooleanField(help_text="This request flagged the subject as a rare gem.")
    gem_note = serializers.CharField(help_text="The flag's stored note (empty without one).")
    gem_detail = serializers.CharField(help_text="Empty, or why the note sent with the flag was not stored.")


class NextSubjectSerializer(serializers.Serializer):
    workflow = serializers.IntegerField()
    subject = serializers.IntegerField(allow_null=True, help_text="Null when nothing is left to answer.")
    external_id = serializers.CharField(allow_null=True)
    images = serializers.DictField(
        child=serializers.URLField(),
        help_text="URLs of the rendered PNGs by role (science, reference, difference).",
    )
    answers = serializers.ListField(child=serializers.CharField(), help_text="What the vote may answer.")
    followups = serializers.ListField(
        child=serializers.DictField(),
        help_text="The follow-up questions asked now: {answer, question, mode, types: [{key, label}]}; a vote "
        'with that answer may send one type key (or "not_sure") as `followup`.',
    )
    ticket = serializers.CharField(allow_null=True, help_text="Send it back with the vote on this subject.")
    served_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True, help_text="A vote after this is refused.")
    detail = serializers.CharField(help_text="Empty, or why there is no subject.")
