from django.contrib import admin

from similarity.models import PairStat, SimilarityTask, SimilarityVote


@admin.register(SimilarityTask)
class SimilarityTaskAdmin(admin.ModelAdmin):
    list_display = ["pk", "workflow", "comparison", "strategy", "n_votes", "retired", "created_at"]
    list_filter = ["strategy", "retired", "workflow"]
    raw_id_fields = ["comparison", "model_version"]


@admin.register(SimilarityVote)
class SimilarityVoteAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "workflow",
        "task",
        "participant",
        "n_chosen",
        "none_similar",
        "source",
        "created_at",
    ]
    list_filter = ["none_similar", "source", "workflow"]
    raw_id_fields = ["task", "participant"]
    readonly_fields = ["idempotency_key"]


@admin.register(PairStat)
class PairStatAdmin(admin.ModelAdmin):
    list_display = ["comparison", "candidate", "shown", "chosen", "updated_at"]
    list_filter = ["workflow"]
    raw_id_fields = ["comparison", "candidate"]
