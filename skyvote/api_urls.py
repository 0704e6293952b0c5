"""URLs of the REST API, mounted at /api/ (see docs/api.md): each app's views from its api.py
(core: projects, workflows, subject sets, model versions, uploads, exports; labeling: votes,
subjects, skills; loop: a workflow's start-from model and "train now"; similarity: similarity votes; gems: gem candidates and ratings), one flat list with the same paths and names."""

from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from core import api as core_api
from core import api_projects, api_workflows
from gems import api as gems_api
from labeling import api as labeling_api
from loop import api as loop_api
from similarity import api as similarity_api

P = "projects/<slug:project>/"

# Swagger UI and Redoc set styles from script (Redoc writes <style> elements) and Redoc parses the
# schema in a worker made from a blob: URL. Scripts stay 'self' only: Swagger UI is the split view,
# whose start-up code is a URL of its own (?script=) rather than an inline <script>.
docs_policy = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["'self'", "blob:"]})

urlpatterns = [
    path("votes/", labeling_api.vote_create, name="api_vote_create"),
    path("projects/", api_projects.ProjectListCreate.as_view(), name="api_projects"),
    path(P, api_projects.ProjectDetailUpdate.as_view(), name="api_project"),
    path(P + "members/", api_projects.MemberListCreate.as_view(), name="api_members"),
    path(P + "members/<int:pk>/", api_projects.MemberDetail.as_view(), name="api_member"),
    path(P + "workflows/", api_workflows.WorkflowListCreate.as_view(), name="api_workflows"),
    path(P + "workflows/<int:pk>/", api_workflows.WorkflowDetailUpdate.as_view(), name="api_workflow"),
    path(P + "workflows/<int:pk>/next/", labeling_api.next_subject, name="api_workflow_next"),
    path(
        P + "workflows/<int:pk>/start-from/",
        loop_api.WorkflowStartFrom.as_view(),
        name="api_workflow_start_from",
    ),
    path(P + "workflows/<int:pk>/train/", loop_api.WorkflowTrain.as_view(), name="api_workflow_train"),
    path(P + "subject-sets/", api_workflows.SubjectSetListCreate.as_view(), name="api_subject_sets"),
    path(P + "subject-sets/<int:pk>/", api_workflows.SubjectSetDetail.as_view(), name="api_subject_set"),
    path(P + "subjects/", labeling_api.SubjectList.as_view(), name="api_subjects"),
    path(P + "subjects/<int:pk>/", labeling_api.SubjectDetail.as_view(), name="api_subject"),
    path(P + "votes/", labeling_api.VoteList.as_view(), name="api_votes"),
    path(P + "similarity-votes/", similarity_api.SimilarityVoteList.as_view(), name="api_similarity_votes"),
    path(P + "skills/", labeling_api.SkillList.as_view(), name="api_skills"),
    path(P + "gem-flags/", core_api.GemFlagList.as_view(), name="api_gem_flags"),
    path(P + "gems/", gems_api.GemCandidateList.as_view(), name="api_gems"),
    path(P + "gems/ratings/", gems_api.GemRatingCreate.as_view(), name="api_gem_ratings"),
    path(P + "model-versions/", core_api.ModelVersionList.as_view(), name="api_model_versions"),
    path(P + "model-versions/<int:pk>/", core_api.ModelVersionDetail.as_view(), name="api_model_version"),
    path(
        P + "model-versions/<int:pk>/artifact/",
        core_api.ModelArtifactDownload.as_view(),
        name="api_model_version_artifact",
    ),
    path(P + "uploads/", core_api.UploadCreate.as_view(), name="api_uploads"),
    path(P + "uploads/<int:pk>/", core_api.IngestJobDetail.as_view(), name="api_ingest_job"),
    path(P + "exports/", core_api.ExportListCreate.as_view(), name="api_exports"),
    path(P + "exports/<int:pk>/", core_api.ExportDetail.as_view(), name="api_export_detail"),
    path(P + "exports/<int:pk>/download/", core_api.ExportDownload.as_view(), name="api_export_download"),
    # OpenAPI 3 schema and its browsable documentation (Swagger UI, Redoc: served from our static files).
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="api_schema"),
    path(
        "docs/",
        docs_policy(SpectacularSwaggerSplitView.as_view(url_name="api_schema", permission_classes=[])),
        name="api_docs",
    ),
    path(
        "redoc/",
        docs_policy(SpectacularRedocView.as_view(url_name="api_schema", permission_classes=[])),
        name="api_redoc",
    ),
]
