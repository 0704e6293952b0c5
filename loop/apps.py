from django.apps import AppConfig


class LoopConfig(AppConfig):
    name = "loop"
    verbose_name = "Learning loop"

    def ready(self):
        # Job kinds (training rounds, scoring), the sweep's trigger check and the training bundle
        # exporter register on import.
        from loop import exporters, services  # noqa: F401
