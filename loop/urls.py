from django.urls import path

from loop import views

app_name = "loop"
W = "p/<slug:project>/<slug:workflow>/model/"
urlpatterns = [
    path(W, views.workflow_models, name="models"),
    path(W + "job/", views.job_status, name="job"),
    path(W + "train/", views.train_now, name="train"),
    path(W + "start-from/", views.start_from, name="start_from"),
    path(W + "v<int:version>/promote/", views.promote, name="promote"),
    path(W + "v<int:version>/plots/<slug:plot>.png", views.plot, name="plot"),
    path(W + "subjects/<int:subject>/", views.subject_model, name="subject"),
    path(W + "subjects/<int:subject>/saliency.png", views.subject_saliency, name="saliency"),
]
