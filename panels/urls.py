from django.urls import path

from panels import views

app_name = "panels"
urlpatterns = [
    # Owner pages.
    path("p/<slug:project>/batches/", views.batch_list, name="batches"),
    path("p/<slug:project>/batches/new/", views.batch_create, name="batch_new"),
    path("p/<slug:project>/batches/<int:batch>/", views.batch_detail, name="batch"),
    path("p/<slug:project>/batches/<int:batch>/status/", views.batch_status, name="batch_status"),
    path("p/<slug:project>/batches/<int:batch>/payments.csv", views.batch_payments_csv, name="batch_csv"),
    path(
        "p/<slug:project>/batches/<int:batch>/assignments/<int:assignment>/review/",
        views.batch_review,
        name="batch_review",
    ),
    # The worker's task link.
    path("t/<str:token>/", views.panel_landing, name="landing"),
    path("t/<str:token>/start/", views.panel_start, name="start"),
    path("t/<str:token>/a/<str:akey>/", views.panel_task, name="task"),
    path("t/<str:token>/a/<str:akey>/vote/", views.panel_vote, name="vote"),
    path("t/<str:token>/a/<str:akey>/img/<int:item>/<slug:handle>.png", views.panel_image, name="image"),
    path("t/<str:token>/a/<str:akey>/done/", views.panel_done, name="done"),
]
