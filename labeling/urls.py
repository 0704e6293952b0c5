from django.urls import path

from . import views

app_name = "labeling"
urlpatterns = [
    path("", views.home, name="home_page"),
    path("signup/", views.signup, name="signup"),
    path("p/<slug:project>/", views.project_dashboard, name="project_dashboard"),
    path("p/<slug:project>/field-guide/", views.field_guide, name="field_guide"),
    path("p/<slug:project>/<slug:workflow>/", views.classify, name="classify"),
    path("p/<slug:project>/<slug:workflow>/vote/", views.submit_vote, name="submit_vote"),
    path("p/<slug:project>/<slug:workflow>/tutorial-seen/", views.tutorial_seen, name="tutorial_seen"),
]
