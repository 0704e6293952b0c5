from django.urls import path

from . import api

urlpatterns = [
    path("votes/", api.vote_create, name="api_vote_create"),
]
