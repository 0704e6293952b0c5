from django.apps import AppConfig


class PanelsConfig(AppConfig):
    name = "panels"
    verbose_name = "Paid panels (task links)"

    def ready(self):
        # Real/bogus tasks are the kind panels itself handles (it depends on labeling anyway); other
        # kinds register their handlers from their own apps (core.tasklink_kinds).
        from panels import kinds

        kinds.register()
