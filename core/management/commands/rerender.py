"""python manage.py rerender [--project SLUG] [--workflow SLUG] [--batch-size N] [--force]"""

from django.core.management.base import BaseCommand, CommandError

from core import rendering, stamps
from core.models import Project, Subject, Workflow


class Command(BaseCommand):
    help = (
        "Re-render the PNGs of subjects drawn by an older RENDER_VERSION (all subjects with --force), "
        "in batches by id, so a change of how subjects look (north up, the difference's sign) reaches "
        "old subjects. Prints 'rerendered N, failed F' and exits non-zero when F > 0."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", default="", help="only this project (slug)")
        parser.add_argument("--workflow", default="", help="only this workflow (slug, with --project)")
        parser.add_argument("--batch-size", type=int, default=200, help="subjects per batch (default 200)")
        parser.add_argument(
            "--force", action="store_true", help="re-render subjects of the current version too"
        )

    def handle(self, *args, project, workflow, batch_size, force, **options):
        subjects = Subject.objects.exclude(data="")
        if project:
            try:
                project_obj = Project.objects.get(slug=project)
            except Project.DoesNotExist:
                raise CommandError(f"no project with slug {project!r}")
            subjects = subjects.filter(project=project_obj)
            if workflow:
                try:
                    subjects = subjects.filter(
                        workflow=Workflow.objects.get(project=project_obj, slug=workflow)
                    )
                except Workflow.DoesNotExist:
                    raise CommandError(f"project {project!r} has no workflow {workflow!r}")
        elif workflow:
            raise CommandError("--workflow needs --project")
        if not force:
            subjects = subjects.filter(render_version__lt=rendering.RENDER_VERSION)
        total = subjects.count()
        done = failed = 0
        last_pk = 0
        # Keyset batches: each batch is read fresh, so subjects re-rendered meanwhile (by ingestion or
        # another run) are skipped, and memory stays flat however many subjects there are.
        while True:
            batch = list(
                subjects.filter(pk__gt=last_pk).select_related("project").order_by("pk")[:batch_size]
            )
            if not batch:
                break
            for subject in batch:
                last_pk = subject.pk
                try:
                    self._record_orientation(subject)
                    if rendering.render_subject(subject, force=True):
                        done += 1
                except Exception as exc:  # one broken subject must not stop the others
                    failed += 1
                    self.stderr.write(
                        f"FAILED subject {subject.pk} ({subject.external_id}): {type(exc).__name__}: {exc}"
                    )
            self.stderr.write(f"{done + failed} / {total}")
        self.stdout.write(f"rerendered {done}, failed {failed}")
        if failed:
            raise CommandError(f"{failed} subject(s) failed", returncode=1)

    @staticmethod
    def _record_orientation(subject) -> None:
        """ZTF alerts ingested before orientation was recorded get it in their metadata too, so the
        metadata says how the picture was turned."""
        metadata = subject.metadata or {}
        if "orientation" in metadata:
            return
        orientation = stamps.orientation_for(subject.survey, metadata, subject.source)
        if orientation is not None:
            subject.metadata = {**metadata, "orientation": orientation}
            subject.save(update_fields=["metadata"])
