from django.apps import AppConfig


class LoopConfig(AppConfig):
    name = "loop"
    verbose_name = "Learning loop"

    def ready(self):
        # Job kinds (training rounds, scoring) and the sweep's trigger check register on import.
        from loop import services  # noqa: F401
