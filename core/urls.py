from django.urls import path

from core import views, views_account, views_files, views_ingest, views_projects, views_workflows

app_name = "core"
urlpatterns = [
    path("", views.home, name="home_page"),
    path("signup/", views.signup, name="signup"),
    # The project builder (core.views_projects).
    path("projects/", views_projects.my_projects, name="my_projects"),
    path("projects/new/", views_projects.project_create, name="project_create"),
    path("me/", views_projects.me, name="me"),
    path("invitations/<str:token>/", views_projects.invitation, name="invitation"),
    path("p/<slug:project>/settings/", views_projects.project_settings, name="project_settings"),
    path("p/<slug:project>/delete/", views_projects.project_delete, name="project_delete"),
    path("p/<slug:project>/team/", views_projects.team_page, name="team"),
    path("p/<slug:project>/about/", views_projects.project_about, name="project_about"),
    path("p/<slug:project>/cover/", views_projects.project_cover, name="project_cover"),
    # Every subject image, checked per request (public projects' too: core.views_files says why).
    path("subjects/<int:subject>/<slug:role>.png", views_files.subject_image, name="subject_image"),
    path("account/api-tokens/", views_account.api_tokens, name="api_tokens"),
    path("account/api-tokens/<int:token>/revoke/", views_account.api_token_revoke, name="api_token_revoke"),
    path("p/<slug:project>/upload/", views_ingest.upload, name="upload"),
    path("p/<slug:project>/upload/<int:job>/", views_ingest.upload_progress, name="upload_progress"),
    path("p/<slug:project>/exports/", views_account.exports_page, name="exports"),
    path("p/<slug:project>/exports/<int:job>/", views_account.export_progress, name="export_progress"),
    path(
        "p/<slug:project>/exports/<int:job>/download/", views_account.export_download, name="export_download"
    ),
    # The workflow builder (core.views_workflows): workflows and subject sets.
    path("p/<slug:project>/workflows/", views_workflows.workflow_list, name="workflows"),
    path("p/<slug:project>/workflows/new/", views_workflows.workflow_new, name="workflow_new"),
    path("p/<slug:project>/workflows/<slug:workflow>/", views_workflows.workflow_detail, name="workflow"),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/edit/",
        views_workflows.workflow_edit,
        name="workflow_edit",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/settings/",
        views_workflows.workflow_settings,
        name="workflow_settings",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/followups/",
        views_workflows.workflow_followups,
        name="workflow_followups",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/tutorial/",
        views_workflows.workflow_tutorial,
        name="workflow_tutorial",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/field-guide/",
        views_workflows.workflow_field_guide,
        name="workflow_field_guide",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/images/<str:name>",
        views_workflows.content_image,
        name="workflow_content_image",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/launch/",
        views_workflows.workflow_launch,
        name="workflow_launch",
    ),
    path(
        "p/<slug:project>/workflows/<slug:workflow>/preview/",
        views_workflows.workflow_preview,
        name="workflow_preview",
    ),
    path("p/<slug:project>/subject-sets/", views_workflows.subject_sets, name="subject_sets"),
    path(
        "p/<slug:project>/subject-sets/<int:subject_set>/",
        views_workflows.subject_set_edit,
        name="subject_set",
    ),
]
