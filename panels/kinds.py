"""Real/bogus tasks in paid-panel batches: the handler panels registers for `Workflow.REAL_BOGUS`.

Each kind of task a batch can hold has a handler in core.tasklink_kinds (similarity registers its own
from its app); panels.services does the kind-independent part (links, places, progress, quality,
codes, payments) and asks the handler for the rest. Here an assignment's items are subject ids:
`round(tasks × gold share)` gold subjects, one attention check (obvious gold) per 25 tasks among them,
the rest from the selector's unretired, not-yet-answered pool. Answers are ordinary votes through
`labeling.services.record_vote` (source "panel"), linked to the assignment.
"""

from __future__ import annotations

import random

from django.db.models import Exists, OuterRef

from core import followups
from core.models import Participant, Subject, Workflow
from core.sampling import random_one, random_window
from core.tasklink_kinds import PanelAnswer, register_task_kind
from labeling.models import Vote
from labeling.services import record_vote
from panels.models import Assignment, Batch

# One attention check (obvious gold) per this many tasks, when the workflow has obvious gold subjects.
TASKS_PER_ATTENTION_CHECK = 25
# Gold subtypes that nobody paying attention gets wrong (see mlcore.synth.SUBTYPE_DESCRIPTIONS).
OBVIOUS_SUBTYPES = frozenset({"satellite_streak", "masked_bright_star", "new_point_source"})


def is_attention_check(subject: Subject) -> bool:
    """An attention check is an obvious gold subject: anyone looking gets it right."""
    if not subject.gold_label:
        return False
    meta = subject.metadata or {}
    if "attention_check" in meta:
        return bool(meta["attention_check"])
    if meta.get("difficulty") == "hard":
        return False
    if subject.gold_subtype in OBVIOUS_SUBTYPES:
        return True
    counts = subject.answer_counts or {}
    total = sum(counts.values())
    return total >= 5 and counts.get(subject.gold_label, 0) / total >= 0.95


def _ordinary_ids(workflow: Workflow, pool, n: int, reserved: set[int], rng: random.Random) -> list[int]:
    """n ordinary subjects: the selector's ranking with its exploration share when a model is active,
    random otherwise; subjects already handed to other open assignments come last."""
    if n <= 0:
        return []
    fetch = max(4 * n, 64) + len(reserved)
    if workflow.active_model_id:
        n_explore = sum(rng.random() < workflow.exploration_share for _ in range(n))
        ranked = list(pool.order_by("-priority", "random_key").values_list("pk", flat=True)[:fetch])
        explore = random_window(pool, rng, fetch)
        candidates = [i for i in ranked if i not in reserved] + [i for i in ranked if i in reserved]
        chosen = candidates[: n - n_explore]
        taken = set(chosen)
        for i in [i for i in explore if i not in reserved] + [i for i in explore if i in reserved]:
            if len(chosen) >= n:
                break
            if i not in taken:
                chosen.append(i)
                taken.add(i)
        for i in candidates:  # a small pool: fill up from the ranking
            if len(chosen) >= n:
                break
            if i not in taken:
                chosen.append(i)
                taken.add(i)
        return chosen
    ids = random_window(pool, rng, fetch)
    ordered = [i for i in ids if i not in reserved] + [i for i in ids if i in reserved]
    return ordered[:n]


def _gold_ids(
    workflow: Workflow, participant: Participant, n: int, n_attention: int, rng: random.Random, exclude=()
) -> list[int]:
    if n <= 0:
        return []
    seen = Vote.objects.filter(workflow=workflow, participant=participant, subject=OuterRef("pk"))
    candidates = (
        Subject.objects.filter(workflow=workflow)
        .exclude(gold_label="")
        .exclude(Exists(seen))
        .exclude(pk__in=list(exclude))
    )
    # A random window of the gold by its indexed random key, never the whole gold set: a few times
    # what is needed leaves room for attention checks. Active gold first: a vote on a retired
    # subject is stored but flagged late.
    fetch = max(4 * n, 64)
    ids = random_window(candidates.filter(status=Subject.ACTIVE), rng, fetch)
    if len(ids) < fetch:
        ids += random_window(candidates.exclude(status=Subject.ACTIVE), rng, fetch - len(ids))
    loaded = Subject.objects.only(
        "pk", "gold_label", "gold_subtype", "metadata", "answer_counts", "status"
    ).in_bulk(ids)
    gold = [loaded[i] for i in ids if i in loaded]
    obvious = [s.pk for s in gold if is_attention_check(s)]
    chosen = obvious[: min(n_attention, n)]
    taken = set(chosen)
    rest = [s.pk for s in gold if s.pk not in taken]
    return chosen + rest[: n - len(chosen)]


def choose_subjects(batch: Batch, participant: Participant, rng: random.Random | None = None) -> list[int]:
    """The fixed, shuffled task list of a new assignment."""
    rng = rng or random.Random()
    workflow = batch.workflow
    n = batch.tasks_per_assignment
    n_gold = round(n * batch.gold_share)
    n_attention = -(-n // TASKS_PER_ATTENTION_CHECK) if n_gold else 0

    seen = Vote.objects.filter(workflow=workflow, participant=participant, subject=OuterRef("pk"))
    pool = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE, gold_label="").exclude(
        Exists(seen)
    )
    # Spread workers over the pool: subjects in other unfinished assignments of this batch come last,
    # and never twice to the same worker across their own unfinished assignments.
    reserved: set[int] = set()
    for ids in Assignment.objects.filter(
        batch=batch, completed_at__isnull=True, released_at__isnull=True
    ).values_list("subject_ids", flat=True):
        reserved.update(ids)
    own: set[int] = set()
    for ids in Assignment.objects.filter(
        batch__workflow=workflow, participant=participant, completed_at__isnull=True, released_at__isnull=True
    ).values_list("subject_ids", flat=True):
        own.update(ids)
    if own:
        pool = pool.exclude(pk__in=own)
    gold = _gold_ids(workflow, participant, n_gold, n_attention, rng, exclude=own)
    ordinary = _ordinary_ids(workflow, pool, n - len(gold), reserved, rng)
    if len(gold) + len(ordinary) < n:  # not enough ordinary subjects: more gold, if there is any
        extra = _gold_ids(workflow, participant, n, 0, rng, exclude=own)
        gold += [i for i in extra if i not in set(gold)][: n - len(gold) - len(ordinary)]
    ids = gold + ordinary
    rng.shuffle(ids)
    return ids


class RealBogusTasks:
    task_partial = "labeling/classify.html#task"

    def batch_problem(self, workflow, *, tasks_per_assignment, gold_share):
        subjects = Subject.objects.filter(workflow=workflow)
        available = subjects.filter(status=Subject.ACTIVE).count()
        available += subjects.filter(status=Subject.RETIRED).exclude(gold_label="").count()
        if available < tasks_per_assignment:
            return (
                "tasks_per_assignment",
                f"This workflow has only {available} subjects a worker could see; "
                f"lower the tasks per assignment or add subjects first.",
            )
        if gold_share > 0 and not subjects.exclude(gold_label="").exists():
            return (
                "gold_share",
                "This workflow has no gold subjects yet: label some on the gold page, or set the gold share to 0.",
            )
        return None

    def choose_items(self, batch, participant, rng):
        return choose_subjects(batch, participant, rng)

    def pending(self, assignment):
        ids = [int(i) for i in assignment.subject_ids]
        workflow_id = assignment.batch.workflow_id
        answered = set(
            Vote.objects.filter(
                workflow_id=workflow_id,
                participant_id=assignment.participant_id,
                subject_id__in=ids,
                retracted=False,  # a vote taken back is no answer
            ).values_list("subject_id", flat=True)
        )
        existing = set(
            Subject.objects.filter(pk__in=ids, workflow_id=workflow_id).values_list("pk", flat=True)
        )
        return [i for i in ids if i in existing and i not in answered]

    def item_from_post(self, data):
        try:
            return int(data.get("subject", ""))
        except (TypeError, ValueError):
            return None

    def task_context(self, assignment, item_id, *, image_url, data=None):
        # The subject's own image URLs: its id is in the form anyway, and gold is never in the page.
        subject = Subject.objects.select_related("project").filter(pk=item_id).first()
        # The follow-up questions too: the page is the classify page's task partial, with classify.js.
        return {"subject": subject, **followups.page_context(assignment.batch.workflow)}

    def images(self, assignment, item_id):
        return {}

    def submit(self, assignment, item_id, data, *, idempotency_key, started_at, user_agent, viewport):
        result = record_vote(
            workflow=assignment.batch.workflow,
            subject_id=int(item_id),
            participant=assignment.participant,
            answer=data.get("answer", ""),
            followup=data.get("followup", ""),
            idempotency_key=idempotency_key,
            started_at=started_at,
            user_agent=user_agent,
            viewport=viewport,
            assignment=assignment,
            source="panel",
            trusted=True,  # the assignment's subject list is the proof of serving: no tickets
        )
        return result.feedback

    def recent_answers(self, workflow, cutoff):
        return Vote.objects.filter(assignment=OuterRef("pk"), created_at__gte=cutoff)

    def answers(self, batch, assignments):
        by_assignment: dict[int, list[PanelAnswer]] = {a.pk: [] for a in assignments}
        votes = Vote.objects.filter(
            **({"assignment__batch": batch} if len(assignments) > 1 else {"assignment__in": assignments}),
            retracted=False,  # quality is judged on the answers that stand
        )
        votes = votes.select_related("subject").only(
            "assignment_id",
            "answer",
            "created_at",
            "started_at",
            "finished_at",
            "was_gold",
            "gold_correct",
            "subject__gold_label",
            "subject__gold_subtype",
            "subject__metadata",
            "subject__answer_counts",
        )
        for vote in votes:
            if vote.assignment_id not in by_assignment:
                continue
            gold = vote.was_gold and vote.gold_correct is not None
            by_assignment[vote.assignment_id].append(
                PanelAnswer(
                    assignment_id=vote.assignment_id,
                    created_at=vote.created_at,
                    started_at=vote.started_at,
                    finished_at=vote.finished_at,
                    skipped=vote.answer == Vote.SKIP,
                    gold_correct=bool(vote.gold_correct) if gold else None,
                    attention_check=gold and is_attention_check(vote.subject),
                )
            )
        return by_assignment

    def preview_context(self, batch):
        """A preview sample: an ordinary (never a gold) subject, shown without a form."""
        qs = Subject.objects.filter(workflow=batch.workflow, status=Subject.ACTIVE, gold_label="")
        return {"sample": random_one(qs)}


def register() -> None:
    register_task_kind(Workflow.REAL_BOGUS, RealBogusTasks())
