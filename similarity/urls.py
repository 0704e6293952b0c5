"""Similarity pages and API, mounted at /similarity/ (skyvote/urls.py)."""

from django.urls import path

from similarity import api, views, views_preview

app_name = "similarity"
urlpatterns = [
    path("api/search/", api.SimilaritySearchView.as_view(), name="api_search"),
    path("p/<slug:project>/search/", views.search_page, name="search"),
    path("p/<slug:project>/<slug:workflow>/", views.classify, name="classify"),
    path("p/<slug:project>/<slug:workflow>/answer/", views.submit, name="submit"),
    path("p/<slug:project>/<slug:workflow>/tutorial-seen/", views.tutorial_seen, name="tutorial_seen"),
    path("p/<slug:project>/<slug:workflow>/model/", views.models_page, name="models"),
    path("p/<slug:project>/<slug:workflow>/model/job/", views.job_status, name="job_status"),
    path("p/<slug:project>/<slug:workflow>/model/train/", views.train_now, name="train_now"),
    path("p/<slug:project>/<slug:workflow>/preview/", views_preview.preview, name="preview"),
]
