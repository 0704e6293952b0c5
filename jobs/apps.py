from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Background jobs"

    def ready(self):
        # The Celery tasks must be known where autodiscovery has not run (eager runs, commands).
        from jobs import tasks  # noqa: F401
