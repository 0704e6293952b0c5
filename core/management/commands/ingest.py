"""python manage.py ingest --project SLUG --workflow SLUG FILE_OR_DIR...
python manage.py ingest --project SLUG --workflow SLUG --watch DIR [--filter EXPR]... [--once]"""

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core import alerts as alert_tools
from core.ingest import ingest_paths, subject_set_named
from core.models import Project, Workflow


class Command(BaseCommand):
    help = (
        "Ingest ZTF and Rubin alerts (.avro containers or Kafka messages, broker Parquet), FITS triplets, "
        ".npy/.npz stacks and PNG/JPEG images into a workflow. Prints one line per failed file or alert "
        "and the summary 'ingested N, duplicates D, failed F' (', filtered K' with --filter); exits "
        "non-zero when F > 0. --watch DIR polls a folder and ingests each new file once."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", help="files or directories (searched recursively)")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--workflow", required=True, help="workflow slug within the project")
        parser.add_argument(
            "--subject-set", default="", help="name of the subject set to add to (created if new)"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            dest="filters",
            metavar="EXPR",
            help="keep only alerts that meet EXPR: FIELD OP VALUE (e.g. 'reliability>0.5', 'snr>=10', "
            "'band=r') or no-ssobject, ssobject, no-dipole, dipole, positive, negative; repeat to combine",
        )
        parser.add_argument("--watch", metavar="DIR", help="poll DIR and ingest each new file once")
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between polls (--watch)")
        parser.add_argument(
            "--settle",
            type=float,
            default=0.0,
            help="seconds a file must stay unchanged before it is read (--watch; it must always "
            "look the same on two polls)",
        )
        parser.add_argument("--once", action="store_true", help="poll once and stop (--watch)")
        parser.add_argument("--state", default=None, help="state file of --watch (default: in PRIVATE_ROOT)")
        parser.add_argument(
            "--create",
            action="store_true",
            help="make a missing project (a draft, owned by --owner) or workflow (a real/bogus draft with "
            "the builder's defaults, or --kind) and say what was made",
        )
        parser.add_argument("--owner", default=None, help="owner of a project made by --create")
        parser.add_argument(
            "--kind",
            default="real_bogus",
            choices=["real_bogus", "similarity"],
            help="kind of a workflow made by --create",
        )

    def handle(self, *args, paths, project, workflow, subject_set, no_progress, filters, watch, **options):
        if options.get("create"):
            self._create_missing(project, workflow, options)
        try:
            project_obj = Project.objects.get(slug=project)
        except Project.DoesNotExist:
            raise CommandError(f"no project with slug {project!r}")
        try:
            workflow_obj = Workflow.objects.get(project=project_obj, slug=workflow)
        except Workflow.DoesNotExist:
            raise CommandError(f"project {project!r} has no workflow {workflow!r}")
        try:
            alert_tools.parse_filters(filters)
        except alert_tools.FilterError as exc:
            raise CommandError(str(exc))
        if watch:
            if paths:
                raise CommandError("give either files to ingest or --watch DIR, not both")
            return self._watch(watch, project_obj, workflow_obj, subject_set, filters, options)
        if not paths:
            raise CommandError("nothing to ingest: give files or directories, or --watch DIR")
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
            filters=filters,
        )
        if bar is not None:
            bar.close()
        if report.skipped:
            self.stderr.write(f"skipped {len(report.skipped)} file(s) of unsupported type in directories")
        self.stdout.write(report.summary())
        if report.failed:
            raise CommandError(f"{report.failed} file(s) or alert(s) failed", returncode=1)

    def _create_missing(self, project, workflow, options):
        """--create: the project through `create_project`, the workflow through the builder's service
        (core.workflows), as the pages make them; each printed as it is made."""
        from django.core.management import call_command

        from core import workflows

        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            args = [project, "--name", project.replace("-", " ").capitalize()]
            if options.get("owner"):
                args += ["--owner", options["owner"]]
            call_command("create_project", *args, stdout=self.stdout._out, stderr=self.stderr._out)
            project_obj = Project.objects.get(slug=project)
        if Workflow.objects.filter(project=project_obj, slug=workflow).exists():
            return
        try:
            workflow_obj, created = workflows.create_workflow(project_obj, workflow, kind=options["kind"])
        except workflows.BuilderError as exc:
            raise CommandError(str(exc))
        if created:
            self.stdout.write(
                f"Created workflow '{project_obj.slug}/{workflow_obj.slug}' ({workflow_obj.get_kind_display()}), "
                "a draft: launch it on its workflow page when it is ready."
            )

    def _watch(self, folder, project, workflow, subject_set, filters, options):
        """Poll until interrupted (or once): each poll that read files prints its failures and a
        summary line `<n> file(s): ingested N, duplicates D, failed F[, filtered K]`."""
        from core import watch

        try:
            config = watch.WatchConfig(
                folder=folder, project=project, workflow=workflow, subject_set=subject_set,
                filters=tuple(filters), settle_s=options["settle"], state_path=options["state"],
            )  # fmt: skip
        except alert_tools.FilterError as exc:
            raise CommandError(str(exc))
        failed = 0
        try:
            while True:
                try:
                    result = watch.poll(config)
                except watch.WatchError as exc:
                    raise CommandError(str(exc))
                if result.busy:
                    self.stderr.write(f"{config.folder}: another poll is running; skipped")
                elif result.report is not None:
                    for name, reason in result.report.errors:
                        self.stderr.write(f"FAILED {name}: {reason}")
                    self.stdout.write(f"{len(result.ready)} file(s): {result.report.summary()}")
                    failed += result.report.failed
                elif options["once"]:
                    waiting = f" ({len(result.waiting)} still being written or new)" if result.waiting else ""
                    self.stdout.write(f"0 file(s) ready{waiting}")
                if options["once"]:
                    break
                time.sleep(max(options["interval"], 0.1))
        except KeyboardInterrupt:
            self.stdout.write("stopped")
            return
        if failed:
            raise CommandError(f"{failed} file(s) or alert(s) failed", returncode=1)
