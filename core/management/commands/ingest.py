"""python manage.py ingest --project SLUG --workflow SLUG FILE_OR_DIR..."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.ingest import ingest_paths, subject_set_named
from core.models import Project, Workflow


class Command(BaseCommand):
    help = (
        "Ingest ZTF alerts (.avro), Fink Parquet, FITS triplets, .npy/.npz stacks and PNG/JPEG images "
        "into a workflow. Prints one line per failed file and the summary "
        "'ingested N, duplicates D, failed F'; exits non-zero when F > 0."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="files or directories (searched recursively)")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--workflow", required=True, help="workflow slug within the project")
        parser.add_argument(
            "--subject-set", default="", help="name of the subject set to add to (created if new)"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, paths, project, workflow, subject_set, no_progress, **options):
        try:
            project_obj = Project.objects.get(slug=project)
        except Project.DoesNotExist:
            raise CommandError(f"no project with slug {project!r}")
        try:
            workflow_obj = Workflow.objects.get(project=project_obj, slug=workflow)
        except Workflow.DoesNotExist:
            raise CommandError(f"project {project!r} has no workflow {workflow!r}")
        set_obj = subject_set_named(project_obj, workflow_obj, subject_set)

        bar = None
        reported = 0
        items = 0

        def on_item():
            nonlocal items
            items += 1
            if bar is not None and items % 25 == 0:
                bar.set_postfix_str(f"{items} subjects", refresh=True)

        def progress(done, total, report):
            nonlocal bar, reported
            if bar is None and not no_progress:
                # The raw stream: OutputWrapper.write would append a newline to every bar update.
                bar = tqdm(total=total, unit="file", desc="ingest", file=self.stderr._out, leave=False)
            # Failures are printed as they happen, above the bar.
            for name, reason in report.errors[reported:]:
                line = f"FAILED {name}: {reason}"
                if bar is not None:
                    bar.write(line, file=self.stderr._out)
                else:
                    self.stderr.write(line)
            reported = len(report.errors)
            if bar is not None:
                bar.n = done
                bar.set_postfix_str(report.summary(), refresh=True)

        report = ingest_paths(
            paths,
            project=project_obj,
            workflow=workflow_obj,
            subject_set=set_obj,
            progress=progress,
            on_item=on_item,
        )
        if bar is not None:
            bar.close()
        if report.skipped:
            self.stderr.write(f"skipped {len(report.skipped)} file(s) of unsupported type in directories")
        self.stdout.write(report.summary())
        if report.failed:
            raise CommandError(f"{report.failed} file(s) failed", returncode=1)
