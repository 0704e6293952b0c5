from django.urls import path

from gems import views

app_name = "gems"
W = "p/<slug:project>/<slug:workflow>/gems/"
urlpatterns = [
    path(W, views.gems_page, name="gems"),
    path(W + "<int:subject>/rate/", views.rate, name="rate"),
    path(W + "send/", views.send, name="send"),
]
