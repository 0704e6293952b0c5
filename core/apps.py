from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Projects, workflows and subjects"

    def ready(self):
        # The ingest job kind registers itself on import.
        from core import ingest  # noqa: F401
