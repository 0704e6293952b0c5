"""Tile large images (FITS, PNG, JPEG frames) into cutouts and add the informative ones as subjects.

    python manage.py ingest_tiles --project P --workflow similar frame1.fits frame2.png \
        [--tile-size 488] [--overlap 0.1] [--min-entropy 2.2]

Tiles are kept by entropy (mlcore.tiling: blank sky is dropped). External ids are
"<file name>:<y>:<x>", so re-running adds nothing twice.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.ingest import IngestError, add_subject
from core.models import Workflow
from mlcore.tiling import DEFAULT_MIN_ENTROPY, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, select_tiles
from similarity.upload import QueryImageError, read_query_image


class Command(BaseCommand):
    help = "Tile large images into cutouts, keep tiles by entropy, and add them to a similarity workflow."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--workflow", required=True)
        parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE)
        parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP)
        parser.add_argument("--min-entropy", type=float, default=DEFAULT_MIN_ENTROPY)
        parser.add_argument("files", nargs="+")

    def handle(self, *args, **opts):
        workflow = (
            Workflow.objects.select_related("project")
            .filter(project__slug=opts["project"], slug=opts["workflow"], kind=Workflow.SIMILARITY)
            .first()
        )
        if workflow is None:
            raise CommandError(f"No similarity workflow {opts['project']}/{opts['workflow']}.")
        added = duplicates = dropped = failed = 0
        for name in opts["files"]:
            path = Path(name)
            try:
                with path.open("rb") as handle:
                    image = read_query_image(handle)
                kept, blank = select_tiles(image, opts["tile_size"], opts["overlap"], opts["min_entropy"])
            except (OSError, QueryImageError, ValueError) as exc:
                failed += 1
                self.stderr.write(f"{path}: {exc}")
                continue
            dropped += len(blank)
            for tile in kept:
                with transaction.atomic():
                    try:
                        _subject, created = add_subject(
                            project=workflow.project,
                            workflow=workflow,
                            subject_set=None,
                            external_id=f"{path.name}:{tile.y}:{tile.x}"[:100],
                            array=tile.array,
                            metadata={
                                "source_file": path.name,
                                "y": tile.y,
                                "x": tile.x,
                                "tile_size": opts["tile_size"],
                                "entropy_bits": round(tile.entropy, 4),
                            },
                            source="tile",
                        )
                    except IngestError as exc:
                        failed += 1
                        self.stderr.write(f"{path} tile ({tile.y}, {tile.x}): {exc}")
                        continue
                added += created
                duplicates += not created
        self.stdout.write(
            f"added {added}, duplicates {duplicates}, blank tiles dropped {dropped}, failed {failed}"
        )
        if failed:
            raise CommandError(f"{failed} file(s) or tile(s) failed")
