"""An embedding round: a job of kind embed on the gpu queue, run by the job system (jobs.services).

answers → train/held-out split by task → images of every subject of the workflow → mlcore.embedding_train
(SimCLR pretraining, warm-started from the active version when there is one; triplet fine-tuning)
→ evaluation on held-out answers (pairwise agreement, recall@5; random baselines 0.5 and 5/15) →
a ModelVersion(kind="embedding") with checkpoint, metrics and training curve → the embeddings of
every subject saved as .npy (the search index), with quantiles of its pair cosines (calibrated
search scores, similarity.index) → promotion by ``promotion_decision``: never on fewer than
``min_heldout_answers`` scored held-out answers, never when the held-out agreement is below random
beyond its bootstrap interval, and otherwise only when a paired bootstrap on the same held-out answers
shows it at most ``promote_tolerance`` worse than the active version. The decision and its reason
are stored in ``metrics["promotion"]`` and shown on the model page.

Held-out answers: every answer of a task whose hash(workflow, task) falls in the first
``HELDOUT_SHARE`` (20 %) of the hash space. Splitting by task keeps all opinions about the same 15
pairs on one side, and the split is stable as answers accumulate.

Job state, heartbeat, progress and log go through the job system (jobs.services: JobRun, the
outbox and its sweep), so a dead worker is detected and the round retried or failed;
the active embedding stays in use until a new one is promoted.
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from core.models import ModelVersion, Subject, Workflow
from core.rounds import fail_unfinished_versions
from core.storage import private_storage, random_name
from jobs.models import Job
from jobs.services import GPU, SHORT, JobRun, register
from similarity.models import SimilarityVote
from similarity.services import (
    EmbeddingUnavailable,
    active_embedding,
    build_search_index,
    load_embedding_model,
    load_index,
    queue_search_index,
)

log = logging.getLogger(__name__)

HELDOUT_SHARE = 0.2
TRAIN_DEFAULTS = {
    "pretrain_epochs": 15,
    "warm_pretrain_epochs": 3,
    "finetune_epochs": 8,
    "time_budget_s": 900.0,
    "input_size": 64,
    "batch_size": 128,
    "seed": 0,
    # Non-inferiority margin: a candidate is promoted only if the lower end of the 95 % paired
    # interval of (its agreement − the active one's) is at least −promote_tolerance.
    "promote_tolerance": 0.02,
    # No promotion with fewer scored held-out answers (a chosen and an unchosen candidate each).
    "min_heldout_answers": 100,
    # Refuse an embedding whose agreement's interval lies below random (tests of what a round enables
    # turn this off: their tiny embeddings, trained on a few dozen answers, are often no better).
    "refuse_below_random": True,
    "bootstrap_resamples": 2000,
}
RANDOM_AGREEMENT = 0.5


def train_setting(name: str, job: Job | None = None):
    overrides = (job.params or {}).get("train_settings", {}) if job is not None else {}
    if name in overrides:
        return overrides[name]
    configured = (getattr(settings, "SKYVOTE_SIMILARITY", None) or {}).get("train", {})
    return configured.get(name, TRAIN_DEFAULTS[name])


def is_heldout(workflow_id: int, task_id: int) -> bool:
    digest = hashlib.sha256(f"skyvote-sim:{workflow_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < HELDOUT_SHARE * 2**32


def workflow_answers(workflow: Workflow, *, heldout_tasks: list | None = None):
    """(train answers, held-out answers) as mlcore Answer objects; `heldout_tasks`, when given, gets the
    task id of each held-out answer (same order)."""
    from mlcore.embedding_train import Answer

    train, heldout = [], []
    rows = (
        SimilarityVote.objects.filter(workflow=workflow, task__check_candidate__isnull=True)
        .select_related("task")
        .order_by("pk")
        .values_list("task_id", "task__comparison_id", "task__candidates", "chosen")
    )
    for task_id, comparison_id, candidates, chosen in rows:
        answer = Answer(comparison=comparison_id, candidates=tuple(candidates), chosen=frozenset(chosen))
        if is_heldout(workflow.pk, task_id):
            heldout.append(answer)
            if heldout_tasks is not None:
                heldout_tasks.append(task_id)
        else:
            train.append(answer)
    return train, heldout


def decision_boundary(embeddings: np.ndarray, row_of: dict[int, int], answers) -> float | None:
    """The cosine that best separates chosen from unchosen pairs (balanced accuracy) on `answers`."""
    sims, labels = [], []
    for answer in answers:
        if answer.comparison not in row_of:
            continue
        anchor = embeddings[row_of[answer.comparison]]
        for candidate in answer.candidates:
            if candidate in row_of:
                sims.append(float(embeddings[row_of[candidate]] @ anchor))
                labels.append(candidate in answer.chosen)
    sims_a, labels_a = np.array(sims), np.array(labels, dtype=bool)
    if labels_a.sum() == 0 or (~labels_a).sum() == 0:
        return None
    best, best_tau = -1.0, None
    for tau in np.unique(np.quantile(sims_a, np.linspace(0.01, 0.99, 99))):
        balanced = 0.5 * ((sims_a[labels_a] >= tau).mean() + (sims_a[~labels_a] < tau).mean())
        if balanced > best:
            best, best_tau = balanced, float(tau)
    return best_tau


def _interval(low: float, high: float) -> str:
    return f"95 % interval {low:.3f}–{high:.3f}"


def promotion_decision(
    candidate: tuple[np.ndarray, np.ndarray],
    previous: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    previous_version: int | None = None,
    groups=None,
    min_answers: int = 100,
    tolerance: float = 0.02,
    n_boot: int = 2000,
    seed: int = 0,
    refuse_below_random: bool = True,
) -> dict:
    """Whether a candidate embedding replaces the active one, and why, from per-answer agreement counts
    on the held-out answers (mlcore.embedding_train.agreement_counts): `candidate`'s, and `previous`
    (the active version's on the same answers; None without an active version or when it could not be
    scored).

    In order: (1) fewer than `min_answers` scored held-out answers → not promoted, whatever the
    agreement (a handful of answers cannot tell a good embedding from a bad one); (2) the upper end
    of the agreement's 95 % bootstrap interval below random (0.5) → not promoted; (3) no active version
    → promoted; (4) otherwise a paired bootstrap of (candidate − active) on the answers both can score:
    promoted when its lower end is at least −tolerance (not worse by more than the tolerance, with
    95 % confidence). `groups`: the task of each answer; intervals resample whole tasks, since the
    answers to one task share its 15 pairs. The returned dict is stored as ``metrics["promotion"]``."""
    from mlcore.embedding_train import bootstrap_agreement, paired_bootstrap_difference

    own = bootstrap_agreement(*candidate, groups=groups, n_boot=n_boot, seed=seed)
    n = own["n_answers"]
    decision = {
        "promoted": False,
        "reason": "",
        "n_heldout_answers": n,
        "n_heldout_tasks": own["n_groups"],
        "min_heldout_answers": int(min_answers),
        "agreement": own["agreement"],
        "agreement_low": own["low"],
        "agreement_high": own["high"],
        "random_agreement": RANDOM_AGREEMENT,
        "previous_version": previous_version,
        "previous_agreement": None,
        "difference": None,
        "difference_low": None,
        "difference_high": None,
        "n_compared_answers": None,
        "tolerance": float(tolerance),
        "bootstrap_resamples": int(n_boot),
        "seed": int(seed),
    }
    if n < min_answers:
        decision["reason"] = f"only {n} held-out answers, at least {int(min_answers)} needed"
        return decision
    tasks = f" to {own['n_groups']} tasks" if groups is not None else ""
    agreement_text = (
        f"held-out agreement {own['agreement']:.3f} ({_interval(own['low'], own['high'])}, {n} answers{tasks})"
        if own["agreement"] is not None
        else "no held-out answers to score"
    )
    if refuse_below_random and own["high"] is not None and own["high"] < RANDOM_AGREEMENT:
        decision["reason"] = f"{agreement_text} is below random ({RANDOM_AGREEMENT})"
        return decision
    if previous_version is None:
        decision.update(promoted=True, reason=f"first embedding; {agreement_text}")
        return decision
    if own["agreement"] is None:  # only with a minimum of 0: nothing to compare on
        decision.update(promoted=True, reason=f"{agreement_text} (minimum {int(min_answers)})")
        return decision
    if previous is None:
        decision.update(
            promoted=True,
            reason=f"v{previous_version} could not be scored on these answers; {agreement_text}",
        )
        return decision
    diff = paired_bootstrap_difference(*candidate, *previous, groups=groups, n_boot=n_boot, seed=seed)
    previous_own = bootstrap_agreement(*previous, n_boot=1, seed=seed)
    decision.update(
        previous_agreement=previous_own["agreement"],
        difference=diff["difference"],
        difference_low=diff["low"],
        difference_high=diff["high"],
        n_compared_answers=diff["n_answers"],
    )
    if diff["difference"] is None:
        decision.update(
            promoted=True,
            reason=f"no answer both v{previous_version} and this version can score; {agreement_text}",
        )
        return decision
    compared = (
        f"{diff['difference']:+.3f} against v{previous_version} on the same {diff['n_answers']} answers "
        f"({_interval(diff['low'], diff['high'])})"
    )
    if diff["low"] >= -tolerance:
        decision.update(
            promoted=True, reason=f"not worse than v{previous_version} by more than {tolerance:g}: {compared}"
        )
    else:
        decision["reason"] = f"could be worse than v{previous_version} by more than {tolerance:g}: {compared}"
    return decision


def _load_images(workflow: Workflow, input_size: int, run):
    from core.ingest import load_subject_array
    from mlcore.embedding_model import prepare_image

    subjects = list(
        Subject.objects.filter(workflow=workflow).exclude(data="").order_by("pk").only("pk", "data")
    )
    ids, images, skipped = [], [], 0
    for i, subject in enumerate(subjects):
        try:
            images.append(prepare_image(load_subject_array(subject), input_size))
            ids.append(subject.pk)
        except (OSError, ValueError) as exc:
            skipped += 1
            log.warning("subject %s skipped: %s", subject.pk, exc)
        if run is not None and i % 200 == 0:
            run.progress(0.1 * i / max(1, len(subjects)), f"loading images {i}/{len(subjects)}")
    if skipped and run is not None:
        run.log(f"{skipped} subject(s) skipped: unreadable arrays")
    return np.asarray(ids, dtype=np.int64), np.stack(images)[:, None] if images else None


def _save(prefix: str, suffix: str, data: bytes) -> str:
    # Private storage under a random name: checkpoints and index files are the project's, never public.
    return private_storage().save(random_name(prefix, suffix), ContentFile(data))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@register(
    Job.EMBED,
    queue=GPU,
    label="Embedding round",
    on_abandon=fail_unfinished_versions,
    on_failed=fail_unfinished_versions,
    plain_errors=(ValueError, RuntimeError),
)
def embedding_round_job(run: JobRun) -> None:
    """A whole embedding round; a failure leaves the active embedding untouched."""
    _embedding_round(run.job, run)


def _embedding_round(job: Job, run) -> ModelVersion:
    from core.formats import json_safe
    from core.rounds import count_as_trained_on, round_succeeded
    from mlcore.checkpoint import save_checkpoint
    from mlcore.embedding_model import EmbeddingConfig
    from mlcore.embedding_train import TrainSettings, agreement_counts, evaluate, train_embedding
    from similarity.index import pair_cosine_quantiles

    workflow = job.workflow
    input_size = int(train_setting("input_size", job))
    run.log(f"Round started ({(job.params or {}).get('reason', 'requested')})")
    ids, images = _load_images(workflow, input_size, run)
    if images is None or len(ids) < 2:
        raise ValueError("The workflow needs at least 2 subjects with images to train an embedding.")
    heldout_tasks: list[int] = []
    train_answers, heldout_answers = workflow_answers(workflow, heldout_tasks=heldout_tasks)
    count_as_trained_on(workflow, len(train_answers) + len(heldout_answers))
    run.log(
        f"{len(ids)} images, {len(train_answers)} training answers, {len(heldout_answers)} held-out answers"
    )

    previous = active_embedding(workflow)
    config = EmbeddingConfig(input_size=input_size)
    init_state = None
    if previous is not None:
        try:
            previous_model = load_embedding_model(previous)
            if previous_model.config == config:
                init_state = previous_model.state_dict()
        except Exception as exc:  # an unusable previous version: start from scratch
            run.log(f"Not warm-starting from v{previous.version}: {exc}")
    train_settings = TrainSettings(
        pretrain_epochs=int(train_setting("warm_pretrain_epochs" if init_state else "pretrain_epochs", job)),
        finetune_epochs=int(train_setting("finetune_epochs", job)),
        batch_size=int(train_setting("batch_size", job)),
        time_budget_s=float(train_setting("time_budget_s", job)),
        seed=int(train_setting("seed", job)),
    )
    if init_state is not None:
        run.log(f"Warm start from v{previous.version}")
    result = train_embedding(
        images,
        ids.tolist(),
        train_answers,
        heldout_answers,
        config=config,
        settings=train_settings,
        init_state=init_state,
        progress=run.phase(0.1, 0.9),
    )
    row_of = {int(s): i for i, s in enumerate(ids)}
    boundary = decision_boundary(result.embeddings, row_of, train_answers)

    previous_agreement = previous_counts = None
    if previous is not None and heldout_answers:
        try:
            prev_index = load_index(previous)
            prev_vectors = prev_index.matrix.float().numpy()
            previous_agreement = evaluate(prev_vectors, prev_index.row_of, heldout_answers)[
                "pairwise_agreement"
            ]
            if previous_agreement != previous_agreement:  # NaN: no comparable pairs
                previous_agreement = None
            previous_counts = agreement_counts(prev_vectors, prev_index.row_of, heldout_answers)
        except Exception as exc:
            run.log(f"Could not evaluate v{previous.version} on the held-out answers: {exc}")
    decision = promotion_decision(
        agreement_counts(result.embeddings, row_of, heldout_answers),
        previous_counts,
        previous_version=previous.version if previous is not None else None,
        groups=heldout_tasks,
        min_answers=int(train_setting("min_heldout_answers", job)),
        tolerance=float(train_setting("promote_tolerance", job)),
        n_boot=int(train_setting("bootstrap_resamples", job)),
        seed=int(train_setting("seed", job)),
        refuse_below_random=bool(train_setting("refuse_below_random", job)),
    )

    number = (
        ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.EMBEDDING).aggregate(
            m=Max("version")
        )["m"]
        or 0
    ) + 1
    run.progress(0.92, "saving model and index", force=True)
    buffer = io.BytesIO()
    save_checkpoint(buffer, result.model, metadata={"workflow": workflow.pk, "version": number})
    checkpoint = buffer.getvalue()
    prefix = f"models/{workflow.pk}/embedding-v{number}"
    artifact = _save(f"{prefix}-", ".pt", checkpoint)
    vectors_name = _save(f"{prefix}-vectors-", ".npy", _npy(result.embeddings.astype(np.float16)))
    ids_name = _save(f"{prefix}-ids-", ".npy", _npy(ids))
    metrics = {
        **result.metrics,
        "heldout_agreement_low": decision["agreement_low"],
        "heldout_agreement_high": decision["agreement_high"],
        "n_scored_heldout_answers": decision["n_heldout_answers"],
        "promotion": decision,
        "previous_heldout_agreement": previous_agreement,
        "n_subjects": len(ids),
        "n_triplets": result.n_triplets,
        "n_none_pairs": result.n_none_pairs,
        "stopped_reason": result.stopped_reason,
    }
    version = ModelVersion.objects.create(
        workflow=workflow,
        kind=ModelVersion.EMBEDDING,
        version=number,
        status=ModelVersion.CANDIDATE,
        artifact=artifact,
        artifact_sha256=hashlib.sha256(checkpoint).hexdigest(),
        # A round with few answers can have NaN losses or agreements (no pairs to score): store them as
        # null, since JSON has no NaN and the database refuses it.
        metrics=json_safe(metrics),
        config=json_safe(
            {
                "model": config.to_dict(),
                "train": result.settings,
                "warm_start_from": previous.version if init_state is not None else None,
                "boundary": boundary,
                "index": {
                    "vectors": vectors_name,
                    "ids": ids_name,
                    "dim": int(result.embeddings.shape[1]),
                    # Of the stored float16 vectors, as search scores them.
                    "calibration": pair_cosine_quantiles(
                        result.embeddings.astype(np.float16).astype(np.float32)
                    ),
                },
                "history": result.history,
            }
        ),
        n_train=len(train_answers),
        duration_s=result.duration_s,
        device=result.device[:60],
    )
    Job.objects.filter(pk=job.pk).update(model_version=version)

    if decision["promoted"]:
        activate_embedding(version)
        summary = f"Embedding v{number} active: {decision['reason']}"
    else:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.REJECTED)
        summary = f"Embedding v{number} not promoted: {decision['reason']}"
    run.finish(Job.SUCCEEDED, summary, model_version=version)
    round_succeeded(workflow, Job.EMBED)
    return version


# The approximate search index of an embedding version (similarity.index.ApproximateIndex). A job kind of
# its own, like the gems app's, so it needs no entry in Job.KINDS (and no migration). The short queue:
# it needs no accelerator and takes seconds to about a minute at 1,000,000 subjects, and behind the
# next training round on the gpu queue search would stay on the slower exact path for that long.
INDEX_BUILD = "embed_index"


@register(INDEX_BUILD, queue=SHORT, label="Search index", plain_errors=(ValueError, EmbeddingUnavailable))
def index_build_job(run: JobRun) -> str:
    """Build the approximate index of the embedding version in the job's params."""
    version = (
        ModelVersion.objects.select_related("workflow")
        .filter(pk=(run.job.params or {}).get("version"))
        .first()
    )
    if version is None:
        return "The embedding version was deleted: nothing to index."
    return build_search_index(version, run)


def activate_embedding(version: ModelVersion) -> ModelVersion:
    """Make a version the workflow's embedding (the previous active one is superseded); checks the files."""
    load_embedding_model(version)
    load_index(version)
    now = timezone.now()
    with transaction.atomic():
        ModelVersion.objects.filter(
            workflow_id=version.workflow_id, kind=ModelVersion.EMBEDDING, status=ModelVersion.ACTIVE
        ).exclude(pk=version.pk).update(status=ModelVersion.RETIRED)
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.ACTIVE, promoted_at=now)
        # Sent after commit: a large version gets its approximate index once it is the active one. Search
        # works without it (exact), so a failure to queue must not undo the promotion.
        try:
            with transaction.atomic():
                queue_search_index(version)
        except Exception:
            log.exception("could not queue the search index of embedding version %s", version.pk)
    version.status, version.promoted_at = ModelVersion.ACTIVE, now
    return version
