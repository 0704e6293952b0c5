from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Projects, workflows and subjects"

    def ready(self):
        # The ingest and export job kinds register themselves on import; watch holds the periodic
        # task of watched folders.
        from core import exporters, ingest, watch  # noqa: F401
