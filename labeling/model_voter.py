"""The model as one more voter (Workflow.model_votes).

The active classifier's score (Subject.model_score, calibrated on held-out subjects) votes like a
volunteer whose confusion we know: its score is binned and each bin's likelihood ratio
Pr(bin | real) / Pr(bin | bogus) comes from the gold subjects it scored (mlcore.aggregation.model_confusion;
gold subjects are never trained on). On the vote path it is one SWAP step applied when a subject receives
its first counted vote; in the Dawid–Skene recompute it is one more worker whose confusion EM learns.

Cross-fitting: the model must never vote on a subject from its own training label (it would repeat the
crowd's answer back to it). Every round records the subject ids it trained on (`record_training_ids`,
a .npy file beside the checkpoint) and the model votes only on subjects outside the union of those sets
for every promoted version of the workflow. On the vote path the model votes only at a subject's first
counted vote: such a subject had no crowd label, so no round can have trained on it (training takes gold
subjects, never voted on by the model, and subjects with a P(real)); the recorded sets catch what is left
(a subject whose votes were all undone after a round took its label).

The guard against feedback loops: a subject whose P(real) includes the model's vote is marked
Subject.decided_with_model (cleared when its last counted vote is undone, rewritten by each recompute),
exports say so, and training leaves such subjects out unless Workflow.model_helped_training is on,
in which case they train at MODEL_HELPED_WEIGHT (loop.services._gather_round_data).
"""

from __future__ import annotations

import io

import numpy as np
from django.core.files.base import ContentFile

from core.models import ModelVersion, Subject, Workflow
from core.storage import open_stored, private_storage, random_name
from mlcore import aggregation as crowd

TRAIN_IDS_KEY = "train_ids_file"
# A label the model helped decide, when the workflow lets such labels train: half the weight of one the
# crowd decided alone, so the model's own mistakes teach it less than the volunteers' answers.
MODEL_HELPED_WEIGHT = 0.5
GOLD_CLASSES = {Subject.REAL: crowd.REAL, Subject.BOGUS: crowd.BOGUS}
# Union of training sets by the tuple of file names (a stored file never changes): one read per process.
_TRAINED: dict[tuple[str, ...], np.ndarray] = {}
_TRAINED_MAX = 64


# --- Cross-fitting: what each model trained on --------------------------------------------------------


def record_training_ids(version: ModelVersion, train_ids) -> str:
    """Store the subject ids `version` trained on (sorted int64 .npy, private storage); the file's name
    goes into version.config[TRAIN_IDS_KEY]. Returns the name."""
    buffer = io.BytesIO()
    np.save(buffer, np.unique(np.asarray(train_ids, dtype=np.int64)), allow_pickle=False)
    name = private_storage().save(
        random_name(f"models/{version.workflow_id}/v{version.version}-train-ids-", ".npy"),
        ContentFile(buffer.getvalue()),
    )
    config = dict(ModelVersion.objects.get(pk=version.pk).config or {})
    config[TRAIN_IDS_KEY] = name
    ModelVersion.objects.filter(pk=version.pk).update(config=config)
    version.config = config
    return name


def _read_ids(name: str) -> np.ndarray:
    with open_stored(name) as handle:
        return np.load(io.BytesIO(handle.read()), allow_pickle=False).astype(np.int64)


def trained_subject_ids(workflow: Workflow) -> tuple[np.ndarray, bool]:
    """(sorted ids of every subject a promoted classifier of the workflow trained on, complete). `complete`
    is False when a promoted version kept no record (trained before records were kept) or its record
    cannot be read: its training set is unknown."""
    names = list(
        ModelVersion.objects.filter(
            workflow=workflow, kind=ModelVersion.CLASSIFIER, promoted_at__isnull=False
        ).values_list(f"config__{TRAIN_IDS_KEY}", flat=True)
    )
    known = tuple(sorted(n for n in names if isinstance(n, str) and n))
    complete = len(known) == len(names)
    if known not in _TRAINED:
        parts = []
        for name in known:
            try:
                parts.append(_read_ids(name))
            except (OSError, ValueError):
                complete = False
        if len(_TRAINED) >= _TRAINED_MAX:
            _TRAINED.clear()
        union = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        if complete:
            _TRAINED[known] = union
        return union, complete
    return _TRAINED[known], complete


def _contains(sorted_ids: np.ndarray, ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return np.zeros(len(ids), dtype=bool)
    at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return sorted_ids[at] == ids


# --- The model's confusion, from gold -----------------------------------------------------------------


def gold_confusion(workflow: Workflow) -> np.ndarray:
    """The model's (2 × bins) confusion learned on the workflow's gold subjects it scored. Gold subjects
    are held out of every round, so these scores are honest ones. Uniform (no information) without gold."""
    rows = list(
        Subject.objects.filter(
            workflow=workflow, gold_label__in=list(GOLD_CLASSES), model_score__isnull=False
        ).values_list("gold_label", "model_score")
    )
    truth = np.array([GOLD_CLASSES[g] for g, _ in rows], dtype=np.int64)
    scores = np.array([min(max(float(s), 0.0), 1.0) for _, s in rows], dtype=float)
    return crowd.model_confusion(scores, truth)


def votes(workflow: Workflow) -> bool:
    return bool(workflow.model_votes) and workflow.kind == Workflow.REAL_BOGUS


# --- The vote path --------------------------------------------------------------------------------------


def first_vote_start(subject: Subject, workflow: Workflow, prior: float) -> float:
    """The P(real) a subject's first counted vote starts from: the prior, moved by the model's vote when
    the workflow lets the model vote and it may vote on this subject (a score from a model that never
    trained on it; never on gold). Marks the (locked) subject decided_with_model when the vote moved it."""
    start, helped = prior, False
    if (
        votes(workflow)
        and subject.model_score is not None
        and not subject.gold_label
        and workflow.active_model_id
        and not _contains(trained_subject_ids(workflow)[0], [subject.pk])[0]
    ):
        score = min(max(float(subject.model_score), 0.0), 1.0)
        confusion = gold_confusion(workflow)
        # A bin where the model says nothing (ratio 1) leaves the start as it is: no help, no mark.
        if crowd.model_log_lr([score], confusion)[0] != 0.0:
            start = crowd.model_swap_update(prior, score, confusion)
            helped = True
    _mark(subject, helped)
    return start


def _mark(subject: Subject, helped: bool) -> None:
    # Saved with the rest of the subject's vote-path fields (labeling.services), in the same UPDATE.
    subject.decided_with_model = helped


def forget_model_vote(subject: Subject) -> None:
    """The subject's last counted vote was undone: its P(real) is gone, the model's vote with it (the next
    first vote asks the model again)."""
    _mark(subject, False)


# --- The recompute --------------------------------------------------------------------------------------


def recompute_scores(workflow: Workflow, subject_ids: list[int]) -> np.ndarray:
    """The model's score for each subject (in `subject_ids` order) where it may vote in a recompute, NaN
    elsewhere: not gold, scored, outside every recorded training set. When a promoted version kept no record
    its training set is unknown, and the model votes only where it already voted at the first vote."""
    # By workflow, not by a list of ids (a long IN list breaks SQLite's parameter limit): only the
    # workflow's own subjects are ever scored by its model.
    rows = dict(
        Subject.objects.filter(workflow=workflow, model_score__isnull=False)
        .exclude(gold_label__in=list(GOLD_CLASSES))
        .values_list("pk", "model_score")
    )
    scores = np.array([rows.get(s, np.nan) for s in subject_ids], dtype=float)
    scores = np.clip(scores, 0.0, 1.0)  # NaN stays NaN
    if not workflow.active_model_id:
        return np.full(len(subject_ids), np.nan)
    trained, complete = trained_subject_ids(workflow)
    scores[_contains(trained, subject_ids)] = np.nan
    if not complete:
        flagged = set(
            Subject.objects.filter(workflow=workflow, decided_with_model=True).values_list("pk", flat=True)
        )
        scores[[s not in flagged for s in subject_ids]] = np.nan
    return scores


def run_with_model(
    workflow: Workflow, arrays, method: str, run_method
) -> tuple[crowd.AggregationResult, np.ndarray]:
    """The recompute's method with the model voting: Dawid–Skene with the model as one more worker, SWAP with
    its step added. Returns (result, which subjects the model's vote moved)."""
    scores = recompute_scores(workflow, arrays.subject_ids)
    n_items, n_workers = len(arrays.subject_ids), len(arrays.participant_ids)
    # Its confusion comes from gold, as on the vote path: EM could learn it from the crowd's posteriors, but
    # those hold the model's own votes, and the experts' answers are the one thing it never saw.
    confusion = gold_confusion(workflow)
    if method == "dawid_skene":
        result = crowd.dawid_skene_with_model(
            arrays.items,
            arrays.workers,
            arrays.labels,
            scores,
            n_items=n_items,
            n_workers=n_workers,
            model_confusion_fixed=confusion,
        )
    elif method == "swap":
        result = crowd.swap_with_model(run_method(workflow, arrays, method), scores, confusion)
    else:  # majority counts answers, not evidence: the model does not vote there
        return run_method(workflow, arrays, method), np.zeros(n_items, dtype=bool)
    return result, crowd.model_log_lr(scores, confusion) != 0.0


# --- The training guard ----------------------------------------------------------------------------------


def guard_training_labels(workflow: Workflow, train: list) -> tuple[list, int]:
    """Training labels (labeling.labels.TrainingLabel) without the model's help where the workflow says so:
    labels decided with the model's vote are left out (Workflow.model_helped_training off, the default)
    or weigh MODEL_HELPED_WEIGHT times their confidence (on). Returns (labels, how many it concerned)."""
    helped = set(
        Subject.objects.filter(workflow=workflow, decided_with_model=True).values_list("pk", flat=True)
    )
    concerned = [lab for lab in train if lab.subject_id in helped]
    if not concerned:
        return train, 0
    if not workflow.model_helped_training:
        return [lab for lab in train if lab.subject_id not in helped], len(concerned)
    for lab in concerned:
        lab.weight *= MODEL_HELPED_WEIGHT
    return train, len(concerned)
