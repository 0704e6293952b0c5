from django.urls import path

from labeling import views, views_crowd

app_name = "labeling"
urlpatterns = [
    path("p/<slug:project>/", views.project_dashboard, name="project_dashboard"),
    path("p/<slug:project>/field-guide/", views.field_guide, name="field_guide"),
    path("p/<slug:project>/<slug:workflow>/", views.classify, name="classify"),
    path("p/<slug:project>/<slug:workflow>/vote/", views.submit_vote, name="submit_vote"),
    path("p/<slug:project>/<slug:workflow>/undo/", views.undo_last_vote, name="undo_vote"),
    path("p/<slug:project>/<slug:workflow>/tutorial-seen/", views.tutorial_seen, name="tutorial_seen"),
    # Crowd wisdom: gold labeling, volunteer skill, review queue, retirement settings.
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
