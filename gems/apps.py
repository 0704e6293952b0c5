from django.apps import AppConfig


class GemsConfig(AppConfig):
    name = "gems"
    verbose_name = "Rare gems"

    def ready(self):
        # The anomaly job kind, the exporter and the selector's gem source register themselves on
        # import: no app below this one imports gems.
        from gems import exporters, services  # noqa: F401

        services.register_hooks()
