from django.contrib import admin

from core.models import (
    ApiToken,
    ModelVersion,
    Participant,
    Project,
    ProjectMembership,
    Subject,
    SubjectSet,
    Workflow,
)
from jobs.models import Job
from labeling.models import ParticipantSkill, Vote, VoteRetraction
from panels.models import Assignment, Batch


class MembershipInline(admin.TabularInline):
    model = ProjectMembership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "owner", "is_public", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "project", "kind", "retirement_rule", "retirement_limit", "is_active"]
    list_filter = ["kind", "retirement_rule", "is_active"]
    raw_id_fields = ["active_model"]


@admin.register(SubjectSet)
class SubjectSetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_at"]


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "object_id",
        "workflow",
        "status",
        "vote_count",
        "p_real",
        "gold_label",
        "model_score",
    ]
    list_filter = ["status", "source", "workflow"]
    search_fields = ["external_id", "object_id"]
    raw_id_fields = ["project", "workflow", "subject_set", "gold_by"]
    list_select_related = ["workflow"]


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "user", "external_id", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["user", "merged_into"]


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = [
        "pk", "workflow", "subject", "participant", "answer", "subject_was_retired", "retracted", "created_at",
    ]  # fmt: skip
    list_filter = ["answer", "subject_was_retired", "was_gold", "source", "retracted"]
    raw_id_fields = ["subject", "participant", "assignment"]
    list_select_related = ["workflow", "subject", "participant"]


@admin.register(VoteRetraction)
class VoteRetractionAdmin(admin.ModelAdmin):
    list_display = ["pk", "vote", "participant", "reason", "created_at"]
    list_filter = ["reason"]
    raw_id_fields = ["vote", "participant"]


@admin.register(ParticipantSkill)
class ParticipantSkillAdmin(admin.ModelAdmin):
    list_display = ["participant", "workflow", "n_votes", "n_gold", "p_l", "p_d"]
    raw_id_fields = ["participant"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "kind", "version", "status", "n_train", "device", "created_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["pk", "kind", "project", "workflow", "status", "progress", "created_at"]
    list_filter = ["kind", "status"]


admin.site.register(Batch)
admin.site.register(Assignment)
admin.site.register(ApiToken)
