from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self):
        from . import signals  # noqa: F401  (merges anonymous participants on login)
