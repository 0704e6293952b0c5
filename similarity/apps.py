from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"

    def ready(self):
        # Job kinds (embedding rounds) and exporters register themselves on import; the paid-panel
        # handler registers into core's registry (this app never imports panels).
        from similarity import contributions, exporters, panels, training  # noqa: F401

        panels.register()
        contributions.register()  # "My classifications" (/me/) reads answers through core's registry
