"""Create (or bring up to date) the demo project: synthetic ZTF-like subjects, gold, a demo owner.

Idempotent: re-running adds nothing that is already there and prints the same credentials.
"""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from labeling.ingest import add_subject
from labeling.models import Project, Subject, SubjectSet, Workflow
from mlcore.synth import generate_triplets

DEMO_USER = "demo"
DEMO_PROJECT = "ztf-demo"
DEMO_WORKFLOW = "real-or-bogus"


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
        parser.add_argument("--gold", type=int, default=60, help="synthetic subjects marked as expert gold")
        parser.add_argument("--seed", type=int, default=2026)
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-similarity", action="store_true", help="skip the similarity workflow")

    def handle(self, *args, **opts):
        password = demo_password()
        User = get_user_model()
        owner, _ = User.objects.get_or_create(username=DEMO_USER, defaults={"email": ""})
        owner.set_password(password)
        owner.is_staff = True
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
        workflow, _ = Workflow.objects.get_or_create(
            project=project,
            slug=DEMO_WORKFLOW,
            defaults={"name": "Real or bogus?", "retirement_limit": 5, "train_every": 40},
        )
        subject_set, _ = SubjectSet.objects.get_or_create(project=project, name="Synthetic night 1")
        subject_set.workflows.add(workflow)

        have = Subject.objects.filter(project=project, workflow=workflow).count()
        want = opts["subjects"]
        if have < want:
            batch = generate_triplets(want, seed=opts["seed"], hard_fraction=0.2)
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
                    )
        self._seed_gold(workflow, opts["gold"])
        if not opts["no_similarity"]:
            self._seed_similarity(project)

        url = f"http://127.0.0.1:{opts['port']}/"
        n = Subject.objects.filter(project=project).count()
        self.stdout.write(self.style.SUCCESS(f"Demo project '{project.slug}' ready with {n} subjects."))
        self.stdout.write(f"  Classify:   {url}p/{project.slug}/{workflow.slug}/")
        self.stdout.write(f"  Dashboard:  {url}p/{project.slug}/  (log in as '{DEMO_USER}' / '{password}')")
        self.stdout.write(f"Open {url}")

    def _seed_gold(self, workflow, n):
        from labeling.gold import seed_gold_from_truth

        seed_gold_from_truth(workflow, n)

    def _seed_similarity(self, project):
        from similarity.demo import seed_similarity_demo

        workflow = seed_similarity_demo(project)
        self.stdout.write(f"Similarity workflow '{workflow.slug}' ready.")
