from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"

    def ready(self):
        # Register the Celery tasks with the app even where autodiscovery has not run
        # (eager dispatch from labeling.loop in tests and management commands).
        from . import tasks  # noqa: F401
