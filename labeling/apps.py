from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Real/bogus volunteering"

    def ready(self):
        # Merges anonymous participants on login; registers the aggregation and retirement job kinds
        # and the votes and labels exporters.
        from labeling import contributions, exporters, jobs, signals  # noqa: F401

        # "My classifications" (/me/) reads real/bogus votes through core's registry.
        contributions.register()
