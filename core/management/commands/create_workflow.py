"""Create a workflow from the command line:
`manage.py create_workflow PROJECT SLUG --kind real_bogus|similarity [--answers real,bogus,not_sure]`.

Idempotent: a workflow that exists already is left as it is (the command says so; exit 0, or 1 when
it is of another kind). It goes through the same service as the workflow builder's pages and API
(core.workflows.create_workflow): the same defaults, tutorial, field guide and "default" subject set.
"""

from django.core.management.base import BaseCommand, CommandError

from core import answers as answer_rules
from core import workflows
from core.models import Project, Workflow


class Command(BaseCommand):
    help = "Create a workflow in a project (idempotent: running it again changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("slug", help="the workflow's address: /p/<project>/<slug>/")
        parser.add_argument("--kind", default=Workflow.REAL_BOGUS, choices=[k for k, _ in Workflow.KINDS])
        parser.add_argument("--name", default="", help="default: made from the slug")
        parser.add_argument("--question", default="")
        parser.add_argument(
            "--answers",
            default="",
            help="real/bogus: answer keys, comma-separated (default real,bogus); real, bogus and not_sure "
            "get their usual labels, keys and meanings, others count as neither side",
        )
        parser.add_argument("--live", action="store_true", help="make it live at once (default: a draft)")

    def handle(self, *args, project, slug, kind, name, question, answers, live, **options):
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project '{project}'. Create it with `manage.py create_project`.")
        parsed = None
        if answers:
            if kind != Workflow.REAL_BOGUS:
                raise CommandError("--answers is for real/bogus workflows.")
            try:
                parsed = answer_rules.parse_keys(answers)
            except answer_rules.AnswerError as exc:
                raise CommandError(str(exc))
        try:
            workflow, created = workflows.create_workflow(
                project_obj, slug, kind=kind, name=name, question=question, answers=parsed, is_active=live
            )
        except workflows.BuilderError as exc:
            raise CommandError(str(exc))
        if not created:
            self.stdout.write(
                f"Workflow '{project_obj.slug}/{workflow.slug}' exists already: nothing changed."
            )
            return
        keys = ", ".join(workflow.answer_keys) or "-"
        self.stdout.write(
            self.style.SUCCESS(
                f"Created workflow '{project_obj.slug}/{workflow.slug}' ({workflow.get_kind_display()}), "
                f"{'live' if workflow.is_active else 'a draft'}; answers: {keys}."
            )
        )
