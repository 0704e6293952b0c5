"""Queue (or run here, with --here) an embedding round for a similarity workflow."""

from django.core.management.base import BaseCommand, CommandError

from core.models import Workflow
from jobs.services import run_job
from similarity.services import request_embedding_round


class Command(BaseCommand):
    help = "Train the similarity embedding of a workflow: queue a round for the gpu worker, or run it here."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--workflow", required=True)
        parser.add_argument("--here", action="store_true", help="run the round in this process")
        parser.add_argument("--pretrain-epochs", type=int)
        parser.add_argument("--finetune-epochs", type=int)

    def handle(self, *args, **opts):
        workflow = Workflow.objects.filter(
            project__slug=opts["project"], slug=opts["workflow"], kind=Workflow.SIMILARITY
        ).first()
        if workflow is None:
            raise CommandError(f"No similarity workflow {opts['project']}/{opts['workflow']}.")
        overrides = {
            name: opts[key]
            for key, name in (("pretrain_epochs", "pretrain_epochs"), ("finetune_epochs", "finetune_epochs"))
            if opts[key] is not None
        }
        job, created = request_embedding_round(
            workflow, reason="train_embedding command", train_settings=overrides
        )
        self.stdout.write(f"Round #{job.pk} {'queued' if created else 'already open'}.")
        if opts["here"]:
            finished = run_job(job.pk)
            if finished is None:
                raise CommandError(f"Round #{job.pk} is being run by a worker.")
            self.stdout.write(f"{finished.status}: {finished.message}")
            if finished.status != "succeeded":
                raise CommandError(finished.error or finished.message)
