"""URLs of the REST API, mounted at /api/ (see docs/api.md)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from labeling import api

P = "projects/<slug:project>/"

urlpatterns = [
    path("votes/", api.vote_create, name="api_vote_create"),
    path("projects/", api.ProjectList.as_view(), name="api_projects"),
    path(P, api.ProjectDetail.as_view(), name="api_project"),
    path(P + "workflows/", api.WorkflowList.as_view(), name="api_workflows"),
    path(P + "workflows/<int:pk>/", api.WorkflowDetail.as_view(), name="api_workflow"),
    path(P + "subject-sets/", api.SubjectSetList.as_view(), name="api_subject_sets"),
    path(P + "subjects/", api.SubjectList.as_view(), name="api_subjects"),
    path(P + "subjects/<int:pk>/", api.SubjectDetail.as_view(), name="api_subject"),
    path(P + "votes/", api.VoteList.as_view(), name="api_votes"),
    path(P + "similarity-votes/", api.SimilarityVoteList.as_view(), name="api_similarity_votes"),
    path(P + "skills/", api.SkillList.as_view(), name="api_skills"),
    path(P + "model-versions/", api.ModelVersionList.as_view(), name="api_model_versions"),
    path(P + "model-versions/<int:pk>/", api.ModelVersionDetail.as_view(), name="api_model_version"),
    path(
        P + "model-versions/<int:pk>/artifact/",
        api.ModelArtifactDownload.as_view(),
        name="api_model_version_artifact",
    ),
    path(P + "uploads/", api.UploadCreate.as_view(), name="api_uploads"),
    path(P + "uploads/<int:pk>/", api.IngestJobDetail.as_view(), name="api_ingest_job"),
    path(P + "exports/", api.ExportListCreate.as_view(), name="api_exports"),
    path(P + "exports/<int:pk>/", api.ExportDetail.as_view(), name="api_export_detail"),
    path(P + "exports/<int:pk>/download/", api.ExportDownload.as_view(), name="api_export_download"),
    # OpenAPI 3 schema and its browsable documentation (Swagger UI, Redoc: served from our static files).
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="api_schema"),
    path(
        "docs/", SpectacularSwaggerView.as_view(url_name="api_schema", permission_classes=[]), name="api_docs"
    ),
    path(
        "redoc/", SpectacularRedocView.as_view(url_name="api_schema", permission_classes=[]), name="api_redoc"
    ),
]
