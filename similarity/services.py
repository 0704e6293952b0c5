"""Similarity votes, pair tallies, embedding rounds and search. Views and tasks call these.

`record_similarity_vote` is the only way a similarity answer is stored: idempotent on the
client's key (a retried request returns the stored vote), one vote per (task, participant)
enforced by the database (core.votes.store_vote_once, shared with real/bogus votes), and the
task's vote count and every PairStat of the task updated in the same transaction with
F-expressions, so concurrent voters never lose an increment. An answer from the page carries the
ticket served with its task (core.tickets); simulations call with `trusted=True`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import tickets
from core.models import ModelVersion, Participant, Subject, Workflow
from core.storage import open_stored
from core.votes import VoteError, parse_idempotency_key, refuse_if_closed, store_vote_once
from jobs.models import Job
from similarity.models import N_CANDIDATES, PairStat, SimilarityTask, SimilarityVote

log = logging.getLogger(__name__)


class SimilarityVoteError(VoteError):
    """The answer cannot be accepted; the message says why, in words for the volunteer."""


@dataclass
class SimilarityVoteResult:
    vote: SimilarityVote
    created: bool
    task_retired_now: bool = False


def parse_chosen(values) -> list[int]:
    """Chosen ids from a form or JSON: a list of ids or one comma-separated string."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    ids: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                ids.append(int(part))
            except ValueError:
                raise SimilarityVoteError(f"'{part[:20]}' is not a candidate id.") from None
    return ids


def record_similarity_vote(
    *,
    task: SimilarityTask,
    participant: Participant,
    chosen,
    none_similar: bool,
    idempotency_key,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    user_agent: str = "",
    viewport: str = "",
    source: str = "web",
    ticket: str | None = None,
    trusted: bool = False,
) -> SimilarityVoteResult:
    """Store one answer exactly once. Raises SimilarityVoteError for an answer that makes no sense, and
    core.tickets.TicketError unless `ticket` is the one served with this task to this participant
    (`trusted`: simulated volunteers, who need none)."""
    key = parse_idempotency_key(idempotency_key, SimilarityVoteError)
    if (
        Workflow.objects.filter(pk=task.workflow_id).values_list("kind", flat=True).first()
        != Workflow.SIMILARITY
    ):
        raise SimilarityVoteError("This workflow asks real or bogus: it takes no similarity answers.")
    chosen_ids = sorted(set(parse_chosen(chosen)))
    none_similar = bool(none_similar)
    if none_similar and chosen_ids:
        raise SimilarityVoteError(
            "You marked images as similar and also chose “no images are similar”. Unselect the images or "
            "submit them without “no images are similar”."
        )
    if not none_similar and not chosen_ids:
        raise SimilarityVoteError("Select the similar images, or choose “No images are similar”.")
    stray = set(chosen_ids) - set(task.candidates)
    if stray:
        raise SimilarityVoteError(f"Images {sorted(stray)} are not among this task's candidates.")
    if started_at and finished_at and finished_at < started_at:
        started_at, finished_at = finished_at, started_at

    def build() -> SimilarityVote:
        locked = SimilarityTask.objects.select_for_update().get(pk=task.pk)
        refuse_if_closed(
            Workflow.objects.filter(pk=locked.workflow_id).values_list("project_id", flat=True).first(),
            ticket,
            SimilarityVoteError,
        )
        if not trusted:
            tickets.verify(
                ticket,
                workflow_id=locked.workflow_id,
                kind=tickets.TASK,
                item_id=locked.pk,
                participant=participant,
            )
        # A task that retired meanwhile still takes the answer (_apply_vote counts it, never un-retires).
        return SimilarityVote(
            workflow_id=locked.workflow_id,
            task=locked,
            participant=participant,
            chosen=chosen_ids,
            n_chosen=len(chosen_ids),
            none_similar=none_similar,
            started_at=started_at,
            finished_at=finished_at or timezone.now(),
            idempotency_key=key,
            user_agent=(user_agent or "")[:400],
            viewport=(viewport or "")[:40],
            source=source,
        )

    def created(vote: SimilarityVote) -> SimilarityVoteResult:
        retired_now = _apply_vote(vote.task, vote)
        workflow_id = vote.task.workflow_id
        transaction.on_commit(lambda: on_similarity_votes_committed(workflow_id))
        return SimilarityVoteResult(vote, created=True, task_retired_now=retired_now)

    return store_vote_once(
        SimilarityVote,
        key,
        build=build,
        created=created,
        same_vote=lambda stored: stored.task_id == task.pk and stored.participant_id == participant.pk,
        replay=lambda stored: SimilarityVoteResult(stored, created=False),
        earlier=lambda: SimilarityVoteResult(
            SimilarityVote.objects.get(task=task, participant=participant), created=False
        ),
        conflict_message="This idempotency key was already used for another answer.",
        error=SimilarityVoteError,
    )


def task_ticket(task: SimilarityTask, participant: Participant) -> str:
    """The ticket that serves `task` to `participant` now; its answer must bring it back."""
    return tickets.issue(
        workflow_id=task.workflow_id, kind=tickets.TASK, item_id=task.pk, participant_id=participant.pk
    )


def _apply_vote(task: SimilarityTask, vote: SimilarityVote) -> bool:
    """Task vote count, retirement, and the PairStat rows of all 15 pairs (inside the vote's transaction)."""
    workflow = Workflow.objects.only("retirement_limit").get(pk=task.workflow_id)
    n_votes = task.n_votes + 1
    retire = not task.retired and n_votes >= max(1, workflow.retirement_limit)
    SimilarityTask.objects.filter(pk=task.pk).update(n_votes=F("n_votes") + 1, retired=task.retired or retire)
    if task.check_candidate_id is not None:
        # A check task's answer says whether the worker paid attention, nothing about similarity.
        return retire
    candidates = [c for c in task.candidates if c != task.comparison_id]
    now = timezone.now()
    PairStat.objects.bulk_create(
        [
            PairStat(workflow_id=task.workflow_id, comparison_id=task.comparison_id, candidate_id=c)
            for c in candidates
        ],
        ignore_conflicts=True,
    )
    pairs = PairStat.objects.filter(workflow_id=task.workflow_id, comparison_id=task.comparison_id)
    pairs.filter(candidate_id__in=candidates).update(shown=F("shown") + 1, updated_at=now)
    if vote.chosen:
        pairs.filter(candidate_id__in=vote.chosen).update(chosen=F("chosen") + 1)
    return retire


# ---------------------------------------------------------------------------------------------
# Embedding rounds: triggering (K new answers or the owner's button)


def active_embedding(workflow: Workflow) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(
            workflow=workflow, kind=ModelVersion.EMBEDDING, status=ModelVersion.ACTIVE
        )
        .order_by("-version")
        .first()
    )


def open_embedding_job(workflow: Workflow) -> Job | None:
    return Job.objects.filter(workflow=workflow, kind=Job.EMBED, status__in=[Job.QUEUED, Job.RUNNING]).first()


def answers_since_last_round(workflow: Workflow) -> int:
    """New answers since the last round was requested (Workflow.labels_at_last_round counts answers
    for similarity workflows)."""
    return data_votes(workflow).count() - workflow.labels_at_last_round


def data_votes(workflow: Workflow):
    """The workflow's answers that are similarity data: every answer but those of check tasks."""
    return SimilarityVote.objects.filter(workflow=workflow, task__check_candidate__isnull=True)


def on_similarity_votes_committed(workflow_id: int) -> None:
    """After each committed answer: start a round once `train_every` new answers have arrived."""
    workflow = Workflow.objects.filter(pk=workflow_id, kind=Workflow.SIMILARITY, is_active=True).first()
    if workflow is None or workflow.train_every <= 0:
        return
    if answers_since_last_round(workflow) < workflow.train_every:
        return
    if open_embedding_job(workflow) is not None:
        return
    try:
        request_embedding_round(workflow, reason=f"{workflow.train_every} new answers")
    except Exception:  # a vote must never fail because a round could not be queued; the owner can retry
        log.exception("could not request an embedding round for workflow %s", workflow_id)


def request_embedding_round(
    workflow: Workflow, *, user=None, reason: str = "owner", train_settings: dict | None = None
) -> tuple[Job, bool]:
    """Queue an embedding round, or return the one already open: (job, created).

    The job is sent after commit (core.rounds.queue_round), so a broker outage delays the round
    instead of losing it.
    """
    from core.rounds import queue_round

    if workflow.kind != Workflow.SIMILARITY:
        raise ValueError("Only similarity workflows train an embedding.")
    with transaction.atomic():
        existing = open_embedding_job(workflow)
        if existing is not None:
            return existing, False
        n_answers = data_votes(workflow).count()
        params = {"reason": reason, "answers_at_request": n_answers}
        if train_settings:
            params["train_settings"] = dict(train_settings)
        return queue_round(workflow, Job.EMBED, params, counted=n_answers, user=user)


# ---------------------------------------------------------------------------------------------
# Loading models and indexes (cached per process, keyed by version and checkpoint hash)

_cache_lock = threading.Lock()
_models: OrderedDict = OrderedDict()
_indexes: OrderedDict = OrderedDict()
CACHE_SIZE = 2


def _cached(store: OrderedDict, key, build):
    with _cache_lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = build()
    with _cache_lock:
        store[key] = value
        while len(store) > CACHE_SIZE:
            store.popitem(last=False)
    return value


def clear_caches() -> None:
    with _cache_lock:
        _models.clear()
        _indexes.clear()


class EmbeddingUnavailable(RuntimeError):
    """No usable embedding for this workflow yet (the message says what to do)."""


def load_embedding_model(version: ModelVersion):
    """The version's network, verified against its recorded SHA-256 (mlcore refuses foreign files)."""
    import hashlib

    from mlcore.checkpoint import CheckpointError, load_checkpoint

    def build():
        if not version.artifact or not version.artifact_sha256:
            raise EmbeddingUnavailable(f"Embedding v{version.version} has no stored checkpoint.")
        with open_stored(version.artifact.name) as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != version.artifact_sha256:
            raise EmbeddingUnavailable(
                f"Embedding v{version.version}: the checkpoint changed since it was registered."
            )
        try:
            return load_checkpoint(data, kind="embedding", device="cpu").model
        except CheckpointError as exc:
            raise EmbeddingUnavailable(f"Embedding v{version.version}: {exc}") from None

    return _cached(_models, (version.pk, version.artifact_sha256), build)


def approx_min_subjects() -> int:
    """From this many subjects on, search uses the approximate index (when one is built)."""
    from django.conf import settings

    from similarity.index import APPROX_MIN_N

    configured = ((getattr(settings, "SKYVOTE_SIMILARITY", None) or {}).get("index") or {}).get(
        "approx_min_subjects"
    )
    return APPROX_MIN_N if configured is None else int(configured)


def _load_ivf_in_background(index, ivf: dict) -> None:
    """Attach the version's stored IVF to `index` from a thread: a request never waits for it, and
    searches stay exact until it is attached."""
    from similarity.index import ApproximateIndex

    with _cache_lock:
        # One attempt per loaded index: while it runs, and after a failure (logged), search stays exact.
        if getattr(index, "ivf_load_started", False):
            return
        index.ivf_load_started = True

    def load():
        try:
            with open_stored(ivf["name"]) as handle:
                data = handle.read()
            index.attach_ivf(
                ApproximateIndex.from_bytes(
                    data, trained_size=ivf.get("trained_size"), nprobe=ivf.get("nprobe")
                )
            )
        except Exception:  # exact search keeps working; the log says why the IVF is unused
            log.exception("could not load the approximate index %s", ivf.get("name"))

    threading.Thread(target=load, name="skyvote-ivf-load", daemon=True).start()


def load_index(version: ModelVersion):
    """The EmbeddingIndex of a version (its embeddings .npy artifact). A built approximate index
    (config["index"]["ivf"]) is attached in the background on first use."""
    from similarity.index import EmbeddingIndex

    names = (version.config or {}).get("index") or {}

    def build():
        try:
            with open_stored(names["vectors"]) as handle:
                vectors = np.load(handle, allow_pickle=False)
            with open_stored(names["ids"]) as handle:
                ids = np.load(handle, allow_pickle=False)
        except (KeyError, OSError, ValueError) as exc:
            raise EmbeddingUnavailable(
                f"Embedding v{version.version}: its index files are missing ({exc})."
            ) from None
        # The round stores its pair-cosine quantiles with the index; older versions compute them on load.
        return EmbeddingIndex(ids, vectors, normalise=False, calibration=names.get("calibration"))

    index = _cached(_indexes, (version.pk, version.artifact_sha256, names.get("vectors")), build)
    index.approx_min = approx_min_subjects()
    if names.get("ivf") and index.ivf is None:
        _load_ivf_in_background(index, names["ivf"])
    return index


def build_search_index(version: ModelVersion, run=None) -> str:
    """Build the approximate (IVF) index of a version's vectors, store it next to them in private
    storage and record it in version.config["index"]["ivf"]. Returns what was done, in words."""
    from django.core.files.base import ContentFile

    from core.storage import private_storage, random_name
    from similarity.index import ApproximateIndex

    index = load_index(version)
    threshold = approx_min_subjects()
    if len(index) < threshold:
        return f"{len(index)} subjects: below {threshold}, search stays exact (no index built)."
    if run is not None:
        run.progress(0.1, f"training the index on {len(index)} vectors", force=True)
    # The stored vectors only: a subject this process added since loading is not in the stored file, so
    # the IVF must not hold it either (other processes attach the IVF to the stored vectors).
    ivf = ApproximateIndex.build(index.matrix[: index.n_initial])
    if run is not None:
        run.progress(0.8, "saving the index", force=True)
    name = private_storage().save(
        random_name(f"models/{version.workflow_id}/embedding-v{version.version}-ivf-", ".faiss"),
        ContentFile(ivf.to_bytes()),
    )
    meta = {"name": name, "nlist": ivf.nlist, "nprobe": ivf.nprobe, "trained_size": ivf.trained_size}
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        config = dict(locked.config or {})
        config["index"] = {**(config.get("index") or {}), "ivf": meta}
        locked.config = config
        locked.save(update_fields=["config"])
    version.config = config
    if index.ivf is None:
        index.attach_ivf(ivf)
    return f"Search index of embedding v{version.version}: {len(ivf)} vectors in {ivf.nlist} lists."


def queue_search_index(version: ModelVersion, user=None) -> Job | None:
    """Queue the index build of a version large enough for approximate search (None otherwise)."""
    from jobs.services import queue_job
    from similarity.training import INDEX_BUILD

    n_subjects = (version.metrics or {}).get("n_subjects")
    if n_subjects is None or int(n_subjects) < approx_min_subjects():
        return None
    if ((version.config or {}).get("index") or {}).get("ivf"):
        return None
    job, _ = queue_job(
        INDEX_BUILD,
        project=version.workflow.project,
        workflow=version.workflow,
        params={"version": version.pk},
        user=user,
        coalesce=True,
    )
    return job


def embedding_vectors(workflow: Workflow) -> tuple[np.ndarray, np.ndarray] | None:
    """(subject ids, float32 vectors) of the workflow's active embedding's index; None without one or
    when its files cannot be read. For apps above this one (the gems app's anomaly scores)."""
    version = active_embedding(workflow)
    if version is None:
        return None
    try:
        index = load_index(version)
    except EmbeddingUnavailable:
        return None
    return index.ids.copy(), index.matrix.float().numpy()


def embed_arrays(version: ModelVersion, arrays: list[np.ndarray]) -> np.ndarray:
    """Embed raw images (H, W) / (H, W, 3) with a version's network → (N, D) unit vectors."""
    from mlcore.embedding_model import embed, prepare_images

    model = load_embedding_model(version)
    return embed(model, prepare_images(arrays, model.config.input_size), device="cpu")


# ---------------------------------------------------------------------------------------------
# Search


def latest_unpromoted_embedding(workflow: Workflow) -> ModelVersion | None:
    """The newest embedding version that was trained but not promoted (None when the newest is active)."""
    latest = (
        ModelVersion.objects.filter(workflow=workflow, kind=ModelVersion.EMBEDDING)
        .order_by("-version")
        .first()
    )
    return latest if latest is not None and latest.status != ModelVersion.ACTIVE else None


def no_embedding_message(workflow: Workflow) -> str:
    """Why search cannot run yet and what happens meanwhile: no version is ever used unpromoted, so a
    workflow whose rounds lacked held-out answers has none (volunteers then get random candidates)."""
    latest = latest_unpromoted_embedding(workflow)
    reason = ((latest.metrics or {}).get("promotion") or {}).get("reason") if latest is not None else None
    if reason:
        return (
            f"This workflow has no embedding yet: v{latest.version} was trained but not promoted ({reason}). "
            "Search starts once a version is promoted; until then volunteers are shown random candidates."
        )
    return "This workflow has no embedding yet. An owner can start a training round on the workflow's model page."


@dataclass
class SearchHit:
    subject: Subject
    score: float  # raw cosine similarity
    rank: int
    # Percentile of the cosine among all pairs of the index (similarity.index): 99.7 = more similar
    # than 99.7 % of pairs. None for an index too small to calibrate.
    percentile: float | None = None

    @property
    def top_percent(self) -> str | None:
        """ "0.3" for "top 0.3 % most similar pairs" (two significant figures, "< 0.01" at the top)."""
        return top_percent_text(self.percentile)


def top_percent_text(percentile: float | None) -> str | None:
    if percentile is None:
        return None
    top = max(0.0, 100.0 - float(percentile))
    if top < 0.01:
        return "< 0.01"
    if top >= 10:
        return f"{top:.0f}"
    return f"{float(f'{top:.2g}'):g}"


def search(
    workflow: Workflow, *, subject: Subject | None = None, array: np.ndarray | None = None, top_k: int = 10
):
    """Top-k subjects of the workflow most similar to a subject of the project or an uploaded image.

    Returns (hits, version). The query subject itself is never among its own results.
    """
    version = active_embedding(workflow)
    if version is None:
        raise EmbeddingUnavailable(no_embedding_message(workflow))
    top_k = max(1, min(int(top_k), 100))
    index = load_index(version)
    exclude: list[int] = []
    if subject is not None:
        exclude = [subject.pk]
        query = index.vector(subject.pk)
        if query is None:
            from core.ingest import load_subject_array

            query = embed_arrays(version, [load_subject_array(subject)])[0]
            if subject.workflow_id == workflow.pk:
                # A subject that arrived after the round: this process's index (and its IVF) now finds it
                # too, without a rebuild; the next round stores it with the others.
                index.add([subject.pk], [query])
    elif array is not None:
        query = embed_arrays(version, [array])[0]
    else:
        raise ValueError("Give a subject or an image to search with.")
    result = index.search(query, k=top_k, exclude=exclude)
    percentiles = index.percentile(result.scores)
    subjects = Subject.objects.in_bulk([int(i) for i in result.ids])
    hits = [
        SearchHit(
            subjects[int(i)], float(s), rank, None if percentiles is None else float(percentiles[rank - 1])
        )
        for rank, (i, s) in enumerate(zip(result.ids, result.scores, strict=True), start=1)
        if int(i) in subjects
    ]
    return hits, version


def pair_rate_rows(workflow: Workflow, limit: int = 20):
    """Pairs volunteers disagree on most (rate nearest 0.5) among the most-shown ones, with their
    similarity rate and 95 % Wilson interval (owner page)."""
    shown = list(
        PairStat.objects.filter(workflow=workflow, shown__gt=0)
        .select_related("comparison", "candidate")
        .order_by("-shown", "pk")[: limit * 10]
    )
    shown.sort(key=lambda p: (-p.shown, abs(p.chosen / p.shown - 0.5), p.pk))
    return [{"pair": p, "rate": p.rate, "low": p.interval[0], "high": p.interval[1]} for p in shown[:limit]]


__all__ = [
    "N_CANDIDATES",
    "SimilarityVoteError",
    "SimilarityVoteResult",
    "record_similarity_vote",
    "task_ticket",
    "request_embedding_round",
    "on_similarity_votes_committed",
    "active_embedding",
    "open_embedding_job",
    "search",
    "EmbeddingUnavailable",
]
