from django.apps import AppConfig


class SkyvoteConfig(AppConfig):
    """The project package as an app: it holds `seed_demo`, which uses every other app."""

    name = "skyvote"
    verbose_name = "Skyvote"
