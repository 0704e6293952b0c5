from django.urls import path

from . import views, views_account, views_crowd, views_ingest, views_loop, views_panel

app_name = "labeling"
urlpatterns = [
    path("", views.home, name="home_page"),
    path("signup/", views.signup, name="signup"),
    path("p/<slug:project>/", views.project_dashboard, name="project_dashboard"),
    path("p/<slug:project>/field-guide/", views.field_guide, name="field_guide"),
    # Paid panels (issue 7): before p/<project>/<workflow>/ so "batches" is not taken for a workflow slug.
    path("p/<slug:project>/batches/", views_panel.batch_list, name="panel_batches"),
    path("p/<slug:project>/batches/new/", views_panel.batch_create, name="panel_batch_new"),
    path("p/<slug:project>/batches/<int:batch>/", views_panel.batch_detail, name="panel_batch"),
    path("p/<slug:project>/batches/<int:batch>/status/", views_panel.batch_status, name="panel_batch_status"),
    path(
        "p/<slug:project>/batches/<int:batch>/payments.csv",
        views_panel.batch_payments_csv,
        name="panel_batch_csv",
    ),
    path(
        "p/<slug:project>/batches/<int:batch>/assignments/<int:assignment>/review/",
        views_panel.batch_review,
        name="panel_batch_review",
    ),
    path("t/<str:token>/", views_panel.panel_landing, name="panel_landing"),
    path("t/<str:token>/start/", views_panel.panel_start, name="panel_start"),
    path("t/<str:token>/a/<str:akey>/", views_panel.panel_task, name="panel_task"),
    path("t/<str:token>/a/<str:akey>/vote/", views_panel.panel_vote, name="panel_vote"),
    path("t/<str:token>/a/<str:akey>/done/", views_panel.panel_done, name="panel_done"),
    path("p/<slug:project>/upload/", views_ingest.upload, name="upload"),
    path("p/<slug:project>/upload/<int:job>/", views_ingest.upload_progress, name="upload_progress"),
    # API tokens and exports (issue 8): before p/<project>/<workflow>/ so "exports" is not taken for a workflow slug.
    path("account/api-tokens/", views_account.api_tokens, name="api_tokens"),
    path("account/api-tokens/<int:token>/revoke/", views_account.api_token_revoke, name="api_token_revoke"),
    path("p/<slug:project>/exports/", views_account.exports_page, name="exports"),
    path("p/<slug:project>/exports/<int:job>/", views_account.export_progress, name="export_progress"),
    path(
        "p/<slug:project>/exports/<int:job>/download/", views_account.export_download, name="export_download"
    ),
    path("p/<slug:project>/<slug:workflow>/", views.classify, name="classify"),
    path("p/<slug:project>/<slug:workflow>/vote/", views.submit_vote, name="submit_vote"),
    path("p/<slug:project>/<slug:workflow>/tutorial-seen/", views.tutorial_seen, name="tutorial_seen"),
    # Learning loop (issue 5): model versions, running round, train now / promote, per-subject saliency.
    path("p/<slug:project>/<slug:workflow>/model/", views_loop.workflow_models, name="loop_models"),
    path("p/<slug:project>/<slug:workflow>/model/job/", views_loop.job_status, name="loop_job"),
    path("p/<slug:project>/<slug:workflow>/model/train/", views_loop.train_now, name="loop_train"),
    path(
        "p/<slug:project>/<slug:workflow>/model/v<int:version>/promote/",
        views_loop.promote,
        name="loop_promote",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/model/subjects/<int:subject>/",
        views_loop.subject_model,
        name="loop_subject",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/model/subjects/<int:subject>/saliency.png",
        views_loop.subject_saliency,
        name="loop_saliency",
    ),
    # Crowd wisdom (issue 4): gold labeling, volunteer skill, review queue, retirement settings.
    path("p/<slug:project>/<slug:workflow>/gold/", views_crowd.gold_labeling, name="crowd_gold"),
    path(
        "p/<slug:project>/<slug:workflow>/gold/label/",
        views_crowd.gold_label_submit,
        name="crowd_gold_label",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/gold/reset/",
        views_crowd.gold_skips_reset,
        name="crowd_gold_reset",
    ),
    path("p/<slug:project>/<slug:workflow>/volunteers/", views_crowd.volunteers, name="crowd_volunteers"),
    path("p/<slug:project>/<slug:workflow>/recompute/", views_crowd.recompute_now, name="crowd_recompute"),
    path("p/<slug:project>/<slug:workflow>/review/", views_crowd.review_queue, name="crowd_review"),
    path(
        "p/<slug:project>/<slug:workflow>/review/retire/",
        views_crowd.retire_subject,
        name="crowd_retire_by_id",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/review/unretire/",
        views_crowd.unretire_subject,
        name="crowd_unretire_by_id",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/review/<int:subject>/retire/",
        views_crowd.retire_subject,
        name="crowd_retire",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/review/<int:subject>/unretire/",
        views_crowd.unretire_subject,
        name="crowd_unretire",
    ),
    path(
        "p/<slug:project>/<slug:workflow>/retirement/",
        views_crowd.retirement_settings,
        name="crowd_retirement",
    ),
]
