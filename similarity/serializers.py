"""REST API serializers of the similarity app."""

from rest_framework import serializers

from core.serializers import ParticipantFields


class SimilarityVoteSerializer(ParticipantFields, serializers.Serializer):
    id = serializers.IntegerField()
    workflow = serializers.IntegerField(source="workflow_id")
    task = serializers.IntegerField(source="task_id")
    comparison = serializers.IntegerField(source="task.comparison_id", help_text="Comparison subject id.")
    candidates = serializers.ListField(
        child=serializers.IntegerField(),
        source="task.candidates",
        help_text="Subject ids shown, in tile order.",
    )
    chosen = serializers.ListField(
        child=serializers.IntegerField(), help_text="Subject ids chosen as similar."
    )
    none_similar = serializers.BooleanField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    source = serializers.CharField()
    user_agent = serializers.CharField()
    viewport = serializers.CharField()
    gem = serializers.SerializerMethodField(
        help_text="The volunteer flagged the comparison image as a rare gem with this answer."
    )
    gem_note = serializers.SerializerMethodField(help_text="The flag's note (plain text; empty without one).")

    # gem_note is annotated by the list's queryset (core.gems.with_gem_note).
    def get_gem(self, obj) -> bool:
        return getattr(obj, "gem_note", None) is not None

    def get_gem_note(self, obj) -> str:
        return getattr(obj, "gem_note", None) or ""
