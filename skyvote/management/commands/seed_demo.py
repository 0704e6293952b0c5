"""Create (or bring up to date) the demo project: synthetic ZTF-like subjects, gold, a demo owner,
and a Rubin workflow beside the ZTF one.

The Rubin workflow's subjects are synthetic Rubin alert packets (mlcore.synth_rubin) ingested
through the same path as real Rubin alerts (core.ingest.rubin_record + add_subject): 0.2″ stamps in
nJy with variance planes, a rotated WCS and a light curve. Its first training round fine-tunes from
the ZTF workflow's promoted model (queued behind the ZTF workflow's first round, which makes it) and
trains one from scratch beside it, so the Rubin model page shows whether the transfer helped.

The first rounds (the ZTF classifier, then the Rubin one, then the similarity embedding) run here,
before the URL is printed, as jobs of the job system run in this process (queue_job + run_job, as
`train_embedding --here` does), with a small time budget: the demo opens with a promoted model, its
scores and a search index, instead of the workers spending minutes on them first. Later rounds are
the product's, on the workers, every `train_every` new labels. `--first-rounds queue` (or
SKYVOTE_DEMO_FIRST_ROUNDS=queue) leaves the first rounds to the gpu worker with the product's
settings, as before.

Idempotent: re-running adds nothing that is already there and prints the same credentials.
"""

import os
import secrets
import time
import uuid

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from core import followups, workflows
from core.ingest import add_subject, subject_set_named
from core.models import ModelVersion, Participant, Project, Subject, Workflow
from labeling.services import record_vote
from mlcore.synth import generate_triplets
from mlcore.synth_rubin import ztf_light_curves

DEMO_USER = "demo"
DEMO_PROJECT = "ztf-demo"
DEMO_WORKFLOW = "real-or-bogus"
DEMO_RUBIN_WORKFLOW = "rubin-real-or-bogus"

# The seed's quick first rounds: a few epochs within a time budget (seconds of training per round;
# a Rubin round with a start-from model splits it between its two models). Measured on 2 busy cores:
# held-out AUC 0.84-0.90 for ZTF after 20 s (the workers' later rounds do better), and every
# near-duplicate of the similarity demo found in the top 5 (docs/benchmarks.md, "Demo ready").
FIRST_ROUND_BUDGET_S = 20.0
QUICK_TRAIN_EPOCHS = 8
QUICK_PRETRAIN_EPOCHS = 2


def demo_password() -> str:
    path = settings.VAR_DIR / "demo-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(9))
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create the demo project (synthetic ZTF-like subjects, gold standards, a demo owner account)."

    def add_arguments(self, parser):
        parser.add_argument("--subjects", type=int, default=2000)
        # Gold is the held-out set a round is judged on: a round promotes only on at least
        # SKYVOTE_MIN_HELDOUT (200) held-out items, so the demo's first rounds have that many.
        parser.add_argument("--gold", type=int, default=200, help="synthetic subjects marked as expert gold")
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-similarity", action="store_true", help="skip the similarity workflow")
        parser.add_argument(
            "--history", type=int, default=1200, help="subjects that simulated volunteers already voted on"
        )
        # By default the Rubin workflow is a third of the ZTF one (600 alerts for the default 2000).
        parser.add_argument("--rubin-subjects", type=int, default=None, help="synthetic Rubin alerts")
        parser.add_argument("--rubin-gold", type=int, default=None)
        parser.add_argument("--rubin-history", type=int, default=None)
        parser.add_argument("--no-rubin", action="store_true", help="skip the Rubin workflow")
        parser.add_argument(
            "--similarity-subjects", type=int, default=600, help="galaxy cutouts of the similarity workflow"
        )
        parser.add_argument(
            "--similarity-heldout",
            type=int,
            default=None,
            help="simulated similarity answers until this many held-out ones can be scored "
            "(default: the promotion minimum, so the first embedding can be promoted)",
        )
        parser.add_argument(
            "--no-rounds",
            action="store_true",
            help="no first rounds at all (neither run here nor queued)",
        )
        parser.add_argument(
            "--first-rounds",
            choices=["run", "queue"],
            default=os.environ.get("SKYVOTE_DEMO_FIRST_ROUNDS") or "run",
            help="run: train the first models here, quickly, before the URL is printed (default); "
            "queue: leave them to the gpu worker with the product's settings (minutes on a laptop)",
        )
        parser.add_argument(
            "--first-round-budget",
            type=float,
            default=FIRST_ROUND_BUDGET_S,
            help="seconds of training for each first round run here",
        )

    def handle(self, *args, **opts):
        from skyvote.celery import declare_queues

        # Before any job is queued, and before the demo's workers start side by side.
        declare_queues()
        password = demo_password()
        User = get_user_model()
        owner, _ = User.objects.get_or_create(username=DEMO_USER, defaults={"email": ""})
        owner.set_password(password)
        # An ordinary owner of the demo project: staff would mean an admin account with a published
        # password (demos made before this are demoted on the next run).
        owner.is_staff = owner.is_superuser = False
        owner.save()

        project, _ = Project.objects.get_or_create(
            slug=DEMO_PROJECT,
            defaults={
                "name": "ZTF transients (demo)",
                "description": "Synthetic ZTF-like candidates: is the thing in the middle a real new source, "
                "or an artefact of the telescope and the image subtraction?",
                "owner": owner,
            },
        )
        # Through the workflow builder's services, as a scientist's workflows are made (idempotent).
        workflow, _ = workflows.create_workflow(
            project, DEMO_WORKFLOW, name="Real or bogus?", is_active=True, retirement_limit=5, train_every=40
        )
        if not workflow.followups:
            # "What kind?" after bogus (optional) with the field guide's types; after real it is off.
            workflows.update_workflow(workflow, followups=followups.default_followups(workflow.answers))
        subject_set = subject_set_named(project, workflow, "Synthetic night 1")

        have = Subject.objects.filter(project=project, workflow=workflow).count()
        want = opts["subjects"]
        if have < want:
            batch = generate_triplets(want, seed=opts["seed"], hard_fraction=0.2)
            # Each subject's history of earlier detections and upper limits, shown beside its cutouts.
            curves = ztf_light_curves(batch.metadata, batch.subtypes, seed=opts["seed"])
            for i in tqdm(range(want), desc="demo subjects", unit="subject"):
                with transaction.atomic():
                    add_subject(
                        project=project,
                        workflow=workflow,
                        subject_set=subject_set,
                        external_id=f"demo-{i:06d}",
                        object_id=f"ZTFdemo{i:06d}",
                        array=batch.images[i],
                        metadata=batch.metadata[i],
                        source="synthetic",
                        truth_label="real" if batch.labels[i] else "bogus",
                        truth_subtype=batch.subtypes[i],
                        light_curve=curves[i],
                    )
        self._seed_gold(workflow, opts["gold"])
        self._seed_crowd_history(workflow, opts["history"], opts["seed"])
        rubin = None
        if not opts["no_rubin"]:
            shares = {
                "rubin_subjects": ("subjects", 0.3),
                "rubin_gold": ("gold", 1.0),
                "rubin_history": ("history", 1 / 3),
            }
            for key, (base, share) in shares.items():
                if opts[key] is None:
                    opts[key] = round(opts[base] * share)
            rubin = self._seed_rubin(project, opts)
        run_here = not opts["no_rounds"] and opts["first_rounds"] == "run"
        similarity = None
        if not opts["no_similarity"]:
            similarity = self._seed_similarity(
                project,
                opts["similarity_subjects"],
                queue_round=not opts["no_rounds"] and not run_here,
                heldout=opts["similarity_heldout"],
            )
        if run_here:
            self._run_first_rounds(workflow, rubin, similarity, opts["first_round_budget"])
        elif not opts["no_rounds"]:
            self._queue_first_rounds(workflow, rubin)

        url = f"http://127.0.0.1:{opts['port']}/"
        n = Subject.objects.filter(project=project).count()
        self.stdout.write(self.style.SUCCESS(f"Demo project '{project.slug}' ready with {n} subjects."))
        self.stdout.write(f"  Classify:   {url}p/{project.slug}/{workflow.slug}/")
        if rubin is not None:
            self.stdout.write(f"  Rubin:      {url}p/{project.slug}/{rubin.slug}/  (model: .../model/)")
        self.stdout.write(f"  Dashboard:  {url}p/{project.slug}/  (log in as '{DEMO_USER}' / '{password}')")
        self.stdout.write(f"Open {url}")

    def _seed_crowd_history(self, workflow, n_subjects, seed, votes_per_subject=4, n_volunteers=40):
        """Votes of simulated volunteers on part of the pool, as an ongoing campaign would have.

        Each of these subjects has one vote fewer than retirement needs, so a demo visitor's vote
        on one retires it: the dashboard, the volunteer table and the learning loop have something
        to show at once (the history already holds enough labels for a first training round).
        Volunteers have realistic sensitivities (0.77-0.99) and specificities (0.87-0.996).
        Idempotent: the keys are derived from (volunteer, subject).
        """
        rng = np.random.default_rng(seed)
        sens = rng.uniform(0.77, 0.99, n_volunteers)
        spec = rng.uniform(0.87, 0.996, n_volunteers)
        volunteers = [
            Participant.objects.get_or_create(
                kind=Participant.ANONYMOUS, session_key=f"demo-volunteer-{i:03d}"
            )[0]
            for i in range(n_volunteers)
        ]
        votes_per_subject = min(votes_per_subject, max(workflow.retirement_limit - 1, 1))
        subjects = list(
            Subject.objects.filter(workflow=workflow, gold_label="", truth_label__in=["real", "bogus"])
            .order_by("external_id")
            .values_list("pk", "truth_label", "truth_subtype")[:n_subjects]
        )
        gold = list(
            Subject.objects.filter(workflow=workflow)
            .exclude(gold_label="")
            .values_list("pk", "truth_label", "truth_subtype")
        )
        namespace = uuid.UUID("6f1c2b1e-5c1d-4f57-9a51-2f3c0de0a001")
        plan = [
            (pk, truth, subtype, v)
            for pk, truth, subtype in subjects
            for v in rng.choice(n_volunteers, votes_per_subject, replace=False)
        ]
        # Every simulated volunteer has answered a few gold subjects, so SWAP has learned their skill.
        plan += [
            (pk, truth, subtype, v)
            for v in range(n_volunteers)
            for pk, truth, subtype in gold[v % 7 :: 7][:6]
        ]
        # Follow-up answers from their own generator, so the real/bogus answers stay what they were.
        typing = _TypeAnswers(workflow.followups, n_volunteers, seed)
        for pk, truth, subtype, v in tqdm(plan, desc="demo vote history", unit="vote"):
            correct = rng.random() < (sens[v] if truth == "real" else spec[v])
            answer = truth if correct else ("bogus" if truth == "real" else "real")
            record_vote(
                workflow=workflow,
                subject_id=pk,
                participant=volunteers[v],
                answer=answer,
                followup=typing.answer(v, answer, subtype),
                idempotency_key=uuid.uuid5(namespace, f"{v}:{pk}"),
                source="import",
                trusted=True,  # a simulated history, as an import: no tickets
            )

    def _seed_rubin(self, project, opts) -> Workflow:
        """The Rubin workflow: synthetic Rubin alert packets through Rubin ingestion, gold, a history."""
        from core.ingest import add_subject, rubin_record
        from mlcore.synth_rubin import alert_packet, generate_rubin

        workflow, _ = workflows.create_workflow(
            project,
            DEMO_RUBIN_WORKFLOW,
            name="Rubin: real or bogus?",
            is_active=True,
            retirement_limit=5,
            train_every=40,
            # Rubin alerts carry variance planes: the model gets the difference's uncertainty too.
            model_uncertainty_channel=True,
        )
        subject_set = subject_set_named(project, workflow, "Synthetic Rubin night 1")
        want = opts["rubin_subjects"]
        if Subject.objects.filter(project=project, workflow=workflow).count() < want:
            batch = generate_rubin(want, seed=opts["seed"] + 1, hard_fraction=0.2)
            for i in tqdm(range(want), desc="demo Rubin alerts", unit="alert"):
                record = rubin_record(alert_packet(batch, i), "synthetic", "10.0")
                with transaction.atomic():
                    add_subject(
                        project=project,
                        workflow=workflow,
                        subject_set=subject_set,
                        external_id=record.external_id,
                        object_id=record.object_id,
                        array=record.array,
                        metadata=record.metadata,
                        source=record.source,
                        truth_label="real" if batch.labels[i] else "bogus",
                        truth_subtype=batch.subtypes[i],
                        survey=record.survey,
                        schema_version=record.schema_version,
                        light_curve=record.light_curve,
                        stamps=record.stamps,
                    )
        self._seed_gold(workflow, opts["rubin_gold"])
        self._seed_crowd_history(workflow, opts["rubin_history"], opts["seed"] + 1)
        self.stdout.write(f"Rubin workflow '{workflow.slug}' ready.")
        return workflow

    def _queue_first_rounds(self, ztf: Workflow, rubin: Workflow | None) -> None:
        """The ZTF workflow's first round, then the Rubin workflow's, which fine-tunes from the model
        the ZTF round promotes (the gpu worker runs them in this order). Only for workflows without
        a model or an open round, and with enough labels for a round."""
        from jobs.models import Job
        from loop import services as loop

        for workflow, options in ((ztf, {}), (rubin, {"start_from_workflow": ztf})):
            if workflow is None or ModelVersion.objects.filter(workflow=workflow).exists():
                continue
            job = loop.open_job(workflow, Job.TRAIN)
            if job is not None:
                self._amend_queued_round(job, options)
                continue
            if loop.trainable_label_count(workflow) < int(loop.loop_setting("min_train_labels")):
                continue
            try:
                job, _ = loop.request_training(workflow, reason="demo", **options)
            except loop.LoopError as exc:
                self.stdout.write(self.style.WARNING(f"No first round for {workflow.slug}: {exc}"))
                continue
            self.stdout.write(f"First training round of '{workflow.slug}' queued (job #{job.pk}).")

    def _amend_queued_round(self, job, params: dict) -> None:
        """Give a first round the vote history's own trigger already queued the demo's parameters.

        Seeding the history crosses `train_every` and the loop queues a round with the product's
        settings and no start-from workflow (so the Rubin round would not fine-tune from ZTF's model).
        The workers start only after seeding, so the round is still queued: its parameters can change
        without racing a worker (the update applies only while it is queued, the claim's condition).
        """
        from jobs.models import Job

        stored = {key: getattr(value, "pk", value) for key, value in params.items()}  # a workflow by its pk
        wanted = {key: value for key, value in stored.items() if (job.params or {}).get(key) != value}
        if wanted and job.status == Job.QUEUED:
            job.params = {**(job.params or {}), **wanted}
            Job.objects.filter(pk=job.pk, status=Job.QUEUED).update(params=job.params)

    def _run_first_rounds(self, ztf, rubin, similarity, budget_s: float) -> None:
        """The first classifier rounds (ZTF, then Rubin fine-tuning from ZTF's model) and the first
        embedding round, run in this process through the job system with a small time budget.

        Each is an ordinary job (queued, claimed, owned, logged; its broker message finds it finished
        and does nothing), so the model pages show it like any round, and its promotion follows the
        usual rule: a first version has no active model to beat and is promoted when its held-out set
        has both classes. A round that fails (say, gold of one class only) is reported, and the demo
        starts without that model; the workers' later rounds try again as labels arrive.
        """
        from jobs.models import Job
        from jobs.services import run_job
        from loop import services as loop
        from similarity.training import train_setting

        # Never more than the product's own rounds would do (a deployment or the tests may set less).
        quick_train = {
            "epochs": min(QUICK_TRAIN_EPOCHS, int(loop.loop_setting("train_max_epochs"))),
            "time_budget_s": min(budget_s, float(loop.loop_setting("train_time_budget_s"))),
        }
        rounds = []
        for workflow, options in ((ztf, {}), (rubin, {"start_from_workflow": ztf})):
            if workflow is None or ModelVersion.objects.filter(workflow=workflow).exists():
                continue
            if loop.trainable_label_count(workflow) < int(loop.loop_setting("min_train_labels")):
                continue
            try:
                job, created = loop.request_training(
                    workflow, reason="demo: quick first round", train_config=quick_train, **options
                )
            except loop.LoopError as exc:
                self.stdout.write(self.style.WARNING(f"No first round for {workflow.slug}: {exc}"))
                continue
            if not created:
                self._amend_queued_round(job, {"train_config": quick_train, **options})
            rounds.append((workflow, job))
        if (
            similarity is not None
            and not ModelVersion.objects.filter(workflow=similarity, kind=ModelVersion.EMBEDDING).exists()
        ):
            from similarity.services import request_embedding_round

            # Self-supervised pretraining, then a little fine-tuning on the simulated answers.
            quick_embed = {
                "pretrain_epochs": min(QUICK_PRETRAIN_EPOCHS, int(train_setting("pretrain_epochs"))),
                "finetune_epochs": min(2, int(train_setting("finetune_epochs"))),
                "time_budget_s": min(budget_s, float(train_setting("time_budget_s"))),
            }
            job, created = request_embedding_round(
                similarity, reason="demo: quick first round (self-supervised)", train_settings=quick_embed
            )
            if not created:
                self._amend_queued_round(job, {"train_settings": quick_embed})
            rounds.append((similarity, job))
        for workflow, job in rounds:
            self.stdout.write(f"First round of '{workflow.slug}' (job #{job.pk}) ...", ending="")
            self.stdout.flush()
            started = time.perf_counter()
            finished = run_job(job.pk)
            took = time.perf_counter() - started
            if finished is None:
                self.stdout.write(" taken by a running worker.")
            elif finished.status == Job.SUCCEEDED:
                self.stdout.write(f" {finished.message} ({took:.0f} s).")
            else:
                self.stdout.write(
                    self.style.WARNING(f" {finished.status}: {finished.error or finished.message}")
                )

    def _seed_gold(self, workflow, n):
        from labeling.gold import seed_gold_from_truth

        seed_gold_from_truth(workflow, n)

    def _seed_similarity(self, project, n_subjects: int, *, queue_round: bool, heldout=None) -> Workflow:
        from similarity.demo import seed_similarity_answers, seed_similarity_demo
        from similarity.training import train_setting

        workflow = seed_similarity_demo(project, n_subjects, request_training=queue_round)
        # An embedding is never promoted on fewer scored held-out answers than the minimum, so the demo's
        # first round needs that many (about five times as many answers in all: a fifth are held out).
        target = int(train_setting("min_heldout_answers")) if heldout is None else heldout
        added = seed_similarity_answers(workflow, target)
        self.stdout.write(f"Similarity workflow '{workflow.slug}' ready ({added} simulated answers added).")
        return workflow


class _TypeAnswers:
    """Simulated volunteers' follow-up answers: each volunteer names the true type with their own
    accuracy (0.5 to 0.9), says "not sure" some of the time, otherwise mistakes it for another of the
    question's types; a few always pass (fast mode). Nothing where the answer has no question."""

    def __init__(self, workflow_followups, n_volunteers: int, seed: int):
        self.followups = workflow_followups
        self.rng = np.random.default_rng(seed + 7919)
        self.accuracy = self.rng.uniform(0.5, 0.9, n_volunteers)
        self.passes = self.rng.random(n_volunteers) < 0.15

    def answer(self, volunteer: int, answer: str, truth_subtype: str) -> str:
        question = followups.followup_for(self.followups, answer)
        if question is None or self.passes[volunteer]:
            return ""
        keys = [t["key"] for t in question["types"]]
        if truth_subtype in keys and self.rng.random() < self.accuracy[volunteer]:
            return truth_subtype
        if self.rng.random() < 0.3:
            return followups.NOT_SURE
        others = [k for k in keys if k != truth_subtype] or keys
        return str(others[self.rng.integers(len(others))])
