"""Similarity tasks in paid-panel batches: the handler the panels app finds in core.tasklink_kinds.

This app never imports panels (it sits below it): it registers this handler into core's registry from
SimilarityConfig.ready, and panels looks it up by the workflow's kind. An assignment's items are
similarity task ids, made for it when the worker starts (selection.create_task_set): ordinary tasks
chosen like a volunteer's, and check tasks (`SimilarityTask.check_candidate`) whose candidates include
the comparison image itself. A worker passes a check by choosing that tile; the page never says which
tile it is (panels serves every image of the task under an opaque per-tile URL, never the subject id).
Answers go through `record_similarity_vote` like a volunteer's, trusted because the assignment's own
task list proves what was served.
"""

from __future__ import annotations

import random

from django.db.models import OuterRef

from core.models import Subject, Workflow
from core.sampling import random_window
from core.tasklink_kinds import PanelAnswer
from similarity import selection
from similarity.models import SimilarityTask, SimilarityVote
from similarity.services import SimilarityVoteError, parse_chosen, record_similarity_vote

COMPARISON_SLOT = "c"


def _is_none_similar(data) -> bool:
    return (data or {}).get("none") in ("1", "true", "on")


class SimilarityTasks:
    task_partial = "similarity/classify.html#task"

    def batch_problem(self, workflow, *, tasks_per_assignment, gold_share):
        available = Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE).count()
        if available < workflow.n_candidates + 1:
            return (
                "workflow",
                f"This workflow has only {available} subjects: a similarity task needs "
                f"{workflow.n_candidates + 1} (one comparison and {workflow.n_candidates} candidates).",
            )
        if available < tasks_per_assignment:
            return (
                "tasks_per_assignment",
                f"This workflow has only {available} subjects a worker could compare, one per task; "
                f"lower the tasks per assignment or add subjects first.",
            )
        # Checks need no expert gold: any subject makes one (the comparison among its own candidates).
        return None

    def choose_items(self, batch, participant, rng: random.Random) -> list[int]:
        n = batch.tasks_per_assignment
        tasks = selection.create_task_set(batch.workflow, n, n_checks=round(n * batch.gold_share), rng=rng)
        ids = [task.pk for task in tasks]
        rng.shuffle(ids)
        return ids

    def pending(self, assignment) -> list[int]:
        ids = [int(i) for i in assignment.subject_ids]
        answered = set(
            SimilarityVote.objects.filter(
                participant_id=assignment.participant_id, task_id__in=ids
            ).values_list("task_id", flat=True)
        )
        existing = set(
            SimilarityTask.objects.filter(pk__in=ids, workflow_id=assignment.batch.workflow_id).values_list(
                "pk", flat=True
            )
        )
        return [i for i in ids if i in existing and i not in answered]

    def item_from_post(self, data):
        try:
            return int(data.get("task", ""))
        except (TypeError, ValueError):
            return None

    def _task(self, assignment, item_id) -> SimilarityTask | None:
        return (
            SimilarityTask.objects.select_related("comparison")
            .filter(pk=item_id, workflow_id=assignment.batch.workflow_id)
            .first()
        )

    def task_context(self, assignment, item_id, *, image_url, data=None):
        from similarity.views import TILE_KEYS  # the volunteer page's keys, tile for tile

        task = self._task(assignment, item_id)
        selected: list[int] = []
        if data is not None and not _is_none_similar(data):
            try:
                selected = parse_chosen(data.get("chosen", ""))
            except SimilarityVoteError:
                selected = []
        candidates = []
        if task is not None:
            subjects = Subject.objects.only("pk", "images").in_bulk(task.candidates)
            for position, subject_id in enumerate(task.candidates):
                subject = subjects.get(subject_id)
                if subject is None:
                    continue
                has_image = bool((subject.images or {}).get("image"))
                candidates.append(
                    {
                        "subject": subject,
                        # Per-tile opaque URLs: the check tile's must not be the comparison's.
                        "url": image_url(str(position)) if has_image else None,
                        "key": TILE_KEYS[position] if position < len(TILE_KEYS) else "",
                        "position": position + 1,
                        "selected": subject_id in selected,
                    }
                )
        comparison = task.comparison if task else None
        return {
            "task": task,
            "ticket": "",  # the assignment's task list is the proof of serving
            "candidates": candidates,
            "comparison_url": image_url(COMPARISON_SLOT)
            if comparison and (comparison.images or {}).get("image")
            else None,
            "selected_ids": ",".join(str(s) for s in selected),
            "slow_down": False,
        }

    def images(self, assignment, item_id):
        task = self._task(assignment, item_id)
        if task is None:
            return {}
        names = dict(
            Subject.objects.filter(pk__in=[task.comparison_id, *task.candidates]).values_list("pk", "images")
        )

        def png(subject_id):
            return (names.get(subject_id) or {}).get("image") or ""

        slots = {str(position): png(subject_id) for position, subject_id in enumerate(task.candidates)}
        slots[COMPARISON_SLOT] = png(task.comparison_id)
        return {slot: name for slot, name in slots.items() if name}

    def submit(self, assignment, item_id, data, *, idempotency_key, started_at, user_agent, viewport):
        task = self._task(assignment, item_id)
        if task is None:
            raise SimilarityVoteError("This task no longer exists.")
        record_similarity_vote(
            task=task,
            participant=assignment.participant,
            chosen=data.get("chosen", ""),
            none_similar=_is_none_similar(data),
            idempotency_key=idempotency_key,
            started_at=started_at,
            user_agent=user_agent,
            viewport=viewport,
            source="panel",
            trusted=True,
        )
        return None  # no feedback: saying "that was a check" would teach which tasks are checks

    def recent_answers(self, workflow, cutoff):
        # Similarity answers carry no assignment: the worker's answers in the workflow stand for it
        # (their assignment's tasks were made for it alone).
        return SimilarityVote.objects.filter(
            participant_id=OuterRef("participant_id"), workflow_id=workflow.pk, created_at__gte=cutoff
        )

    def answers(self, batch, assignments):
        by_assignment: dict[int, list[PanelAnswer]] = {a.pk: [] for a in assignments}
        owner = {(a.participant_id, int(t)): a.pk for a in assignments for t in a.subject_ids}
        participants = sorted({a.participant_id for a in assignments})
        for start in range(0, len(participants), 500):
            votes = (
                SimilarityVote.objects.filter(
                    workflow_id=batch.workflow_id, participant_id__in=participants[start : start + 500]
                )
                .select_related("task")
                .only(
                    "participant_id",
                    "task_id",
                    "chosen",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "task__check_candidate_id",
                    "task__candidates",
                )
            )
            for vote in votes:
                assignment_id = owner.get((vote.participant_id, vote.task_id))
                if assignment_id is None:
                    continue
                check = vote.task.check_candidate_id
                passed = None
                if check is not None:
                    # Choosing every tile would pass any check: it says nothing, so it fails.
                    passed = check in (vote.chosen or []) and len(vote.chosen) < len(vote.task.candidates)
                by_assignment[assignment_id].append(
                    PanelAnswer(
                        assignment_id=assignment_id,
                        created_at=vote.created_at,
                        started_at=vote.started_at,
                        finished_at=vote.finished_at,
                        gold_correct=passed,
                        attention_check=check is not None,
                    )
                )
        return by_assignment

    def preview_context(self, batch):
        workflow = batch.workflow
        rng = random.Random()
        ids = random_window(
            Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE), rng, workflow.n_candidates + 1
        )
        subjects = Subject.objects.in_bulk(ids)
        sample = [subjects[i] for i in ids if i in subjects]
        return {"sample": sample[0] if sample else None, "sample_candidates": sample[1:]}


def register() -> None:
    from core.tasklink_kinds import register_task_kind

    register_task_kind(Workflow.SIMILARITY, SimilarityTasks())
