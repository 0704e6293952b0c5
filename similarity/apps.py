from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"

    def ready(self):
        # Job kinds (embedding rounds) and exporters register themselves on import.
        from similarity import exporters, training  # noqa: F401
