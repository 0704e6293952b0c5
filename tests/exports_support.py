"""Test data for the export and API tests: a small project with votes from every kind of
participant, a gold subject, a retired subject and an active model's scores. Everything goes
through the real services (core.ingest.add_subject, labeling.services.record_vote)."""

import uuid
from dataclasses import dataclass, field

from django.utils import timezone

from core.models import ModelVersion, Participant, Project, Subject, Workflow
from labeling.selection import ticket_for
from labeling.services import record_vote


@dataclass
class Populated:
    project: Project
    workflow: Workflow
    subjects: list[Subject]
    participants: list[Participant]
    worker: Participant
    votes: list = field(default_factory=list)


def add_subjects(project, workflow, n: int, seed: int = 0, prefix: str = "cand") -> list[Subject]:
    from core.ingest import add_subject
    from mlcore.synth import generate_triplets

    batch = generate_triplets(n, seed=seed)
    subjects = []
    for i in range(n):
        subject, _ = add_subject(
            project=project,
            workflow=workflow,
            subject_set=None,
            external_id=f"{prefix}{seed}-{i}",
            array=batch.images[i],
            metadata=batch.metadata[i],
            source="synthetic",
            object_id=batch.metadata[i]["objectId"],
            render=False,
        )
        subjects.append(subject)
    return subjects


def populate(project, workflow, django_user_model, n_subjects: int = 6, seed: int = 0) -> Populated:
    """n subjects; 4 participants (2 users, 1 anonymous, 1 panel worker) voting on most of them."""
    subjects = add_subjects(project, workflow, n_subjects, seed=seed)
    users = [
        django_user_model.objects.create_user(
            f"vol{seed}-{i}", email=f"vol{seed}-{i}@example.org", password="x"
        )
        for i in range(2)
    ]
    participants = [Participant.objects.create(kind=Participant.USER, user=u) for u in users]
    participants.append(Participant.objects.create(kind=Participant.ANONYMOUS, session_key=f"s{seed}"))
    worker = Participant.objects.create(kind=Participant.WORKER, external_id=f"PROLIFIC-{seed}-abc")
    participants.append(worker)

    gold = subjects[0]
    gold.gold_label = Subject.REAL
    gold.save(update_fields=["gold_label"])
    populated = Populated(project, workflow, subjects, participants, worker)
    started = timezone.now() - timezone.timedelta(minutes=5)
    for j, participant in enumerate(participants):
        for i, subject in enumerate(subjects[:-1]):  # the last subject gets no votes
            answer = "real" if (i + j) % 3 else "bogus"
            result = record_vote(
                workflow=workflow,
                subject_id=subject.pk,
                participant=participant,
                answer=answer,
                idempotency_key=uuid.uuid4(),
                started_at=started,
                user_agent=f'Mozilla/5.0 (test {j}), "quoted"',
                viewport="1280x800",
                source="web",
                ticket=ticket_for(workflow, subject, participant),
            )
            populated.votes.append(result.vote)

    model = ModelVersion.objects.create(
        workflow=workflow, version=3, status=ModelVersion.ACTIVE, metrics={"auc": 0.91}, n_train=5
    )
    workflow.active_model = model
    workflow.save(update_fields=["active_model"])
    for i, subject in enumerate(subjects):
        Subject.objects.filter(pk=subject.pk).update(model_score=i / 10, model_uncertainty=0.05 * i)
    return populated
