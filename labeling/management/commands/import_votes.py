"""Import the votes of an earlier campaign into a workflow: simple CSV or Zooniverse classification export.

    python manage.py import_votes --workflow [PROJECT/]SLUG FILE.csv [--answer-map 'Yes=real,No=bogus']

Parsing, matching and storing are labeling.imports (formats and rules described there); this
command reads the file and prints the report.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.imports import VoteImportError, import_votes
from labeling.management.commands._crowd_common import find_workflow


class Command(BaseCommand):
    help = "Import earlier votes (simple CSV or Zooniverse classification export) into a workflow."

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file")
        parser.add_argument("--workflow", required=True, help="workflow slug, or project/workflow")
        parser.add_argument("--project", help="project slug, if several projects have this workflow slug")
        parser.add_argument("--answer-map", help="e.g. 'Yes=real,No=bogus' (case-insensitive)")
        parser.add_argument("--task", help="Zooniverse task to read (default: the first annotation)")
        parser.add_argument("--zooniverse-workflow", help="only rows of this Zooniverse workflow_id")
        parser.add_argument("--subject-key", help="key in Zooniverse subject_data holding our external id")
        parser.add_argument("--dry-run", action="store_true", help="parse and match, store nothing")
        parser.add_argument(
            "--strict", action="store_true", help="exit with an error if any row was not imported"
        )

    def handle(self, *args, **options):
        workflow = find_workflow(options["workflow"], options.get("project"))
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or 'unreadable file'}.") from None
        try:
            # Newlines as read_text would give them; the line numbers of the report count them.
            text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise CommandError(
                f"{path} is not UTF-8 text (line {line} has a byte that UTF-8 does not allow); "
                "save it as UTF-8 and import it again."
            ) from None
        try:
            fmt, report = import_votes(
                workflow,
                text,
                answer_map=options.get("answer_map"),
                task=options.get("task"),
                zooniverse_workflow=options.get("zooniverse_workflow"),
                subject_key=options.get("subject_key"),
                dry_run=options["dry_run"],
            )
        except VoteImportError as exc:
            raise CommandError(str(exc)) from None
        verb = "Would import" if options["dry_run"] else "Imported"
        self.stdout.write(f"{verb} {fmt} file {path.name} into {workflow}:")
        for line in report.lines():
            self.stdout.write(f"  {line}")
        if options["strict"] and report.n_problems:
            raise CommandError(f"{report.n_problems} rows were not imported (see above).")
