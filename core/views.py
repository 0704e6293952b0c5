"""Pages every visitor shares: the home page and signing up."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.shortcuts import redirect, render

from core.permissions import projects_visible_to


def home(request):
    # Public projects for everyone; a member also sees the private projects they belong to.
    projects = projects_visible_to(request.user).prefetch_related("workflows").order_by("name")
    return render(request, "core/home.html", {"projects": projects})


def signup(request):
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to Skyvote! Your classifications so far are kept in your account.")
        return redirect("core:home_page")
    return render(request, "registration/signup.html", {"form": form})
