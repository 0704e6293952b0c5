"""The learning loop: votes → labels → training round → model version → scores → the selector's ranking.

Triggering. After each committed vote `on_votes_committed` decides, cheaply, whether K new decided
labels (Workflow.train_every) have arrived since the last round; the owner's "train now" button calls
`request_training`. At most one round is queued or running per workflow (a partial unique constraint
on Job); extra triggers coalesce into the open one.

Jobs. A round is a Job of kind train on the gpu queue, run by the one job system (jobs.services):
created in the transaction that caused it, sent after commit, claimed once, every write conditional
on still owning it, recovered by the sweep when its worker dies.

A round (`training_round_job`): labels from labeling.labels → arrays from the local
cache (loop.arrays) → mlcore.train (CUDA when present) → evaluation on the fixed held-out set
(gold/expert subjects and subjects marked is_holdout, never trained on) → a ModelVersion with metrics,
checkpoint, SHA-256, plots → promotion only if it is not worse than the active model on the same
held-out set (or the owner forces it), after verifying the stored artifact → scoring every unretired
subject in chunks (P(real), uncertainty, acquisition score by the workflow's strategy) → the ranking
written to Subject.priority, which labeling.selection reads. The previous model stays active until the
new one is promoted, so a round that fails at any step changes nothing volunteers see.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from core.formats import json_safe
from core.models import ModelVersion, Subject, Workflow
from core.rounds import count_as_trained_on, fail_unfinished_versions, queue_round, round_succeeded
from core.storage import open_stored, private_storage, random_name
from jobs.models import Job
from jobs.services import GPU, JobRun, on_sweep, open_job, queue_job, register
from mlcore.calibration import apply_temperature

log = logging.getLogger(__name__)

DEFAULTS = {
    "train_time_budget_s": 900.0,
    "train_max_epochs": 30,
    "warm_start": True,
    "min_train_labels": 20,
    "mc_samples": 20,
    "score_precision": "auto",
    "score_chunk": 8192,
    "score_batch_size": 1024,
    "write_chunk": 5000,
    "promote_tolerance": 0.01,
    "min_heldout": 200,
    "promote_bootstrap": 1000,
    "cache_dir": None,
    # A type head is trained on the types with at least this many typed training labels (two such
    # types at least); the other types' labels are left out of the head.
    "min_type_examples": 5,
}


def loop_setting(name: str):
    return settings.SKYVOTE_LOOP.get(name, DEFAULTS[name])


class LoopError(RuntimeError):
    """A round cannot go on; the message says why, in words for the project owner."""


class ModelRejected(LoopError):
    """A model artifact that must never become active (missing, corrupt, foreign, tampered)."""


# ---------------------------------------------------------------------------------------------
# Triggering


def _counter_keys(workflow_id: int) -> tuple[str, str]:
    return f"skyvote:loop:{workflow_id}:votes", f"skyvote:loop:{workflow_id}:recount-after"


def on_votes_committed(workflow_id: int) -> None:
    """Called by labeling.services after each committed vote: maybe queue a training round.

    Counting labels is a query over the workflow's subjects, too much for every vote. Each vote adds
    at most one decided label, so after a count that says r more labels are needed, the
    next r − 1 votes cannot reach the threshold and skip the count (a cache counter). Labels that
    arrive without votes (expert gold, re-aggregation) are picked up by the next count or by the
    periodic sweep, which checks every workflow.
    """
    votes_key, after_key = _counter_keys(workflow_id)
    try:
        n = cache.incr(votes_key)
    except ValueError:
        cache.set(votes_key, 1, None)
        n = 1
    needed = cache.get(after_key)
    if needed is not None and n < needed:
        return
    try:
        workflow = Workflow.objects.filter(pk=workflow_id).first()
        if workflow is None:
            return
        remaining = check_trigger(workflow, reason="labels")
    except Exception:  # the vote is committed; a loop problem must not turn it into an error page
        log.exception("learning-loop trigger failed for workflow %s", workflow_id)
        return
    cache.set(votes_key, 0, None)
    cache.set(after_key, max(1, remaining), None)


@dataclass(frozen=True)
class LabelCounts:
    """A workflow's decided labels now, by the definitions a round uses: `decided` is what a round
    records as its `n_labels` (labeling.labels.training_labels), `held_out` what it evaluates on
    (heldout_labels), `trainable` what it trains on. The model page shows these three, so its
    numbers and the versions table's columns count the same things."""

    decided: int
    held_out: int

    @property
    def trainable(self) -> int:
        return self.decided - self.held_out


def label_counts(workflow: Workflow) -> LabelCounts:
    from labeling.labels import decided_label_counts

    return LabelCounts(*decided_label_counts(workflow))


def trainable_label_count(workflow: Workflow) -> int:
    """Decided labels a round can train on: labeling.labels' decided labels minus the held-out set.

    Gold (expert) and is_holdout subjects evaluate models and are never trained on, so experts
    labelling gold do not start rounds; a workflow with 40 gold subjects and K = 50 trains after 50
    volunteer labels, not 10.
    """
    return label_counts(workflow).trainable


def labels_until_next_round(workflow: Workflow, trainable: int | None = None) -> int:
    if trainable is None:
        trainable = trainable_label_count(workflow)
    return workflow.labels_at_last_round + workflow.train_every - trainable


def check_trigger(workflow: Workflow, reason: str = "labels") -> int:
    """Queue a round if K new trainable labels arrived; return how many more the next one needs.

    While a round is open the trigger coalesces into it (and the count is checked again K votes
    later). Workflow.train_every = 0 turns automatic rounds off.
    """
    if not workflow.train_every or workflow.kind != Workflow.REAL_BOGUS or not workflow.is_active:
        return max(1, workflow.train_every or 1_000_000)
    trainable = trainable_label_count(workflow)
    remaining = labels_until_next_round(workflow, trainable)
    if remaining > 0:
        return remaining
    if open_job(workflow, Job.TRAIN) is not None:
        return workflow.train_every
    request_training(workflow, reason=reason, decided=trainable)
    return workflow.train_every


def request_training(
    workflow: Workflow,
    *,
    user=None,
    force_promote: bool = False,
    reason: str = "owner",
    decided: int | None = None,
    train_config: dict | None = None,
    start_from_workflow: Workflow | None = None,
) -> tuple[Job, bool]:
    """Queue a training round for the workflow, or return the one already open: (job, created).

    Called from a request or from the trigger; the task is sent after the transaction commits.
    `decided` is the trainable-label count the round starts from (counted when not given);
    train_config overrides TrainConfig fields for this round (tests, benchmarks).
    start_from_workflow (same project): when the round runs without an active model and without a
    start_from model, it fine-tunes from that workflow's promoted model *as it is then* (the demo
    queues a Rubin round behind the ZTF round that makes that model).
    """
    if workflow.kind != Workflow.REAL_BOGUS:
        raise LoopError("Only real/bogus workflows train a classifier.")
    with transaction.atomic():
        existing = open_job(workflow, Job.TRAIN)
        if existing is not None:
            if force_promote and existing.status == Job.QUEUED and not existing.params.get("force_promote"):
                existing.params = {**existing.params, "force_promote": True}
                existing.save(update_fields=["params"])
            return existing, False
        if decided is None:
            decided = trainable_label_count(workflow)
        params = {"reason": reason, "force_promote": bool(force_promote), "labels_at_request": decided}
        if train_config:
            params["train_config"] = dict(train_config)
        if start_from_workflow is not None:
            if start_from_workflow.project_id != workflow.project_id or start_from_workflow.pk == workflow.pk:
                raise LoopError("A round can start from another workflow of the same project only.")
            params["start_from_workflow"] = start_from_workflow.pk
        return queue_round(workflow, Job.TRAIN, params, counted=decided, user=user)


def request_scoring(workflow: Workflow, *, user=None, reason: str = "promoted") -> tuple[Job, bool]:
    """Queue a re-scoring of the pool with the active model (after a manual promotion)."""
    with transaction.atomic():
        existing = open_job(workflow, Job.SCORE)
        if existing is not None and existing.status == Job.QUEUED:
            return existing, False
        job, _ = queue_job(
            Job.SCORE, project=workflow.project, workflow=workflow, params={"reason": reason}, user=user
        )
    return job, True


# ---------------------------------------------------------------------------------------------
# Transfer: starting a workflow's first round from another workflow's model


def start_from_candidates(workflow: Workflow, user) -> list[ModelVersion]:
    """Models the workflow's first round may fine-tune from: the promoted (active) classifiers of the
    other real/bogus workflows in projects the user can read."""
    from core.permissions import projects_readable_by

    return list(
        ModelVersion.objects.filter(
            kind=ModelVersion.CLASSIFIER,
            status=ModelVersion.ACTIVE,
            workflow__kind=Workflow.REAL_BOGUS,
            workflow__project__in=projects_readable_by(user),
        )
        .exclude(workflow=workflow)
        .select_related("workflow__project")
        .order_by("workflow__project__slug", "workflow__slug", "-version")
    )


def set_start_from(workflow: Workflow, version_id: int | None, user) -> ModelVersion | None:
    """Choose (or, with None, clear) the model the workflow's first round fine-tunes from; LoopError
    for a model the user may not use. It applies while the workflow has no active model."""
    if workflow.kind != Workflow.REAL_BOGUS:
        raise LoopError("Only real/bogus workflows train a classifier.")
    version = None
    if version_id is not None:
        version = next((v for v in start_from_candidates(workflow, user) if v.pk == version_id), None)
        if version is None:
            raise LoopError(
                "Choose the promoted model of another real/bogus workflow in a project you can read."
            )
    Workflow.objects.filter(pk=workflow.pk).update(start_from=version)
    workflow.start_from = version
    return version


def model_label(version: ModelVersion) -> str:
    return f"{version.workflow.project.slug}/{version.workflow.slug} v{version.version}"


# ---------------------------------------------------------------------------------------------
# Models: artifacts, verification, promotion


def load_model_version(version: ModelVersion, device=None):
    """Load a version's checkpoint after checking the stored file against its recorded SHA-256.

    Raises ModelRejected for a missing, altered, corrupt or foreign file (mlcore.checkpoint refuses
    anything that is not one of our plain-data checkpoints, with torch.load(weights_only=True)).
    """
    from mlcore.checkpoint import CheckpointError, load_checkpoint

    if not version.artifact or not version.artifact_sha256:
        raise ModelRejected(f"Model v{version.version} has no stored checkpoint.")
    try:
        with open_stored(version.artifact.name) as handle:
            data = handle.read()
    except OSError as exc:
        raise ModelRejected(f"Model v{version.version}: cannot read its checkpoint ({exc}).") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != version.artifact_sha256:
        raise ModelRejected(
            f"Model v{version.version}: the checkpoint file changed since it was registered "
            f"(SHA-256 {digest[:12]}… ≠ {version.artifact_sha256[:12]}…); it will not be used."
        )
    try:
        return load_checkpoint(io.BytesIO(data), device=device)
    except CheckpointError as exc:
        raise ModelRejected(f"Model v{version.version}: {exc}") from None


def activate_version(version: ModelVersion, *, user=None) -> ModelVersion:
    """Make a verified version the workflow's active model (the previous one is superseded)."""
    load_model_version(version)  # raises ModelRejected: a bad file never becomes active
    if version.status == ModelVersion.FAILED:
        raise ModelRejected(f"Model v{version.version} failed and cannot be promoted.")
    now = timezone.now()
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=version.workflow_id)
        if workflow.active_model_id and workflow.active_model_id != version.pk:
            ModelVersion.objects.filter(pk=workflow.active_model_id, status=ModelVersion.ACTIVE).update(
                status=ModelVersion.RETIRED
            )
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.ACTIVE, promoted_at=now)
        workflow.active_model = version
        workflow.save(update_fields=["active_model"])
    version.status, version.promoted_at = ModelVersion.ACTIVE, now
    return version


def promote_version(version: ModelVersion, *, user=None) -> Job | None:
    """The owner's "promote" button: activate (verified) and queue re-scoring of the pool."""
    activate_version(version, user=user)
    _record_forced_promotion(version, user)
    workflow = Workflow.objects.get(pk=version.workflow_id)
    job, _ = request_scoring(workflow, user=user, reason=f"v{version.version} promoted")
    return job


def _record_forced_promotion(version: ModelVersion, user) -> None:
    """The model page says why each version is active: here, the owner's choice (with what the round
    had decided, kept for the record)."""
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        metrics = locked.metrics if isinstance(locked.metrics, dict) else {}
        earlier = metrics.get("promotion") if isinstance(metrics.get("promotion"), dict) else {}
        who = getattr(user, "username", "") or "the owner"
        reason = f"Promoted by {who} on {timezone.now():%Y-%m-%d %H:%M} UTC."
        if earlier.get("reason") and not earlier.get("promoted"):
            reason += f" The round had decided: {earlier['reason']}"
        metrics["promotion"] = {**earlier, "promoted": True, "forced": True, "reason": reason}
        locked.metrics = json_safe(metrics)
        locked.save(update_fields=["metrics"])
    version.metrics = locked.metrics


def _next_version_number(workflow: Workflow) -> int:
    current = ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.CLASSIFIER).aggregate(
        m=Max("version")
    )
    return (current["m"] or 0) + 1


def _save_figure(fig, stem: str) -> str:
    """Store a plot in private storage under a random name; the model page serves it (loop.views)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return private_storage().save(random_name(f"{stem}-", ".png"), ContentFile(buffer.getvalue()))


LEARNING_CURVE_NEEDS_TWO = "needs two versions to draw a line"


def learning_curve_points(workflow_id: int, up_to: int | None = None) -> list[tuple[int, float]]:
    """The learning curve: (labels trained on, held-out AUC) of each version with a held-out AUC,
    one point per version (up to version `up_to` when given); the model page says how many there are
    (a line needs two)."""
    versions = ModelVersion.objects.filter(workflow_id=workflow_id, kind=ModelVersion.CLASSIFIER)
    if up_to is not None:
        versions = versions.filter(version__lte=up_to)
    return sorted(
        (v.n_train, v.metrics["heldout"]["roc_auc"])
        for v in versions.only("n_train", "metrics")
        if isinstance(v.metrics, dict)
        and isinstance(v.metrics.get("heldout"), dict)
        and v.metrics["heldout"].get("roc_auc") is not None
    )


PLOTS = ("roc", "reliability", "learning_curve")


def _plot_data(y_true: np.ndarray, p_real: np.ndarray, name: str, extra_curves: dict | None) -> dict:
    """What the plots are drawn from: the held-out truth and each candidate's held-out P(real)."""
    curves = {name: p_real, **(extra_curves or {})}
    return {
        "y": [int(v) for v in y_true],
        "curves": {key: [round(float(p), 6) for p in values] for key, values in curves.items()},
    }


def has_plot(version: ModelVersion | None, plot: str) -> bool:
    """Whether the version's plot can be shown: stored already, or drawable from its held-out data."""
    metrics = (version.metrics or {}) if version is not None else {}
    if plot not in PLOTS:
        return False
    if (metrics.get("plots") or {}).get(plot):
        return True
    if not (metrics.get("plot_data") or {}).get("y"):
        return False
    return plot != "learning_curve" or bool(learning_curve_points(version.workflow_id, up_to=version.version))


def _draw_plot(version: ModelVersion, plot: str):
    from mlcore.plots import learning_curve_figure, reliability_figure, roc_figure

    data = (version.metrics or {}).get("plot_data") or {}
    y_true = np.asarray(data.get("y") or [], dtype=np.int8)
    curves = {k: np.asarray(v, dtype=np.float64) for k, v in (data.get("curves") or {}).items()}
    name = f"v{version.version}"
    if plot == "roc" and name in curves:
        return roc_figure({key: (y_true, p) for key, p in curves.items()})
    if plot == "reliability" and name in curves:
        return reliability_figure(y_true, curves[name], n_bins=10, name=name)
    if plot == "learning_curve":
        points = learning_curve_points(version.workflow_id, up_to=version.version)
        if points:
            n_labels, aucs = zip(*points, strict=True)
            return learning_curve_figure(
                {"held-out AUC": (list(n_labels), list(aucs), None)},
                ylabel="held-out ROC AUC",
                title="Learning curve",
                note=LEARNING_CURVE_NEEDS_TWO if len(points) < 2 else "",
            )
    return None


def plot_file(version: ModelVersion, plot: str) -> str | None:
    """The private-storage name of a version's plot PNG, drawn on first request and kept: a round does
    not spend seconds on figures nobody may open (its held-out data is in the metrics)."""
    if plot not in PLOTS:
        return None
    stored = ((version.metrics or {}).get("plots") or {}).get(plot)
    if stored and private_storage().exists(stored):
        return stored
    fig = _draw_plot(version, plot)
    if fig is None:
        return None
    name = _save_figure(fig, f"models/{version.workflow_id}/v{version.version}-{plot.replace('_', '-')}")
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        metrics = locked.metrics or {}
        existing = (metrics.get("plots") or {}).get(plot)
        if existing and existing != stored and private_storage().exists(existing):
            private_storage().delete(name)  # another request drew it at the same time: keep theirs
            name = existing
        else:
            metrics["plots"] = {**(metrics.get("plots") or {}), plot: name}
            locked.metrics = metrics
            locked.save(update_fields=["metrics"])
    version.metrics = locked.metrics
    return name


# ---------------------------------------------------------------------------------------------
# The training round


@dataclass
class RoundData:
    train_ids: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    heldout_ids: np.ndarray
    heldout_y: np.ndarray
    pool_ids: np.ndarray
    n_labels: int
    skipped: list[tuple[int, str]] = field(default_factory=list)


def heldout_labels(workflow: Workflow, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed held-out set: gold subjects (expert label) and is_holdout subjects with a decided label.

    Returns (subject ids, y) with y = 1 for real. Never trained on.
    """
    if labels is None:
        from labeling.labels import training_labels

        labels = training_labels(workflow)
    chosen = [
        (lab.subject_id, 1 if lab.p_real >= 0.5 else 0) for lab in labels if lab.is_gold or lab.is_holdout
    ]
    if not chosen:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int8)
    ids, y = zip(*chosen, strict=True)
    return np.asarray(ids, dtype=np.int64), np.asarray(y, dtype=np.int8)


def input_spec(workflow: Workflow):
    """The model input the workflow asks for (mlcore.prep.InputSpec); LoopError if it is unusable."""
    from mlcore.prep import InputSpec

    try:
        return InputSpec(
            size=workflow.model_input_size,
            pixel_scale=workflow.model_pixel_scale,
            uncertainty=workflow.model_uncertainty_channel,
        )
    except ValueError as exc:
        raise LoopError(f"The workflow's model input settings are not usable: {exc}") from None


def model_config_for(spec):
    """A VGG6 config for the input spec (input_scale follows the side: unit-RMS inputs)."""
    from mlcore.models import ModelConfig

    try:
        return ModelConfig(
            input_size=spec.size,
            in_channels=spec.channels,
            input_scale=float(spec.size),
            pixel_scale=spec.pixel_scale,
        )
    except ValueError as exc:
        raise LoopError(f"No model fits this input ({exc}); choose a larger input size.") from None


def spec_of(model):
    """The input spec a loaded model was trained on (from its config, saved in the checkpoint)."""
    from mlcore.prep import InputSpec

    return InputSpec.from_model_config(model.config)


def _gather_round_data(workflow: Workflow, run: JobRun | None, progress, spec=None) -> RoundData:
    from labeling.labels import training_labels
    from labeling.model_voter import guard_training_labels
    from loop.arrays import ArrayCache, loader_for

    labels = training_labels(workflow)
    heldout_ids, heldout_y = heldout_labels(workflow, labels)
    train = [lab for lab in labels if not (lab.is_gold or lab.is_holdout)]
    # Labels the model helped decide: left out, or down-weighted, so it does not learn its own mistakes.
    train, n_model_helped = guard_training_labels(workflow, train)
    if n_model_helped and run is not None:
        run.log(
            f"{n_model_helped} labels were decided with the model's vote: "
            + ("down-weighted" if workflow.model_helped_training else "left out of training")
        )
    minimum = int(loop_setting("min_train_labels"))
    if len(train) < minimum:
        raise LoopError(
            f"Only {len(train)} decided labels outside the held-out set; a round needs at least {minimum}."
        )
    targets = np.array([lab.p_real for lab in train], dtype=np.float64)
    if targets.min() >= 0.5 or targets.max() < 0.5:
        raise LoopError("All training labels say the same class; a classifier needs real and bogus examples.")
    if len(heldout_y) == 0 or heldout_y.min() == heldout_y.max():
        raise LoopError(
            "The held-out set needs both real and bogus subjects: mark gold subjects (expert labels) "
            "or held-out subjects with decided labels before training."
        )
    pool_ids = np.fromiter(
        Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True),
        dtype=np.int64,
    )
    train_ids = np.array([lab.subject_id for lab in train], dtype=np.int64)
    weights = np.array([lab.weight for lab in train], dtype=np.float64)
    cache_ = ArrayCache.for_workflow(workflow.pk, spec)
    wanted = np.unique(np.concatenate([train_ids, heldout_ids, pool_ids]))
    n_missing = len(cache_.missing(wanted))
    if n_missing and run is not None:
        run.log(f"caching {n_missing} new triplets from storage")
    skipped = cache_.fill(
        wanted,
        loader_for(cache_.spec),
        progress=lambda done, total: progress(done / max(total, 1), f"cached {done}/{total} new triplets"),
    )
    if skipped:
        bad = np.array([s for s, _ in skipped], dtype=np.int64)
        keep = ~np.isin(train_ids, bad)
        train_ids, targets, weights = train_ids[keep], targets[keep], weights[keep]
        keep_h = ~np.isin(heldout_ids, bad)
        heldout_ids, heldout_y = heldout_ids[keep_h], heldout_y[keep_h]
        pool_ids = pool_ids[~np.isin(pool_ids, bad)]
        if run is not None:
            first = "; ".join(reason for _, reason in skipped[:3])
            run.log(f"skipped {len(skipped)} subjects whose arrays could not be read ({first})")
    return RoundData(train_ids, targets, weights, heldout_ids, heldout_y, pool_ids, len(labels), skipped)


@dataclass
class TypeLabels:
    """What a round's type head learns: its classes (the workflow's type keys with enough examples),
    per training subject the class index (-1 = no type), per held-out subject the expert's type index
    (-1 = none), and a sentence saying why there is no head when `classes` is empty."""

    classes: list[str]
    train: np.ndarray
    heldout: np.ndarray
    counts: dict[str, int]
    note: str = ""


def type_labels(workflow: Workflow, train_ids: np.ndarray, heldout_ids: np.ndarray) -> TypeLabels:
    """The type of each training and held-out subject for a type head.

    A subject's type is the expert's (gold_subtype) where it is one of the workflow's type keys, else
    the crowd's decided type (decided_type). Held-out subjects are evaluated on expert types only, as
    the real/bogus held-out set is. Types with fewer than `min_type_examples` training labels are left
    out of the head (a class with two examples is not learnt, only memorised).
    """
    from core.followups import NOT_SURE, type_keys

    keys = type_keys(workflow.followups)
    empty = np.full(len(train_ids), -1, np.int64), np.full(len(heldout_ids), -1, np.int64)
    if len(keys) < 2:
        return TypeLabels([], *empty, {}, "the workflow has fewer than two types")
    known = set(keys)
    rows = (
        Subject.objects.filter(workflow=workflow)
        .exclude(decided_type="", gold_subtype="")
        .values_list("pk", "decided_type", "gold_subtype", "gold_label")
    )
    crowd, expert = {}, {}
    for pk, decided, gold_subtype, gold_label in rows:
        if gold_label and gold_subtype in known:
            expert[pk] = gold_subtype
        if decided in known and decided != NOT_SURE:
            crowd[pk] = decided
    train_types = [expert.get(int(i)) or crowd.get(int(i)) for i in train_ids]
    counts = {k: 0 for k in keys}
    for t in train_types:
        if t:
            counts[t] += 1
    minimum = int(loop_setting("min_type_examples"))
    classes = [k for k in keys if counts[k] >= minimum]
    if len(classes) < 2:
        note = (
            f"no type head: {len(classes)} type{'s' if len(classes) != 1 else ''} with at least {minimum} "
            f"typed training labels ({sum(counts.values())} typed labels in all); a head needs two"
        )
        return TypeLabels([], *empty, counts, note)
    index = {k: i for i, k in enumerate(classes)}
    train = np.array([index.get(t, -1) if t else -1 for t in train_types], dtype=np.int64)
    heldout = np.array([index.get(expert.get(int(i), ""), -1) for i in heldout_ids], dtype=np.int64)
    return TypeLabels(classes, train, heldout, counts)


def _type_evaluation(model, cache_, ids: np.ndarray, types: TypeLabels) -> dict:
    """The type head on held-out subjects with an expert type: confusion matrix and accuracy."""
    from mlcore.data import TripletArrayDataset
    from mlcore.metrics import type_metrics
    from mlcore.score import score

    typed = types.heldout >= 0
    if not typed.any():
        found = type_metrics(np.empty(0, np.int64), np.empty((0, len(types.classes))), types.classes)
    else:
        dataset = TripletArrayDataset(cache_.read(ids[typed]), preprocessed=True)
        probs = score(
            model, dataset, batch_size=int(loop_setting("score_batch_size")), features=False
        ).type_probs
        found = type_metrics(types.heldout[typed], probs, types.classes)
    return found


def _train_config(job: Job, n_train: int):
    from mlcore.train import TrainConfig

    options = {
        "epochs": int(loop_setting("train_max_epochs")),
        "time_budget_s": float(loop_setting("train_time_budget_s")),
        "batch_size": 64,
        "seed": 0,
    }
    options.update((job.params or {}).get("train_config") or {})
    return TrainConfig(**options)


def _data_hash(ids: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> str:
    digest = hashlib.sha256(b"skyvote-labels-v1|")
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(targets, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _finite_metrics(metrics: dict) -> bool:
    for key, value in metrics.items():
        if (
            isinstance(value, float)
            and not math.isfinite(value)
            and key not in {"eer_threshold", "mdr_at_1pct_fpr_threshold"}
        ):
            return False
    return math.isfinite(metrics.get("roc_auc", float("nan")))


def _predict(model, cache_, ids: np.ndarray) -> np.ndarray:
    from mlcore.data import TripletArrayDataset
    from mlcore.score import score

    if len(ids) == 0:
        return np.empty(0, dtype=np.float32)
    dataset = TripletArrayDataset(cache_.read(ids), preprocessed=True)
    return score(model, dataset, batch_size=int(loop_setting("score_batch_size")), features=False).p_real


def _predict_any(workflow: Workflow, model, cache_, ids: np.ndarray) -> np.ndarray:
    """As _predict, for a model whose input may differ from the round's (the active model before the
    owner changed the workflow's input settings): its own cache, filled for `ids`."""
    from loop.arrays import ArrayCache, loader_for

    spec = spec_of(model)
    if spec != cache_.spec:
        cache_ = ArrayCache.for_workflow(workflow.pk, spec)
        skipped = cache_.fill(ids, loader_for(spec))
        if skipped:
            raise ModelRejected(
                f"{len(skipped)} held-out subjects cannot be prepared for its input ({spec.key()})."
            )
    return _predict(model, cache_, ids)


def _heldout_logits(model, cache_, ids: np.ndarray) -> np.ndarray:
    """The model's raw logits (no calibration temperature) on the given cached subjects."""
    from mlcore.data import TripletArrayDataset
    from mlcore.score import score

    if len(ids) == 0:
        return np.empty(0, dtype=np.float64)
    dataset = TripletArrayDataset(cache_.read(ids), preprocessed=True)
    batch = int(loop_setting("score_batch_size"))
    return score(model, dataset, batch_size=batch, features=False, temperature=1.0).logits.astype(np.float64)


def _calibrate(model, logits: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray, dict]:
    """Fit the model's calibration (temperature and bias) on the held-out set and set it on the model
    (the checkpoint saves it; scoring applies it). Returns (the calibration record for the metrics,
    calibrated held-out P(real), held-out metrics of the calibrated scores).

    The calibration is none, a temperature, or a temperature and bias, whichever has the lowest
    cross-fitted ECE (mlcore.calibration.choose_calibration). The stored (T, b) is fitted on every
    held-out item; the ECE reported as calibrated is cross-fitted (each half calibrated by the fit on
    the other half), since fitting and measuring on the same items
    would flatter it. The held-out metrics' "ece" is that cross-fitted value too.
    """
    from mlcore.calibration import bootstrap_ece, choose_calibration, set_model_temperature
    from mlcore.metrics import evaluate, expected_calibration_error

    choice = choose_calibration(logits, y, seed=0)
    fitted = choice.fitted
    set_model_temperature(model, fitted.temperature, fitted.bias)
    p_raw = apply_temperature(logits, 1.0)
    p_cal = apply_temperature(logits, fitted.temperature, fitted.bias)
    n_boot = int(loop_setting("promote_bootstrap"))
    ece_raw = expected_calibration_error(y, p_raw)
    ece_cal = expected_calibration_error(y, fitted.p_out_of_fold)
    record = {
        "method": choice.method,
        "ece_by_method": choice.ece_by_method,
        "temperature": fitted.temperature,
        "bias": fitted.bias,
        "fold_params": [list(p) for p in fitted.fold_params],
        "cross_fitted": True,
        "n": int(len(y)),
        "ece_uncalibrated": ece_raw,
        "ece_uncalibrated_ci": list(bootstrap_ece(y, p_raw, n_boot, seed=0)),
        "ece_calibrated": ece_cal,
        "ece_calibrated_ci": list(bootstrap_ece(y, fitted.p_out_of_fold, n_boot, seed=0)),
        "ece_calibrated_in_sample": expected_calibration_error(y, p_cal),
    }
    metrics = evaluate(y, p_cal)
    metrics["ece"] = ece_cal
    return record, p_cal, metrics


def _promotion_decision(y, p_new, p_old, previous) -> dict:
    """The automatic promotion rule (mlcore.calibration.promotion_decision) with the loop's settings."""
    from mlcore.calibration import promotion_decision

    decision = promotion_decision(
        y,
        p_new,
        p_old,
        min_heldout=int(loop_setting("min_heldout")),
        tolerance=float(loop_setting("promote_tolerance")),
        n_boot=int(loop_setting("promote_bootstrap")),
        seed=0,
        old_label=f"the active v{previous.version}" if previous is not None else "the active model",
    )
    if previous is not None and p_old is None and decision["promoted"]:
        # The active model's file is unusable: any verified model that passes the minimum is better.
        decision["reason"] += f" The active v{previous.version} could not be evaluated."
    return decision


def survey_metrics(ids: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict:
    """Held-out AUC and accuracy per survey of the subjects ("ztf", "rubin"; "other" for files and
    synthetic data without one): a workflow may mix surveys, and one average can hide a weak one.
    AUC is None where a survey's held-out subjects are all of one class."""
    from mlcore.metrics import roc_auc

    surveys = dict(Subject.objects.filter(pk__in=[int(i) for i in ids]).values_list("pk", "survey"))
    names = np.array([surveys.get(int(i)) or "other" for i in ids])
    y, p = np.asarray(y, dtype=np.int8), np.asarray(p, dtype=np.float64)
    out = {}
    for name in sorted(set(names.tolist())):
        sel = names == name
        ys, ps = y[sel], p[sel]
        both = 0 < int(ys.sum()) < len(ys)
        out[name] = {
            "n": int(sel.sum()),
            "n_real": int(ys.sum()),
            "roc_auc": float(roc_auc(ys, ps)) if both else None,
            "accuracy": float(((ps >= 0.5) == (ys == 1)).mean()),
        }
    return out


def _start_from_of_round(workflow: Workflow, params: dict, run: JobRun) -> ModelVersion | None:
    """The workflow's start_from model, or the one a round parameter names: the promoted model of
    another workflow of the project at the time the round runs (recorded as start_from, so the
    model page shows where the first model came from)."""
    if workflow.start_from is not None or not params.get("start_from_workflow"):
        return workflow.start_from
    other = (
        Workflow.objects.select_related("active_model__workflow__project")
        .filter(pk=params["start_from_workflow"], project_id=workflow.project_id, kind=Workflow.REAL_BOGUS)
        .first()
    )
    if other is None or other.active_model is None:
        run.log("the workflow to start from has no promoted model yet: training from scratch")
        return None
    Workflow.objects.filter(pk=workflow.pk, start_from__isnull=True).update(start_from=other.active_model)
    workflow.start_from = other.active_model
    return other.active_model


def _initial_weights(workflow: Workflow, previous, target_config, run: JobRun):
    """(initial model or None, transfer source or None, layer report or None) for a round.

    With an active model: its weights (warm start), moved onto the workflow's current input when the
    owner changed it (mlcore.models.transfer_weights). Without one, from the workflow's start_from
    model (another workflow's, e.g. ZTF's for a Rubin workflow): the transfer source is then
    returned too, and the round trains a from-scratch model beside it for comparison.
    """
    from mlcore.models import transfer_weights

    if previous is not None:
        if not loop_setting("warm_start"):
            return None, None, None
        try:
            model = load_model_version(previous).model
        except ModelRejected as exc:
            run.log(f"cold start: {exc}")
            return None, None, None
        if model.config == target_config:
            return model, None, None
        adapted, _ = transfer_weights(model, target_config)
        if spec_of(model) != spec_of(adapted):
            run.log(
                f"the model input changed ({spec_of(model).key()} → {spec_of(adapted).key()}): "
                f"warm start from v{previous.version}'s matching layers"
            )
        else:
            run.log(
                f"the types changed ({', '.join(model.config.type_classes) or 'no type head'} → "
                f"{', '.join(target_config.type_classes) or 'no type head'}): warm start from "
                f"v{previous.version}, with a new type head"
            )
        return adapted, None, None
    source = _start_from_of_round(workflow, run.job.params or {}, run)
    if source is None:
        return None, None, None
    label = f"{source.workflow.project.slug}/{source.workflow.slug} v{source.version}"
    try:
        if source.kind != ModelVersion.CLASSIFIER:
            raise ModelRejected(f"{label} is not a real/bogus classifier.")
        model = load_model_version(source).model
    except ModelRejected as exc:
        run.log(f"cannot start from {label} ({exc}); training from scratch")
        return None, None, None
    adapted, layers = transfer_weights(model, target_config)
    info = {
        "id": source.pk,
        "workflow": f"{source.workflow.project.slug}/{source.workflow.slug}",
        "version": source.version,
        "label": label,
        "input": spec_of(model).key(),
    }
    run.log(
        f"fine-tuning from {label} (input {info['input']} → {spec_of(adapted).key()}; "
        f"{len(layers['copied'])} layers copied, {len(layers['adapted'])} adapted, {len(layers['fresh'])} fresh)"
    )
    return adapted, info, {k: list(v) for k, v in layers.items()}


def _run_summary(result, metrics: dict, by_survey: dict) -> dict:
    """One trained candidate of a transfer round, for the comparison on the model page."""
    return {
        "roc_auc": metrics["roc_auc"],
        "accuracy": metrics["accuracy"],
        "ece": metrics["ece"],
        "by_survey": by_survey,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_reason": result.stopped_reason,
        "val_auc": result.best.val_auc,
        "duration_s": round(result.duration_s, 3),
    }


@register(
    Job.TRAIN,
    queue=GPU,
    label="Training round",
    on_abandon=fail_unfinished_versions,
    on_failed=fail_unfinished_versions,
    plain_errors=(LoopError, ValueError),
)
def training_round_job(run: JobRun) -> None:
    """A whole training round; a failure leaves the active model untouched."""
    _training_round(run.job, run)


def _training_round(job: Job, run: JobRun) -> ModelVersion:
    from labeling.model_voter import record_training_ids
    from loop.arrays import ArrayCache
    from mlcore.data import TripletArrayDataset
    from mlcore.metrics import evaluate
    from mlcore.train import TrainingError, train_classifier

    timings: dict[str, float] = {}
    workflow = Workflow.objects.select_related(
        "project", "active_model", "start_from__workflow__project"
    ).get(pk=job.workflow_id)
    previous = workflow.active_model
    run.log(f"round for {workflow} ({job.params.get('reason', 'owner')})")
    spec = input_spec(workflow)
    target_config = model_config_for(spec)

    # 1. export: labels and arrays
    started = time.perf_counter()
    data = _gather_round_data(workflow, run, run.phase(0.0, 0.08), spec)
    count_as_trained_on(workflow, trainable_label_count(workflow))
    cache_ = ArrayCache.for_workflow(workflow.pk, spec)
    x_train = cache_.read(data.train_ids)
    types = type_labels(workflow, data.train_ids, data.heldout_ids)
    if types.classes:
        target_config = dataclasses.replace(target_config, type_classes=tuple(types.classes))
        run.log(
            f"type head over {len(types.classes)} types ({int((types.train >= 0).sum())} typed training "
            f"labels, {int((types.heldout >= 0).sum())} held-out subjects with an expert type)"
        )
    else:
        run.log(types.note)
    timings["export"] = time.perf_counter() - started
    run.log(
        f"{len(data.train_ids)} training labels, {len(data.heldout_ids)} held out, "
        f"{len(data.pool_ids)} unretired subjects to score; model input {spec.key()}"
    )

    # 2. train: warm start from the active model's weights when it loads; a first round with a
    # start_from model fine-tunes it and, for comparison, trains one from scratch in the same time.
    started = time.perf_counter()
    init_model, transfer_source, transfer_layers = _initial_weights(workflow, previous, target_config, run)
    config = _train_config(job, len(data.train_ids))
    dataset = TripletArrayDataset(x_train, preprocessed=True)
    data_hash = _data_hash(data.train_ids, data.targets, data.weights)
    if types.classes:
        # The type labels are training data too: a model trained on other types is another model.
        digest = hashlib.sha256(f"{data_hash}|types|{','.join(types.classes)}|".encode())
        digest.update(np.ascontiguousarray(types.train, dtype=np.int64).tobytes())
        data_hash = digest.hexdigest()

    def train(init, train_config, progress):
        try:
            return train_classifier(
                dataset,
                data.targets,
                sample_weights=np.maximum(data.weights, 1e-3),
                model_config=None if init is not None else target_config,
                train_config=train_config,
                init_model=init,
                progress=progress,
                data_hash=data_hash,
                type_targets=types.train if types.classes else None,
            )
        except (TrainingError, ValueError) as exc:  # NaN loss or NaN validation scores, unusable labels
            raise LoopError(f"Training failed: {exc}") from None

    scratch = None
    if transfer_source is not None:
        # Half the round's time budget each: the comparison costs no more than a round.
        half = dataclasses.replace(
            config, time_budget_s=config.time_budget_s / 2 if config.time_budget_s else None
        )
        result = train(init_model, half, run.phase(0.08, 0.39))
        scratch = train(None, half, run.phase(0.39, 0.70))
    else:
        result = train(init_model, config, run.phase(0.08, 0.70))
    del x_train
    timings["train"] = time.perf_counter() - started
    run.log(
        f"trained {result.epochs_run} epochs on {result.device} in {result.duration_s:.1f} s "
        f"({result.stopped_reason}); validation AUC {result.best.val_auc}"
    )

    # 3. evaluate on the held-out set, and the active model on the same set
    started = time.perf_counter()
    run.progress(0.70, "evaluating on the held-out set", force=True)

    raw_logits = {}

    def held_out(model) -> tuple[np.ndarray, dict]:
        # Uncalibrated here (T = 1): the temperature is fitted below, for the model the round keeps.
        z = _heldout_logits(model, cache_, data.heldout_ids)
        p = apply_temperature(z, 1.0)
        if not np.all(np.isfinite(p)):
            raise LoopError("The new model produced NaN scores on the held-out set.")
        found = evaluate(data.heldout_y, p)
        if not _finite_metrics(found):
            raise LoopError(f"The held-out metrics are not finite (AUC {found.get('roc_auc')}).")
        raw_logits[id(model)] = z
        return p, found

    p_heldout, metrics = held_out(result.model)
    extra_metrics = {"heldout_by_survey": survey_metrics(data.heldout_ids, data.heldout_y, p_heldout)}
    extra_curves = {}
    if scratch is not None:
        p_scratch, scratch_metrics = held_out(scratch.model)
        fine_auc, scratch_auc = float(metrics["roc_auc"]), float(scratch_metrics["roc_auc"])
        scratch_by_survey = survey_metrics(data.heldout_ids, data.heldout_y, p_scratch)
        transfer = {
            "start_from": transfer_source,
            "layers": transfer_layers,
            "time_budget_s_each": half.time_budget_s,
            "fine_tuned": _run_summary(result, metrics, extra_metrics["heldout_by_survey"]),
            "scratch": _run_summary(scratch, scratch_metrics, scratch_by_survey),
            "auc_difference": fine_auc - scratch_auc,
            "beat_scratch": fine_auc > scratch_auc,
            # The round keeps the better of the two on the held-out set (the fine-tuned one on a tie).
            "kept": "fine_tuned" if fine_auc >= scratch_auc else "scratch",
        }
        run.log(
            f"fine-tuned from {transfer_source['label']}: held-out AUC {fine_auc:.4f}; "
            f"from scratch: {scratch_auc:.4f}; keeping the {transfer['kept'].replace('_', '-')} model"
        )
        extra_curves["from scratch"] = p_scratch
        if transfer["kept"] == "scratch":
            extra_curves = {"fine-tuned": p_heldout}
            result, p_heldout, metrics = scratch, p_scratch, scratch_metrics
            extra_metrics["heldout_by_survey"] = scratch_by_survey
        extra_metrics["transfer"] = transfer
    # 3b. calibrate the kept model: temperature and bias fitted on the held-out set (cross-fitted ECE)
    calibration, p_heldout, metrics = _calibrate(result.model, raw_logits[id(result.model)], data.heldout_y)
    extra_metrics["calibration"] = calibration
    extra_metrics["heldout_by_survey"] = survey_metrics(data.heldout_ids, data.heldout_y, p_heldout)
    run.log(
        f"calibration: temperature {calibration['temperature']:.3f}, bias {calibration['bias']:+.3f}; held-out ECE "
        f"{calibration['ece_uncalibrated']:.3f} uncalibrated, {calibration['ece_calibrated']:.3f} calibrated "
        "(cross-fitted)"
    )
    previous_auc = p_prev = None
    if previous is not None:
        try:
            p_prev = _predict_any(workflow, load_model_version(previous).model, cache_, data.heldout_ids)
            previous_auc = float(evaluate(data.heldout_y, p_prev)["roc_auc"])
        except ModelRejected as exc:
            p_prev = None
            run.log(f"the active model cannot be evaluated: {exc}")
    extra_metrics["promotion"] = _promotion_decision(data.heldout_y, p_heldout, p_prev, previous)
    extra_metrics["type_head"] = {
        "classes": types.classes,
        "train_counts": types.counts,
        "n_typed_train": int((types.train >= 0).sum()),
        "note": types.note,
    }
    if types.classes:
        found = _type_evaluation(result.model, cache_, data.heldout_ids, types)
        extra_metrics["type_confusion"] = found
        run.log(
            "type head: held-out type accuracy "
            + (f"{found['accuracy']:.3f}" if found["accuracy"] is not None else "n/a")
            + f" on {found['n']} subjects with an expert type"
        )
    timings["evaluate"] = time.perf_counter() - started
    run.log(
        f"held-out AUC {metrics['roc_auc']:.4f}"
        + (f" (active v{previous.version}: {previous_auc:.4f})" if previous_auc is not None else "")
        + "; "
        + ", ".join(
            f"{name} {m['roc_auc']:.4f}" if m["roc_auc"] is not None else f"{name} n/a"
            for name, m in extra_metrics["heldout_by_survey"].items()
        )
    )

    # 4. register the version: checkpoint, SHA-256, plots
    started = time.perf_counter()
    run.progress(0.75, "registering the model", force=True)
    version = _register_version(
        workflow, job, result, metrics, data, previous, previous_auc, p_heldout,
        extra_metrics=extra_metrics,
        extra_config={
            "input": {"size": spec.size, "pixel_scale": spec.pixel_scale, "uncertainty_channel": spec.uncertainty},
            "start_from": transfer_source,
        },
        extra_curves=extra_curves,
    )  # fmt: skip
    # What it trained on: the model never votes on those subjects (labeling.model_voter).
    record_training_ids(version, data.train_ids)
    timings["register"] = time.perf_counter() - started

    # 5. promote only if not worse than the active model on the held-out set (or forced)
    force = bool(job.params.get("force_promote"))
    decision = dict(version.metrics["promotion"])
    better = decision["promoted"]
    if force and not better:
        decision.update(
            promoted=True, forced=True, reason=f"Promoted as the owner asked. {decision['reason']}"
        )
    version.metrics["promotion"] = decision
    if force or better:
        activate_version(version)
        run.log(f"v{version.version} promoted" + (" (forced by the owner)" if force and not better else ""))
        # 6. score the pool and write the ranking
        timings.update(
            _score_and_rank(workflow, version, result.model, cache_, data.pool_ids, run, 0.78, 1.0)
        )
    else:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.REJECTED)
        version.status = ModelVersion.REJECTED
        run.log(f"v{version.version}: {decision['reason']}")
    version.metrics = {**version.metrics, "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    ModelVersion.objects.filter(pk=version.pk).update(metrics=json_safe(version.metrics))
    run.finish(Job.SUCCEEDED, f"Done: v{version.version} {version.status}", model_version=version)
    round_succeeded(workflow, Job.TRAIN)
    return version


def _register_version(
    workflow,
    job,
    result,
    metrics,
    data: RoundData,
    previous,
    previous_auc,
    p_heldout,
    *,
    extra_metrics: dict | None = None,
    extra_config: dict | None = None,
    extra_curves: dict | None = None,
) -> ModelVersion:
    from mlcore.checkpoint import file_sha256, save_checkpoint

    number = _next_version_number(workflow)
    summary = result.summary()
    version = ModelVersion.objects.create(
        workflow=workflow,
        kind=ModelVersion.CLASSIFIER,
        version=number,
        status=ModelVersion.CANDIDATE,
        metrics=json_safe(
            {
                "heldout": metrics,
                "n_labels": data.n_labels,
                "validation": {
                    k: summary[k]
                    for k in (
                        "val_auc",
                        "val_loss",
                        "train_loss",
                        "best_epoch",
                        "epochs_run",
                        "stopped_reason",
                    )
                },
                "history": summary["history"],
                "compared_with": {"version": previous.version, "roc_auc": previous_auc}
                if previous is not None
                else None,
                **(extra_metrics or {}),
            }
        ),
        config=json_safe(
            {
                "model": result.model_config.to_dict(),
                "train": result.train_config.to_dict(),
                "training_data_hash": result.training_data_hash,
                "warm_start_from": previous.version
                if previous is not None and loop_setting("warm_start")
                else None,
                "acquisition_strategy": workflow.acquisition_strategy,
                **(extra_config or {}),
            }
        ),
        n_train=len(data.train_ids),
        duration_s=round(result.duration_s, 3),
        device=result.device[:60],
    )
    Job.objects.filter(pk=job.pk).update(model_version=version)
    fd, tmp_path = tempfile.mkstemp(prefix="skyvote-model-", suffix=".pt")
    os.close(fd)
    try:
        save_checkpoint(
            tmp_path,
            result.model,
            training_data_hash=result.training_data_hash,
            metadata={
                "workflow_id": workflow.pk,
                "version": number,
                "n_train": len(data.train_ids),
                "heldout_roc_auc": float(metrics["roc_auc"]),
            },
        )
        sha = file_sha256(tmp_path)
        with open(tmp_path, "rb") as handle:
            # Private storage, a random name: only the model API hands it out, to the project's readers.
            version.artifact.name = private_storage().save(
                random_name(f"models/{workflow.pk}/v{number}-", ".pt"), File(handle)
            )
    finally:
        os.unlink(tmp_path)
    version.artifact_sha256 = sha
    # Plots are drawn when someone opens them (plot_file), from this held-out data.
    version.metrics["plots"] = {}
    version.metrics["plot_data"] = _plot_data(data.heldout_y, p_heldout, f"v{number}", extra_curves)
    version.metrics = json_safe(version.metrics)
    version.save(update_fields=["artifact", "artifact_sha256", "metrics"])
    return version


# ---------------------------------------------------------------------------------------------
# Scoring the pool and writing the ranking


def score_precision(device_type: str = "cpu") -> str:
    """The scoring precision: the setting, or with "auto" bfloat16 on CPUs that compute it natively.

    On such CPUs (AVX512-BF16 or AMX) bf16 autocast scores about 2× faster than float32 and moves
    P(real) by at most a few 1e-2 (bench/loop.py measures both on the same triplets: >99 % of the
    entropy top 10 % is the same). Held-out evaluation, and so promotion, always runs in float32.
    """
    choice = str(loop_setting("score_precision") or "auto")
    if choice != "auto":
        return choice
    if device_type != "cpu":
        return "float32"
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read(200_000)
    except OSError:
        return "float32"
    return "bfloat16" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "float32"


def _score_and_rank(
    workflow, version, model, cache_, pool_ids: np.ndarray, run: JobRun | None, start: float, end: float
) -> dict:
    """Score every given subject in chunks, rank by the workflow's strategy, write the ranking."""
    from mlcore.acquisition import parse_strategy, rank_pool
    from mlcore.data import TripletArrayDataset
    from mlcore.score import score

    timings = {}
    began = time.perf_counter()
    strategy = workflow.acquisition_strategy
    try:
        base, diversity = parse_strategy(strategy)
    except ValueError as exc:
        raise LoopError(str(exc)) from None
    type_classes = list(model.config.type_classes)
    if base == "type_entropy" and not type_classes:
        # No typed labels yet (or too few): rank by real/bogus uncertainty until a round grows a head.
        strategy = "entropy" + ("+diversity" if diversity else "")
        base = "entropy"
        if run is not None:
            run.log("type_entropy needs a model with a type head: this model has none, ranking by entropy")
    mc = int(loop_setting("mc_samples")) if base == "bald" else 0
    if base == "bald" and not mc:
        raise LoopError("BALD needs MC-dropout samples (SKYVOTE_MC_SAMPLES > 0).")
    n = len(pool_ids)
    chunk = int(loop_setting("score_chunk"))
    ids_out = np.empty(n, dtype=np.int64)
    p_real = np.empty(n, dtype=np.float64)
    entropy = np.empty(n, dtype=np.float64)
    bald = np.empty(n, dtype=np.float64) if mc else None
    features = np.empty((n, model.config.dense_units), dtype=np.float32) if diversity else None
    type_probs = np.empty((n, len(type_classes)), dtype=np.float32) if type_classes else None
    precision = score_precision(next(model.parameters()).device.type)
    report = run.phase(start, start + (end - start) * 0.9) if run else (lambda f, m="": None)
    done = 0
    for ids_chunk, x in cache_.iter_chunks(pool_ids, chunk):
        result = score(
            model,
            TripletArrayDataset(x, preprocessed=True),
            batch_size=int(loop_setting("score_batch_size")),
            mc_samples=mc,
            features=diversity,
            precision=precision,
            seed=version.version,
        )
        rows = slice(done, done + len(ids_chunk))
        ids_out[rows] = ids_chunk
        p_real[rows] = result.p_real
        entropy[rows] = result.entropy
        if bald is not None:
            bald[rows] = result.bald
        if features is not None:
            features[rows] = result.features
        if type_probs is not None:
            type_probs[rows] = result.type_probs
        done += len(ids_chunk)
        report(done / max(n, 1), f"scored {done}/{n} subjects")
    if n and not np.all(np.isfinite(p_real)):
        raise LoopError("The model produced NaN scores for the pool; the ranking was not changed.")
    try:
        order, acq = rank_pool(
            strategy, p_real, bald_scores=bald, features=features, seed=version.version, type_probs=type_probs
        )
    except ValueError as exc:
        raise LoopError(f"The pool could not be ranked ({exc}); the ranking was not changed.") from None
    priority = np.empty(n, dtype=np.float64)
    priority[order] = 1.0 - np.arange(n) / max(n, 1)  # 1 for the most informative, → 0 for the least
    timings["score"] = time.perf_counter() - began

    model_type = model_type_p = None
    if type_probs is not None:
        best = type_probs.argmax(axis=1) if n else np.empty(0, dtype=np.int64)
        model_type = np.asarray(type_classes, dtype=object)[best]
        model_type_p = type_probs[np.arange(n), best]
    began = time.perf_counter()
    write_scores(
        ids_out,
        p_real,
        entropy,
        acq,
        priority,
        model_type=model_type,
        model_type_p=model_type_p,
        progress=run.phase(start + (end - start) * 0.9, end) if run else None,
    )
    timings["write"] = time.perf_counter() - began
    hist, edges = np.histogram(entropy, bins=20, range=(0.0, 1.0))
    pool = {
        "n": int(n),
        "scored_at": timezone.now().isoformat(timespec="seconds"),
        "strategy": workflow.acquisition_strategy,
        "precision": precision,
        "uncertainty": "predictive entropy (bits)",
        "uncertainty_hist": hist.tolist(),
        "uncertainty_edges": [round(e, 3) for e in edges.tolist()],
        "mean_p_real": float(p_real.mean()) if n else None,
        "predicted_real": int((p_real >= 0.5).sum()),
    }
    if model_type is not None:
        pool["predicted_types"] = {k: int((model_type == k).sum()) for k in type_classes}
    metrics = ModelVersion.objects.get(pk=version.pk).metrics
    metrics["pool"] = pool
    ModelVersion.objects.filter(pk=version.pk).update(metrics=json_safe(metrics))
    version.metrics = metrics
    if run is not None:
        run.log(
            f"ranked {n} subjects by {workflow.acquisition_strategy} in {timings['score'] + timings['write']:.1f} s"
        )
    return timings


def write_scores(
    ids,
    p_real,
    uncertainty,
    acquisition_score,
    priority,
    *,
    model_type=None,
    model_type_p=None,
    progress=None,
) -> None:
    """Write model outputs and the ranking, chunk by chunk (short transactions: votes keep flowing).

    One parameterised UPDATE per row through executemany: on SQLite and PostgreSQL this is several
    times faster than QuerySet.bulk_update's CASE expressions (bench/loop.py measures both). The type
    head's most likely type and its probability go in the same statement; a model without a head
    clears them ("" and NULL), so no subject keeps an earlier model's type.
    """
    table = connection.ops.quote_name(Subject._meta.db_table)
    sql = (
        f"UPDATE {table} SET model_score = %s, model_uncertainty = %s, acquisition_score = %s, priority = %s, "
        f"model_type = %s, model_type_p = %s WHERE id = %s"
    )
    n = len(ids)
    step = int(loop_setting("write_chunk"))
    columns = [np.asarray(c, dtype=np.float64) for c in (p_real, uncertainty, acquisition_score, priority)]
    if model_type is None:
        types, type_p = [""] * n, [None] * n
    else:
        types = [str(t) for t in model_type]
        type_p = np.asarray(model_type_p, dtype=np.float64).tolist()
    ids = np.asarray(ids, dtype=np.int64)
    for begin in range(0, n, step):
        rows = list(
            zip(
                *(c[begin : begin + step].tolist() for c in columns),
                types[begin : begin + step],
                type_p[begin : begin + step],
                ids[begin : begin + step].tolist(),
                strict=True,
            )
        )
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.executemany(sql, rows)
        if progress is not None:
            progress(min(begin + step, n) / n, f"wrote {min(begin + step, n)}/{n} scores")


@register(Job.SCORE, queue=GPU, label="Scoring", plain_errors=(LoopError, ValueError))
def scoring_job(run: JobRun) -> None:
    """Re-score the pool with the workflow's active model (after a manual promotion)."""
    version = _scoring_job(run.job, run)
    run.finish(Job.SUCCEEDED, f"Done: pool ranked by v{version.version}", model_version=version)


def _scoring_job(job: Job, run: JobRun) -> ModelVersion:
    from loop.arrays import ArrayCache, loader_for

    workflow = Workflow.objects.select_related("active_model").get(pk=job.workflow_id)
    version = workflow.active_model
    if version is None:
        raise LoopError("There is no active model to score with.")
    model = load_model_version(version).model
    # The active model's own input (its config, saved in the checkpoint), whatever the workflow says now.
    cache_ = ArrayCache.for_workflow(workflow.pk, spec_of(model))
    pool_ids = np.fromiter(
        Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True),
        dtype=np.int64,
    )
    skipped = cache_.fill(
        pool_ids, loader_for(cache_.spec), progress=lambda d, t: run.progress(0.1 * d / max(t, 1))
    )
    if skipped:
        pool_ids = pool_ids[~np.isin(pool_ids, [s for s, _ in skipped])]
        run.log(f"skipped {len(skipped)} subjects whose arrays could not be read")
    _score_and_rank(workflow, version, model, cache_, pool_ids, run, 0.1, 1.0)
    return version


# ---------------------------------------------------------------------------------------------
# Saliency for the owner's subject page


def saliency_maps(model, triplet) -> tuple[float, np.ndarray]:
    """Input-gradient saliency (Simonyan et al. 2014): |∂ logit / ∂ pixel| per channel, each scaled to 0..1.

    Returns (P(real), maps of shape (3, S, S): science, reference, difference) for one subject's
    stamps (loop.arrays.Stamps) or raw (3, H, W) triplet, prepared as the model's input says.
    """
    import torch

    from loop.arrays import prepare_stamps

    prepared = prepare_stamps(spec_of(model), triplet)
    x = torch.from_numpy(prepared[None])
    device = next(model.parameters()).device
    x = x.to(device).requires_grad_(True)
    model.eval()
    logit = model(x)[0]
    logit.backward()
    grad = x.grad.detach().abs()[0, :3].cpu().numpy()
    peak = grad.max(axis=(1, 2), keepdims=True)
    maps = np.divide(grad, peak, out=np.zeros_like(grad), where=peak > 0)
    from mlcore.calibration import model_bias, model_temperature

    # The calibrated P(real), as the pool's scores are.
    calibrated = logit.detach() / model_temperature(model) + model_bias(model)
    return float(torch.sigmoid(calibrated).item()), maps


@on_sweep
def check_missed_triggers(report) -> None:
    """Workflows that reached K new labels without a round (labels from gold or re-aggregation, or
    counters kept per web process) get one; the sweep runs this every time."""
    for workflow in Workflow.objects.filter(is_active=True, kind=Workflow.REAL_BOGUS, train_every__gt=0):
        before = open_job(workflow, Job.TRAIN)
        check_trigger(workflow, reason="sweep")
        after = open_job(workflow, Job.TRAIN)
        if after is not None and before is None:
            report.triggered.append(after.pk)
