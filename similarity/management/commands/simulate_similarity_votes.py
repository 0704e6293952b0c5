"""Simulated volunteers answer similarity tasks using the subjects' hidden classes.

    python manage.py simulate_similarity_votes --project ztf-demo --workflow similar --answers 300 --train

Each simulated volunteer marks a candidate as similar with probability --hit-rate when it has
the comparison's hidden class (Subject.truth_subtype) and --false-alarm otherwise; an empty
choice is stored as "no images are similar". Answers go through the same service as the web
page, so tasks, PairStats and the round trigger behave exactly as with people.
"""

import random
import uuid

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.models import Participant, Subject, Workflow
from jobs.services import run_job
from mlcore.galaxies import simulate_answer
from similarity.selection import next_task
from similarity.services import record_similarity_vote, request_embedding_round


class Command(BaseCommand):
    help = "Let simulated volunteers (who know the hidden classes) answer similarity tasks."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--workflow", required=True)
        parser.add_argument("--answers", type=int, default=200, help="number of answers in total")
        parser.add_argument("--volunteers", type=int, default=8)
        parser.add_argument("--hit-rate", type=float, default=0.9)
        parser.add_argument("--false-alarm", type=float, default=0.03)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--train", action="store_true", help="run an embedding round here afterwards")

    def handle(self, *args, **opts):
        workflow = Workflow.objects.filter(
            project__slug=opts["project"], slug=opts["workflow"], kind=Workflow.SIMILARITY
        ).first()
        if workflow is None:
            raise CommandError(f"No similarity workflow {opts['project']}/{opts['workflow']}.")
        classes = dict(Subject.objects.filter(workflow=workflow).values_list("pk", "truth_subtype"))
        if not classes or not any(classes.values()):
            raise CommandError(
                "The workflow's subjects have no hidden classes (truth_subtype) to answer with."
            )
        rng = random.Random(opts["seed"])
        np_rng = np.random.default_rng(opts["seed"])
        volunteers = [
            Participant.objects.get_or_create(
                kind=Participant.ANONYMOUS, session_key=f"simulated-{opts['seed']}-{i}"
            )[0]
            for i in range(max(1, opts["volunteers"]))
        ]
        stored = none = 0
        for n in tqdm(range(opts["answers"]), desc="simulated answers", unit="answer"):
            volunteer = volunteers[n % len(volunteers)]
            task = next_task(workflow, volunteer, rng)
            if task is None:
                self.stdout.write("No more tasks for the simulated volunteers.")
                break
            positions = simulate_answer(
                classes.get(task.comparison_id, ""),
                [classes.get(c, "") for c in task.candidates],
                np_rng,
                hit_rate=opts["hit_rate"],
                false_alarm_rate=opts["false_alarm"],
            )
            chosen = [task.candidates[p] for p in positions]
            result = record_similarity_vote(
                task=task,
                participant=volunteer,
                chosen=chosen,
                none_similar=not chosen,
                idempotency_key=uuid.uuid4(),
                source="simulated",
                trusted=True,  # simulated volunteers are served by next_task right here
            )
            stored += result.created
            none += result.created and not chosen
        self.stdout.write(self.style.SUCCESS(f"{stored} answers stored ({none} 'no images are similar')."))
        if opts["train"]:
            job, created = request_embedding_round(workflow, reason="simulate_similarity_votes --train")
            finished = run_job(job.pk)
            if finished is None:
                self.stdout.write(
                    f"Round #{job.pk} is already running on a worker; see the workflow's model page."
                )
                return
            self.stdout.write(f"Round #{finished.pk}: {finished.status} — {finished.message}")
