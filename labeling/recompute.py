"""Full aggregation of a workflow from all its votes; the result replaces the incremental state.

Runs in the background (labeling.jobs: hourly and on demand) and from
`manage.py aggregate`. It reads every real/bogus vote of the workflow, runs one method of
mlcore.aggregation (Dawid–Skene by default), and writes Subject.p_real/aggregation_method
and each volunteer's ParticipantSkill (confusion, P_L, P_D, vote and gold tallies).

Volunteers keep voting meanwhile. Subjects are written in short transactions with their rows
locked; a subject that received a vote after the snapshot, or lost one to an undo, keeps its
incremental state (it already holds newer evidence) and is picked up by the next run. A vote
arriving after the write applies its incremental update on top of the recomputed value.

Retracted votes (undone, or skips replaced by an answer: labeling.models.VoteRetraction) are not
votes here: the arrays and the tallies are built from standing votes only.

Types (core.followups): after the real/bogus method, the typed votes (a follow-up answer that is one
of the workflow's K type keys) go through K-class Dawid–Skene (majority when the method is "majority";
SWAP is binary, so "swap" uses Dawid–Skene for the types too), with the gold subjects whose expert
subtype is a type key clamped to it. Each subject gets Subject.type_counts/type_posterior/decided_type
and each volunteer ParticipantSkill.type_confusion, with the same "keep newer" rule as P(real).
"""

from dataclasses import dataclass, field

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from core import answers
from core.models import Subject, Workflow
from labeling import model_voter
from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
from labeling.models import ParticipantSkill, Vote, VoteRetraction
from mlcore import aggregation as crowd

METHODS = ("majority", "dawid_skene", "swap")
WRITE_CHUNK = 500
CLASS_OF_ANSWER = {Subject.BOGUS: crowd.BOGUS, Subject.REAL: crowd.REAL}


@dataclass
class VolunteerSummary:
    participant_id: int
    pseudonym: str
    n_votes: int
    p_l: float
    p_d: float

    @property
    def informativeness(self) -> float:
        """P_L + P_D − 1: 0 for a coin or a volunteer who always says the same, 1 for a perfect one."""
        return self.p_l + self.p_d - 1.0


@dataclass
class RecomputeSummary:
    workflow_id: int
    method: str
    n_subjects: int = 0
    n_votes: int = 0
    n_participants: int = 0
    mean_p_real: float | None = None
    n_decided_real: int = 0
    n_decided_bogus: int = 0
    n_kept_newer: int = 0  # subjects that got a vote during the run and kept their incremental state
    n_typed_votes: int = 0
    n_kept_newer_types: int = 0
    n_iter: int = 0
    converged: bool | None = None
    retirement: dict = field(default_factory=dict)
    top: list[VolunteerSummary] = field(default_factory=list)
    bottom: list[VolunteerSummary] = field(default_factory=list)


@dataclass
class VoteArrays:
    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    subject_ids: list[int]
    participant_ids: list[int]
    last_vote_pk: int
    last_retraction_pk: int = 0


def vote_arrays(workflow: Workflow) -> VoteArrays:
    """The workflow's real/bogus votes as mlcore arrays, in the order they were cast.

    Subjects and participants are indexed in ascending id order.
    """
    # Votes store the answer's key; the workflow says which keys count as real or bogus.
    class_of_key = {k: CLASS_OF_ANSWER[side] for k, side in answers.class_map(workflow.answers).items()}
    # Read before the votes: an undo after this point is seen by _write_subjects as newer evidence.
    last_retraction_pk = _last_retraction_pk(workflow)
    rows = list(
        Vote.objects.filter(workflow=workflow, answer__in=list(class_of_key), retracted=False)
        .order_by("created_at", "pk")
        .values_list("pk", "subject_id", "participant_id", "answer")
    )
    return _as_arrays(
        [r[1:] for r in rows],
        class_of_key,
        last_vote_pk=max((r[0] for r in rows), default=0),
        last_retraction_pk=last_retraction_pk,
    )


def _last_retraction_pk(workflow: Workflow) -> int:
    return (
        VoteRetraction.objects.filter(vote__workflow=workflow)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
        or 0
    )


def _as_arrays(rows, label_of: dict, *, last_vote_pk: int, last_retraction_pk: int) -> VoteArrays:
    """(subject id, participant id, label key) rows in vote order → mlcore arrays, subjects and
    participants indexed in ascending id order."""
    subject_ids = sorted({r[0] for r in rows})
    participant_ids = sorted({r[1] for r in rows})
    item_of = {s: i for i, s in enumerate(subject_ids)}
    worker_of = {p: i for i, p in enumerate(participant_ids)}
    return VoteArrays(
        items=np.array([item_of[r[0]] for r in rows], dtype=np.int64),
        workers=np.array([worker_of[r[1]] for r in rows], dtype=np.int64),
        labels=np.array([label_of[r[2]] for r in rows], dtype=np.int64),
        subject_ids=subject_ids,
        participant_ids=participant_ids,
        last_vote_pk=last_vote_pk,
        last_retraction_pk=last_retraction_pk,
    )


def run_method(workflow: Workflow, arrays: VoteArrays, method: str) -> crowd.AggregationResult:
    n_items, n_workers = len(arrays.subject_ids), len(arrays.participant_ids)
    if method == "majority":
        return crowd.majority_vote(arrays.items, arrays.workers, arrays.labels, 2, n_items, n_workers)
    if method == "dawid_skene":
        return crowd.dawid_skene(
            arrays.items, arrays.workers, arrays.labels, n_classes=2, n_items=n_items, n_workers=n_workers
        )
    if method == "swap":
        gold = dict(
            Subject.objects.filter(
                pk__in=arrays.subject_ids, gold_label__in=list(CLASS_OF_ANSWER)
            ).values_list("pk", "gold_label")
        )
        item_of = {s: i for i, s in enumerate(arrays.subject_ids)}
        return crowd.swap(
            arrays.items,
            arrays.workers,
            arrays.labels,
            gold_items=np.array([item_of[s] for s in gold], dtype=np.int64),
            gold_labels=np.array([CLASS_OF_ANSWER[g] for g in gold.values()], dtype=np.int64),
            prior=workflow.swap_prior,
            pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
            n_items=n_items,
            n_workers=n_workers,
        )
    raise ValueError(f"Unknown aggregation method '{method}'; choose one of {', '.join(METHODS)}.")


def _write_subjects(
    workflow: Workflow,
    arrays: VoteArrays,
    p_real: np.ndarray,
    method: str,
    with_model: np.ndarray | None = None,
) -> int:
    """Store the posteriors; returns how many subjects were left alone because they changed.
    `with_model`: per subject, whether the model's vote is in its posterior (Subject.decided_with_model)."""
    kept = 0
    helped = dict(zip(arrays.subject_ids, with_model.tolist(), strict=True)) if with_model is not None else {}
    for start in range(0, len(arrays.subject_ids), WRITE_CHUNK):
        chunk = dict(
            zip(
                arrays.subject_ids[start : start + WRITE_CHUNK],
                p_real[start : start + WRITE_CHUNK],
                strict=True,
            )
        )
        with transaction.atomic():
            subjects = list(Subject.objects.select_for_update().filter(pk__in=list(chunk)).order_by("pk"))
            newer = set(
                Vote.objects.filter(workflow=workflow, subject_id__in=list(chunk), pk__gt=arrays.last_vote_pk)
                .exclude(answer=Vote.SKIP)
                .values_list("subject_id", flat=True)
            ) | set(
                VoteRetraction.objects.filter(
                    vote__workflow=workflow,
                    vote__subject_id__in=list(chunk),
                    pk__gt=arrays.last_retraction_pk,
                )
                .exclude(vote__answer=Vote.SKIP)
                .values_list("vote__subject_id", flat=True)
            )
            changed = []
            for subject in subjects:
                if subject.pk in newer:
                    kept += 1
                    continue
                subject.p_real = float(chunk[subject.pk])
                subject.aggregation_method = method
                subject.decided_with_model = bool(helped.get(subject.pk, False))
                changed.append(subject)
            Subject.objects.bulk_update(changed, ["p_real", "aggregation_method", "decided_with_model"])
    return kept


def _tallies_from_votes(workflow: Workflow, participant_ids: list[int]) -> dict[int, dict]:
    """Vote and gold tallies per participant, counted in the database at write time."""
    votes = Vote.objects.filter(workflow=workflow, participant_id__in=participant_ids, retracted=False)
    said_real = answers.keys_counting_as(workflow.answers, answers.REAL)
    said_bogus = answers.keys_counting_as(workflow.answers, answers.BOGUS)
    counted = said_real + said_bogus
    real_gold = Q(answer__in=counted, subject__gold_label=Subject.REAL)
    bogus_gold = Q(answer__in=counted, subject__gold_label=Subject.BOGUS)
    rows = votes.values("participant_id").annotate(
        n_votes=Count("pk", filter=Q(answer__in=counted)),
        real_seen=Count("pk", filter=real_gold),
        real_said_real=Count("pk", filter=real_gold & Q(answer__in=said_real)),
        bogus_seen=Count("pk", filter=bogus_gold),
        bogus_said_bogus=Count("pk", filter=bogus_gold & Q(answer__in=said_bogus)),
    )
    return {r.pop("participant_id"): r for r in rows}


def _locked_skills(workflow: Workflow, ids: list[int]) -> list[ParticipantSkill]:
    """The skill rows of these participants, created where missing and locked, in id order (inside the
    caller's transaction)."""
    for pid in ids:
        try:
            with transaction.atomic():
                ParticipantSkill.objects.get_or_create(workflow=workflow, participant_id=pid)
        except IntegrityError:  # created meanwhile by a vote; the row exists now
            pass
    return list(
        ParticipantSkill.objects.select_for_update()
        .filter(workflow=workflow, participant_id__in=ids)
        .order_by("pk")
    )


def _write_skills(workflow: Workflow, arrays: VoteArrays, result: crowd.AggregationResult) -> None:
    worker_of = {p: i for i, p in enumerate(arrays.participant_ids)}
    for start in range(0, len(arrays.participant_ids), WRITE_CHUNK):
        ids = arrays.participant_ids[start : start + WRITE_CHUNK]
        with transaction.atomic():
            skills = _locked_skills(workflow, ids)
            tallies = _tallies_from_votes(workflow, ids)
            now = timezone.now()
            for skill in skills:
                confusion = result.confusion[worker_of[skill.participant_id]]
                t = tallies.get(skill.participant_id, {})
                skill.confusion = [[float(x) for x in row] for row in confusion]
                skill.p_l = float(confusion[crowd.REAL, crowd.REAL])
                skill.p_d = float(confusion[crowd.BOGUS, crowd.BOGUS])
                skill.n_votes = t.get("n_votes", 0)
                skill.real_seen = t.get("real_seen", 0)
                skill.real_said_real = t.get("real_said_real", 0)
                skill.bogus_seen = t.get("bogus_seen", 0)
                skill.bogus_said_bogus = t.get("bogus_said_bogus", 0)
                skill.n_gold = skill.real_seen + skill.bogus_seen
                skill.n_gold_correct = skill.real_said_real + skill.bogus_said_bogus
                skill.updated_at = now
            ParticipantSkill.objects.bulk_update(
                skills,
                [
                    "confusion",
                    "p_l",
                    "p_d",
                    "n_votes",
                    "real_seen",
                    "real_said_real",
                    "bogus_seen",
                    "bogus_said_bogus",
                    "n_gold",
                    "n_gold_correct",
                    "updated_at",
                ],
            )


# --- Types -----------------------------------------------------------------------------------------


def type_vote_arrays(workflow: Workflow, classes: list[str]) -> VoteArrays:
    """The workflow's standing typed votes as mlcore arrays (labels: index in `classes`)."""
    class_of_key = {k: i for i, k in enumerate(classes)}
    # Read before the votes: what comes after these marks is newer evidence for _write_types.
    last_retraction_pk = _last_retraction_pk(workflow)
    last_pk = Vote.objects.filter(workflow=workflow).order_by("-pk").values_list("pk", flat=True).first() or 0
    rows = list(
        Vote.objects.filter(workflow=workflow, followup__in=classes, retracted=False, pk__lte=last_pk)
        .exclude(answer=Vote.SKIP)
        .order_by("created_at", "pk")
        .values_list("subject_id", "participant_id", "followup")
    )
    return _as_arrays(rows, class_of_key, last_vote_pk=last_pk, last_retraction_pk=last_retraction_pk)


def run_type_method(arrays: VoteArrays, classes: list[str], method: str) -> crowd.AggregationResult:
    """K-class aggregation of the typed votes; one type only is certain wherever it was named."""
    k, n_items, n_workers = len(classes), len(arrays.subject_ids), len(arrays.participant_ids)
    if k < 2:
        return crowd.AggregationResult(np.ones((n_items, 1)), np.ones((n_workers, 1, 1)), method)
    if method == "majority":
        return crowd.majority_vote(arrays.items, arrays.workers, arrays.labels, k, n_items, n_workers)
    class_of_key = {key: i for i, key in enumerate(classes)}
    gold = dict(
        Subject.objects.filter(pk__in=arrays.subject_ids, gold_subtype__in=classes).values_list(
            "pk", "gold_subtype"
        )
    )
    item_of = {s: i for i, s in enumerate(arrays.subject_ids)}
    return crowd.dawid_skene(
        arrays.items,
        arrays.workers,
        arrays.labels,
        n_classes=k,
        n_items=n_items,
        n_workers=n_workers,
        gold_items=np.array([item_of[s] for s in gold], dtype=np.int64) if gold else None,
        gold_labels=np.array([class_of_key[g] for g in gold.values()], dtype=np.int64) if gold else None,
    )


def _write_types(workflow: Workflow, arrays: VoteArrays, classes: list[str], posterior: np.ndarray) -> int:
    """Store the type posteriors, counts and decided types; returns how many subjects kept theirs
    because a typed vote came or went during the run."""
    from labeling.aggregation import decided_type

    counts = np.zeros((len(arrays.subject_ids), len(classes)), dtype=np.int64)
    np.add.at(counts, (arrays.items, arrays.labels), 1)
    kept = 0
    for start in range(0, len(arrays.subject_ids), WRITE_CHUNK):
        ids = arrays.subject_ids[start : start + WRITE_CHUNK]
        with transaction.atomic():
            subjects = list(Subject.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
            newer = set(
                Vote.objects.filter(
                    workflow=workflow, subject_id__in=ids, pk__gt=arrays.last_vote_pk, followup__in=classes
                ).values_list("subject_id", flat=True)
            ) | set(
                VoteRetraction.objects.filter(
                    vote__workflow=workflow,
                    vote__subject_id__in=ids,
                    vote__followup__in=classes,
                    pk__gt=arrays.last_retraction_pk,
                ).values_list("vote__subject_id", flat=True)
            )
            index = {s: start + i for i, s in enumerate(ids)}
            changed = []
            for subject in subjects:
                if subject.pk in newer:
                    kept += 1
                    continue
                i = index[subject.pk]
                subject.type_counts = {k: int(n) for k, n in zip(classes, counts[i], strict=True) if n}
                subject.type_posterior = {k: float(p) for k, p in zip(classes, posterior[i], strict=True)}
                subject.decided_type = decided_type(
                    subject.type_posterior, int(counts[i].sum()), workflow.type_confidence
                )
                changed.append(subject)
            Subject.objects.bulk_update(changed, ["type_counts", "type_posterior", "decided_type"])
    return kept


def _write_type_confusion(
    workflow: Workflow, arrays: VoteArrays, classes: list[str], result: crowd.AggregationResult
) -> None:
    worker_of = {p: i for i, p in enumerate(arrays.participant_ids)}
    # How many of each true type the volunteer has seen, by the posterior: a row they never saw is the
    # prior alone (70 % on the diagonal), which the heat map must not show as skill.
    k = len(classes)
    seen = np.stack(
        [
            np.bincount(arrays.workers, weights=result.posterior[arrays.items, t], minlength=len(worker_of))
            for t in range(k)
        ],
        axis=1,
    )
    for start in range(0, len(arrays.participant_ids), WRITE_CHUNK):
        ids = arrays.participant_ids[start : start + WRITE_CHUNK]
        with transaction.atomic():
            skills = _locked_skills(workflow, ids)
            for skill in skills:
                w = worker_of[skill.participant_id]
                skill.type_confusion = {
                    "classes": list(classes),
                    "matrix": [[float(x) for x in row] for row in result.confusion[w]],
                    "seen": [round(float(x), 3) for x in seen[w]],
                }
            ParticipantSkill.objects.bulk_update(skills, ["type_confusion"])
    # Volunteers whose typed votes were all undone name no type any more: no matrix to show.
    ParticipantSkill.objects.filter(workflow=workflow).exclude(
        participant_id__in=arrays.participant_ids
    ).exclude(type_confusion={}).update(type_confusion={})


def recompute_types(workflow: Workflow, method: str, summary: "RecomputeSummary") -> None:
    from core.followups import type_keys

    classes = type_keys(workflow.followups)
    if not classes:
        return
    arrays = type_vote_arrays(workflow, classes)
    summary.n_typed_votes = len(arrays.labels)
    if not len(arrays.labels):
        return
    result = run_type_method(arrays, classes, method)
    summary.n_kept_newer_types = _write_types(workflow, arrays, classes, result.posterior)
    _write_type_confusion(workflow, arrays, classes, result)


def volunteer_ranking(
    workflow: Workflow, n: int = 5
) -> tuple[list[VolunteerSummary], list[VolunteerSummary]]:
    """The n most and least informative volunteers (P_L + P_D − 1), among those with votes."""
    skills = list(
        ParticipantSkill.objects.filter(workflow=workflow, n_votes__gt=0).values_list(
            "participant_id", "n_votes", "p_l", "p_d"
        )
    )
    project = workflow.project
    rows = [VolunteerSummary(pid, project.pseudonym(pid), nv, pl, pd) for pid, nv, pl, pd in skills]
    rows.sort(key=lambda r: (-r.informativeness, -r.n_votes, r.participant_id))
    return rows[:n], list(reversed(rows[-n:])) if rows else []


def recompute_workflow(
    workflow_id: int, method: str = "dawid_skene", reevaluate: bool = True
) -> RecomputeSummary:
    """Recompute and store a workflow's aggregation; then (optionally) re-apply retirement."""
    if method not in METHODS:
        raise ValueError(f"Unknown aggregation method '{method}'; choose one of {', '.join(METHODS)}.")
    workflow = Workflow.objects.select_related("project").get(pk=workflow_id)
    summary = RecomputeSummary(workflow_id=workflow.pk, method=method)
    if workflow.kind != Workflow.REAL_BOGUS:
        return summary
    arrays = vote_arrays(workflow)
    summary.n_votes = len(arrays.labels)
    summary.n_subjects = len(arrays.subject_ids)
    summary.n_participants = len(arrays.participant_ids)
    if summary.n_votes:
        with_model = None
        if model_voter.votes(workflow):
            result, with_model = model_voter.run_with_model(workflow, arrays, method, run_method)
        else:
            result = run_method(workflow, arrays, method)
        p_real = result.p_real
        summary.n_iter = result.n_iter
        summary.converged = result.params.get("converged")
        summary.mean_p_real = float(p_real.mean())
        summary.n_decided_real = int((p_real >= workflow.swap_p_high).sum())
        summary.n_decided_bogus = int((p_real <= workflow.swap_p_low).sum())
        summary.n_kept_newer = _write_subjects(workflow, arrays, p_real, result.method, with_model)
        _write_skills(workflow, arrays, result)
    # After the real/bogus write, so that the retirement re-evaluation below sees both.
    recompute_types(workflow, method, summary)
    if reevaluate:
        from labeling.retirement import reevaluate_workflow

        summary.retirement = reevaluate_workflow(workflow.pk)
    summary.top, summary.bottom = volunteer_ranking(workflow)
    return summary
