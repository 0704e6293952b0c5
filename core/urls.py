from django.urls import path

from core import views, views_account, views_files, views_ingest

app_name = "core"
urlpatterns = [
    path("", views.home, name="home_page"),
    path("signup/", views.signup, name="signup"),
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
]
