"""Rare gems: weirdness over a workflow's whole pool, the gem ranking that learns from the team's
ratings, and the share of the volunteer queue that goes to the top candidates.

Anomaly runs. After each successful training round (loop) or embedding round (similarity) an
`anomaly` job (gpu queue: it runs the classifier over every subject) computes a weirdness score for
every subject of the workflow, retired or not, from the features Skyvote already has:

* the classifier's penultimate layer (mlcore.models `embed`), the same pass loop uses to score the pool,
  in chunks from the array cache, randomly projected to PROJECTED_DIMS (a fixed, seeded projection:
  distances are kept, memory stays small on a million subjects);
* the similarity embedding's vectors (similarity.services.embedding_vectors), when the workflow has one,
  projected the same way when wider;
* cutout statistics (per channel: mean, spread, extremes, the centre's mean), from the same chunks.

Each block is standardised and weighted by 1/sqrt(its width), so no block wins by its size.
mlcore.anomaly scores the matrix (isolation forest, k-NN distance, unsupervised random forest, and
their combination); the scores are stored per subject as AnomalyScore rows of an AnomalyRun, in
chunks. A run that fails is marked failed and readers keep using the latest *succeeded* run.

The gem ranking (`gem_table`). Combined gem score = weirdness + volunteer flags weighted by each
volunteer's skill (labeling.services.participant_weights) + disagreement between the crowd and the
model (|P(real) of the crowd − the model's score|), blended by mlcore.anomaly.gem_ranking, which,
given the team's ratings (GemRating), fits a relevance regressor on the rated subjects' features and
mixes its prediction in (Astronomaly's active anomaly detection): ratings reorder what is left to
review. The run's end stores the ranking then (`gem_score`, `gem_rank`), which the selector reads
for gem slots in one query.
"""

from __future__ import annotations

import io
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Subquery
from django.utils import timezone

from core.formats import parse_id
from core.models import GemFlag, Subject, Workflow
from core.rounds import on_round_succeeded
from core.storage import open_stored, private_storage, random_name
from gems.models import AnomalyRun, AnomalyScore, GemRating
from jobs.models import Job
from jobs.services import GPU, SHORT, JobRun, open_job, queue_job, register

log = logging.getLogger(__name__)

ANOMALY = "anomaly"
METHODS = ("iforest", "knn", "urf")
PROJECTED_DIMS = 32  # the classifier's 256 penultimate activations, projected
GEM_SOURCE_TOP = 200  # gem slots draw from this many of the ranking's top
PAGE_SIZE = 20
WRITE_CHUNK = 5000
DISAGREE_AT = 0.5  # "model and crowd disagree" from this |P(real) crowd − model| on
WEIRD_AT = 0.8  # a method's score from which a row says "weird by …"
METHOD_NAMES = {
    "iforest": "isolation forest",
    "knn": "k-nearest neighbours",
    "urf": "unsupervised random forest",
}

DEFAULTS = {"after_rounds": True, "seed": 0, "chunk": 2048}


class GemError(ValueError):
    """An anomaly run or a rating that cannot be done; the message is for people."""


class GemNotFound(GemError):
    """The subject is not one of the workflow's."""


def gem_setting(name: str):
    return getattr(settings, "SKYVOTE_GEMS", {}).get(name, DEFAULTS[name])


# ---------------------------------------------------------------------------------------------
# Queueing: after rounds, or on request


def request_anomaly(workflow: Workflow, *, reason: str = "requested", user=None) -> tuple[Job, bool]:
    """Queue an anomaly run for the workflow, or return the open one."""
    existing = open_job(workflow, ANOMALY)
    if existing is not None:
        return existing, False
    return queue_job(
        ANOMALY, project=workflow.project, workflow=workflow, params={"reason": reason}, user=user
    )


def _after_round(workflow_id: int, kind: str) -> None:
    if not gem_setting("after_rounds"):
        return
    workflow = Workflow.objects.select_related("project").filter(pk=workflow_id).first()
    if workflow is not None:
        request_anomaly(workflow, reason=f"after the {kind} round")


def register_hooks() -> None:
    """Called once by GemsConfig.ready: follow rounds, and be the selector's source of gem slots."""
    from labeling import selection

    on_round_succeeded(_after_round)
    selection.register_gem_source(gem_slot_candidates)


# ---------------------------------------------------------------------------------------------
# Features


def _projection(dim_in: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim_in, PROJECTED_DIMS)) / math.sqrt(PROJECTED_DIMS)).astype(np.float32)


def cutout_statistics(x: np.ndarray) -> np.ndarray:
    """(n, C, S, S) cutouts → (n, 6 C): per channel mean, standard deviation, 1st and 99th
    percentiles, extreme and the central 9×9 mean (where a transient sits)."""
    x = np.asarray(x, dtype=np.float32)
    n, c, s, _ = x.shape
    flat = x.reshape(n, c, -1)
    half, mid = 4, s // 2
    centre = x[:, :, max(0, mid - half) : mid + half + 1, max(0, mid - half) : mid + half + 1].reshape(
        n, c, -1
    )
    stats = [
        flat.mean(axis=2),
        flat.std(axis=2),
        np.percentile(flat, 1, axis=2),
        np.percentile(flat, 99, axis=2),
        np.abs(flat).max(axis=2),
        centre.mean(axis=2),
    ]
    return np.nan_to_num(np.concatenate(stats, axis=1), nan=0.0, posinf=0.0, neginf=0.0)


def _standardise(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    mean = block.mean(axis=0, keepdims=True)
    std = block.std(axis=0, keepdims=True)
    std[std < 1e-6] = 1.0
    return (block - mean) / std / math.sqrt(block.shape[1])


@dataclass
class PoolFeatures:
    ids: np.ndarray  # subject ids, ascending
    matrix: np.ndarray  # (n, d) float32
    blocks: dict = field(default_factory=dict)  # name → width
    model_version: object = None


def pool_features(workflow: Workflow, run: JobRun | None = None) -> PoolFeatures:
    """Features of every subject of the workflow (retired and unretired) that has any; GemError when
    the workflow has none yet (no classifier, no embedding, no readable cutouts)."""
    from similarity.services import embedding_vectors

    ids = np.fromiter(
        Subject.objects.filter(workflow=workflow).order_by("pk").values_list("pk", flat=True), dtype=np.int64
    )
    if not len(ids):
        raise GemError("The workflow has no subjects to score.")
    blocks: dict[str, np.ndarray] = {}
    version = None
    if workflow.kind == Workflow.REAL_BOGUS:
        version, classifier, stats, ids_ok = _cutout_features(workflow, ids, run)
        if ids_ok is not None:
            keep = np.isin(ids, ids_ok)
            ids = ids[keep]
            if classifier is not None:
                blocks["classifier"] = classifier
            blocks["cutout statistics"] = stats
    embedded = embedding_vectors(workflow)
    if embedded is not None:
        emb_ids, vectors = embedded
        if not blocks:  # a similarity workflow: its subjects are the index's
            ids = np.intersect1d(ids, emb_ids)
        row = {int(i): r for r, i in enumerate(emb_ids)}
        rows = np.array([row.get(int(i), -1) for i in ids], dtype=np.int64)
        if (rows >= 0).any():
            block = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
            block[rows >= 0] = vectors[rows[rows >= 0]]
            fill = vectors[rows[rows >= 0]].mean(axis=0)
            block[rows < 0] = fill  # subjects the index does not know sit at its centre
            if block.shape[1] > PROJECTED_DIMS:  # as the classifier's: small on a million subjects
                block = block @ _projection(block.shape[1], int(gem_setting("seed")) + 1)
            blocks["embedding"] = block
    if not blocks or not len(ids):
        raise GemError(
            "No features to score yet: the workflow needs a trained classifier, an embedding or readable cutouts."
        )
    matrix = np.concatenate([_standardise(b) for b in blocks.values()], axis=1).astype(np.float32)
    return PoolFeatures(ids, matrix, {name: int(b.shape[1]) for name, b in blocks.items()}, version)


def _cutout_features(workflow: Workflow, ids: np.ndarray, run: JobRun | None):
    """(classifier version or None, projected penultimate features or None, cutout statistics, ids in
    row order) from the array cache, in chunks; (None, None, None, None) when no cutout is readable."""
    from loop.arrays import ArrayCache, loader_for
    from loop.services import input_spec, load_model_version, loop_setting, spec_of
    from mlcore.data import TripletArrayDataset
    from mlcore.score import score

    version = workflow.active_model
    model = None
    if version is not None:
        try:
            model = load_model_version(version).model
        except Exception as exc:  # an unreadable checkpoint: go on with what the cutouts say
            if run is not None:
                run.log(f"classifier v{version.version} not used: {exc}")
            version = None
    spec = spec_of(model) if model is not None else input_spec(workflow)
    cache_ = ArrayCache.for_workflow(workflow.pk, spec)
    skipped = cache_.fill(ids, loader_for(cache_.spec))
    if skipped:
        ids = ids[~np.isin(ids, [s for s, _ in skipped])]
        if run is not None:
            run.log(f"left out {len(skipped)} subjects whose arrays could not be read")
    if not len(ids):
        return None, None, None, None
    projection = (
        _projection(model.config.dense_units, int(gem_setting("seed"))) if model is not None else None
    )
    n = len(ids)
    out_ids = np.empty(n, dtype=np.int64)
    classifier = np.empty((n, PROJECTED_DIMS), dtype=np.float32) if model is not None else None
    stats = None
    done = 0
    for ids_chunk, x in cache_.iter_chunks(ids, int(gem_setting("chunk"))):
        rows = slice(done, done + len(ids_chunk))
        out_ids[rows] = ids_chunk
        chunk_stats = cutout_statistics(x)
        if stats is None:
            stats = np.empty((n, chunk_stats.shape[1]), dtype=np.float32)
        stats[rows] = chunk_stats
        if model is not None:
            result = score(
                model,
                TripletArrayDataset(x, preprocessed=True),
                batch_size=int(loop_setting("score_batch_size")),
                features=True,
                precision="float32",
            )
            classifier[rows] = np.nan_to_num(result.features) @ projection
        done += len(ids_chunk)
        if run is not None:
            run.progress(0.6 * done / n, f"features of {done}/{n} subjects")
    order = np.argsort(out_ids, kind="stable")
    return (
        version,
        classifier[order] if classifier is not None else None,
        stats[order],
        out_ids[order],
    )


# ---------------------------------------------------------------------------------------------
# The anomaly job


def _fail_open_runs(job: Job) -> None:
    AnomalyRun.objects.filter(job=job, status=AnomalyRun.RUNNING).update(
        status=AnomalyRun.FAILED, finished_at=timezone.now(), error=(job.error or "the job stopped")[:2000]
    )


@register(
    ANOMALY,
    queue=GPU,
    label="Anomaly scores",
    on_abandon=_fail_open_runs,
    on_failed=_fail_open_runs,
    plain_errors=(GemError,),
)
def anomaly_job(run: JobRun) -> str:
    """Weirdness for every subject of the workflow; a failure leaves the previous run in use."""
    workflow = Workflow.objects.select_related("project", "active_model").get(pk=run.job.workflow_id)
    record = compute_anomaly_run(workflow, run)
    return f"Done: weirdness of {record.n_subjects} subjects ({', '.join(record.methods)})"


def compute_anomaly_run(workflow: Workflow, run: JobRun | None = None) -> AnomalyRun:
    from mlcore.anomaly import weirdness

    seed = int(gem_setting("seed"))
    record = AnomalyRun.objects.create(workflow=workflow, methods=list(METHODS), job=run.job if run else None)
    try:
        features = pool_features(workflow, run)
        scores = weirdness(features.matrix, methods=METHODS, seed=seed)
        combined = np.asarray(scores["combined"], dtype=np.float64)
        if len(combined) != len(features.ids) or not np.all(np.isfinite(combined)):
            raise GemError(
                "The anomaly scores came out invalid (wrong length or NaN); the previous ones stay."
            )
        buffer = io.BytesIO()
        np.save(buffer, features.matrix.astype(np.float16), allow_pickle=False)
        name = private_storage().save(
            random_name(f"gems/{workflow.pk}/run-{record.pk}-", ".npy"), ContentFile(buffer.getvalue())
        )
        record.model_version = features.model_version
        record.features = features.blocks
        record.feature_file = name
        record.n_subjects = len(features.ids)
        record.save(update_fields=["model_version", "features", "feature_file", "n_subjects"])
        _write_scores(record, features.ids, scores, run)
        _drop_cached(record.pk)
        # Not through gem_table's memory: the record is not finished yet, and readers should meet it
        # only once it is.
        write_ranking(record, _rank(workflow, record))
    except Exception as exc:
        AnomalyRun.objects.filter(pk=record.pk).update(
            status=AnomalyRun.FAILED, finished_at=timezone.now(), error=str(exc)[:2000]
        )
        raise
    AnomalyRun.objects.filter(pk=record.pk).update(status=AnomalyRun.SUCCEEDED, finished_at=timezone.now())
    record.status = AnomalyRun.SUCCEEDED
    return record


def _column(scores: dict, name: str, n: int):
    values = scores.get(name)
    return None if values is None else np.asarray(values, dtype=np.float64).reshape(n)


def _write_scores(record: AnomalyRun, ids: np.ndarray, scores: dict, run: JobRun | None) -> None:
    n = len(ids)
    columns = {name: _column(scores, name, n) for name in (*METHODS, "combined")}
    for begin in range(0, n, WRITE_CHUNK):
        stop = min(begin + WRITE_CHUNK, n)
        rows = [
            AnomalyScore(
                run=record,
                subject_id=int(ids[i]),
                row=i,
                **{name: (None if values is None else float(values[i])) for name, values in columns.items()},
            )
            for i in range(begin, stop)
        ]
        with transaction.atomic():
            AnomalyScore.objects.bulk_create(rows, batch_size=1000)
        if run is not None:
            run.progress(0.6 + 0.3 * stop / n, f"stored {stop}/{n} scores")


def write_ranking(record: AnomalyRun, table: GemTable) -> None:
    """Store the ranking as of now (gem_score, gem_rank: 1 = top) on the run's rows, in chunks."""
    table_name = connection.ops.quote_name(AnomalyScore._meta.db_table)
    sql = f"UPDATE {table_name} SET gem_score = %s, gem_rank = %s WHERE run_id = %s AND subject_id = %s"
    rank = np.empty(len(table.ids), dtype=np.int64)
    rank[table.order] = np.arange(1, len(table.ids) + 1)
    for begin in range(0, len(table.ids), WRITE_CHUNK):
        part = slice(begin, begin + WRITE_CHUNK)
        rows = list(
            zip(
                table.score[part].tolist(),
                rank[part].tolist(),
                [record.pk] * len(table.ids[part]),
                table.ids[part].tolist(),
                strict=True,
            )
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)


# ---------------------------------------------------------------------------------------------
# Reading: the latest succeeded run, and the gem ranking


def latest_run(workflow: Workflow) -> AnomalyRun | None:
    return (
        AnomalyRun.objects.filter(workflow=workflow, status=AnomalyRun.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def _latest_run_id(workflow: Workflow):
    return Subquery(
        AnomalyRun.objects.filter(workflow_id=workflow.pk, status=AnomalyRun.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .values("pk")[:1]
    )


def gem_slot_candidates(workflow: Workflow, candidates) -> list[int]:
    """The selector's gem source: up to 8 of `candidates` (unseen, unretired, few votes) among the
    top GEM_SOURCE_TOP of the latest run's ranking, best first. One query."""
    from labeling.selection import TOP_FEW

    return list(
        AnomalyScore.objects.filter(
            run_id=_latest_run_id(workflow), gem_rank__lte=GEM_SOURCE_TOP, subject__in=candidates
        )
        .order_by("gem_rank")
        .values_list("subject_id", flat=True)[:TOP_FEW]
    )


_FEATURES: OrderedDict = OrderedDict()
_FEATURES_KEEP = 4


def _drop_cached(run_id: int) -> None:
    _FEATURES.pop(run_id, None)


def run_features(record: AnomalyRun) -> np.ndarray:
    """The run's feature matrix (float32), kept in memory for the last few runs read."""
    if record.pk in _FEATURES:
        _FEATURES.move_to_end(record.pk)
        return _FEATURES[record.pk]
    with open_stored(record.feature_file) as handle:
        matrix = np.load(handle, allow_pickle=False).astype(np.float32)
    _FEATURES[record.pk] = matrix
    while len(_FEATURES) > _FEATURES_KEEP:
        _FEATURES.popitem(last=False)
    return matrix


@dataclass
class GemTable:
    """Everything the ranking knows, one entry per scored subject (arrays in the run's row order)."""

    run: AnomalyRun
    ids: np.ndarray
    methods: dict  # name → (n,) scores or None
    weirdness: np.ndarray
    n_flags: np.ndarray
    flag_score: np.ndarray
    disagreement: np.ndarray
    rating: np.ndarray  # mean rating, NaN where unrated
    score: np.ndarray
    order: np.ndarray  # row indices, best first
    components: dict


_TABLES: OrderedDict = OrderedDict()
_TABLES_KEEP = 4


def _inputs_key(workflow: Workflow, record: AnomalyRun) -> tuple:
    """What the ranking depends on besides the run: the workflow's ratings, flags and skills, each as
    (count, last change). Three small aggregate queries instead of a whole recomputation per page."""
    from django.db.models import Max

    from labeling.models import ParticipantSkill

    def state(qs, field):
        row = qs.aggregate(n=Count("pk"), last=Max(field))
        return row["n"], row["last"]

    return (
        # The run's own identity: ids alone can come back (SQLite reuses them after a rollback).
        (record.pk, workflow.pk, record.started_at, record.n_subjects),
        state(GemRating.objects.filter(workflow=workflow), "updated_at"),
        state(GemFlag.objects.filter(workflow=workflow), "updated_at"),
        state(ParticipantSkill.objects.filter(workflow=workflow), "updated_at"),
    )


def gem_table(workflow: Workflow, record: AnomalyRun | None = None) -> GemTable | None:
    """The gem ranking of the workflow now, from its latest succeeded run (or `record`); None when
    there is no run yet. Kept in memory for the last few (run, ratings, flags, skills) states, so paging
    through the list does not rank again; otherwise one pass over the run's rows and the workflow's
    flags and ratings."""
    record = record or latest_run(workflow)
    if record is None:
        return None
    key = _inputs_key(workflow, record)
    if key in _TABLES:
        _TABLES.move_to_end(key)
        return _TABLES[key]
    table = _rank(workflow, record)
    _TABLES[key] = table
    while len(_TABLES) > _TABLES_KEEP:
        _TABLES.popitem(last=False)
    return table


def _rank(workflow: Workflow, record: AnomalyRun) -> GemTable:
    from labeling.services import NEW_VOLUNTEER_WEIGHT, participant_weights
    from mlcore.anomaly import gem_ranking

    n = record.n_subjects
    ids = np.empty(n, dtype=np.int64)
    methods = {name: np.full(n, np.nan) for name in METHODS}
    weird = np.zeros(n)
    rows = AnomalyScore.objects.filter(run=record).values_list("row", "subject_id", *METHODS, "combined")
    for row, subject_id, *values, combined in rows.iterator(chunk_size=WRITE_CHUNK):
        ids[row] = subject_id
        for name, value in zip(METHODS, values, strict=True):
            if value is not None:
                methods[name][row] = value
        weird[row] = combined
    position = {int(s): r for r, s in enumerate(ids)}

    weights = participant_weights(workflow)
    n_flags = np.zeros(n, dtype=np.int64)
    flag_score = np.zeros(n)
    for subject_id, participant_id in GemFlag.objects.filter(workflow=workflow).values_list(
        "subject_id", "participant_id"
    ):
        r = position.get(subject_id)
        if r is not None:
            n_flags[r] += 1
            flag_score[r] += weights.get(participant_id, NEW_VOLUNTEER_WEIGHT)

    disagreement = np.zeros(n)
    crowd = Subject.objects.filter(workflow=workflow, p_real__isnull=False, model_score__isnull=False)
    for subject_id, p_real, model_score in crowd.values_list("pk", "p_real", "model_score").iterator(
        chunk_size=WRITE_CHUNK
    ):
        r = position.get(subject_id)
        if r is not None:
            disagreement[r] = abs(p_real - model_score)

    rating = np.full(n, np.nan)
    sums: dict[int, list[float]] = {}
    for subject_id, value in GemRating.objects.filter(workflow=workflow).values_list("subject_id", "rating"):
        sums.setdefault(subject_id, []).append(value)
    for subject_id, values in sums.items():
        r = position.get(subject_id)
        if r is not None:
            rating[r] = sum(values) / len(values)
    rated_idx = np.flatnonzero(~np.isnan(rating))
    features = (
        run_features(record) if record.feature_file and len(rated_idx) else np.zeros((n, 1), np.float32)
    )
    score, components = gem_ranking(
        weird,
        flag_score,
        disagreement,
        features,
        rated_idx,
        rating[rated_idx],
        seed=int(gem_setting("seed")),
    )
    score = np.asarray(score, dtype=np.float64)
    order = np.lexsort((ids, -score))  # best first; ties by subject id, so pages are stable
    return GemTable(
        record, ids, methods, weird, n_flags, flag_score, disagreement, rating, score, order, components
    )


def reasons(table: GemTable, r: int) -> list[str]:
    """Why row `r` ranks high, in words."""
    out = []
    for name in METHODS:
        value = table.methods[name][r]
        if not np.isnan(value) and value >= WEIRD_AT:
            out.append(f"weird by {METHOD_NAMES[name]} {value:.2f}")
    if not out:
        out.append(f"weirdness {table.weirdness[r]:.2f}")
    if table.n_flags[r]:
        out.append(f"{table.n_flags[r]} flag{'s' if table.n_flags[r] != 1 else ''}")
    if table.disagreement[r] >= DISAGREE_AT:
        out.append("model and crowd disagree")
    return out


@dataclass
class GemRow:
    rank: int
    subject: Subject
    score: float
    reasons: list
    n_flags: int
    notes: list  # (note text, pseudonym)
    ratings: list  # GemRating rows
    my_rating: int | None
    methods: dict


@dataclass
class GemPage:
    rows: list
    number: int
    n_pages: int
    total: int
    show: str
    run: AnomalyRun | None


def flag_notes(workflow: Workflow, ids) -> dict[int, list[tuple[str, int]]]:
    """{subject id: [(note, participant id), ...]} of the volunteers' non-empty notes, oldest first, in
    one query: the page, the API and the export show the same notes."""
    notes: dict[int, list[tuple[str, int]]] = {}
    for subject_id, note, participant_id in (
        GemFlag.objects.filter(workflow=workflow, subject_id__in=ids)
        .exclude(note="")
        .order_by("created_at", "pk")
        .values_list("subject_id", "note", "participant_id")
    ):
        notes.setdefault(subject_id, []).append((note, participant_id))
    return notes


def candidates_page(workflow: Workflow, user, *, page: int = 1, show: str = "review") -> GemPage:
    """One page of PAGE_SIZE candidates, best first: those nobody rated yet ("review"), or the rated
    ones ("rated")."""
    table = gem_table(workflow)
    if table is None:
        return GemPage([], 1, 1, 0, show, None)
    rated = ~np.isnan(table.rating)
    order = table.order[rated[table.order]] if show == "rated" else table.order[~rated[table.order]]
    total = len(order)
    n_pages = max(1, math.ceil(total / PAGE_SIZE))
    number = min(max(1, page), n_pages)
    chosen = order[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    ids = [int(table.ids[r]) for r in chosen]
    subjects = Subject.objects.in_bulk(ids)
    project = workflow.project
    notes = {
        subject_id: [(note, project.pseudonym(participant_id)) for note, participant_id in found]
        for subject_id, found in flag_notes(workflow, ids).items()
    }
    ratings: dict[int, list] = {}
    for rating in GemRating.objects.filter(workflow=workflow, subject_id__in=ids).select_related("rated_by"):
        ratings.setdefault(rating.subject_id, []).append(rating)
    rows = []
    for k, r in enumerate(chosen):
        subject_id = int(table.ids[r])
        if subject_id not in subjects:
            continue
        mine = next((g.rating for g in ratings.get(subject_id, []) if g.rated_by_id == user.pk), None)
        rows.append(
            GemRow(
                rank=(number - 1) * PAGE_SIZE + k + 1,
                subject=subjects[subject_id],
                score=float(table.score[r]),
                reasons=reasons(table, r),
                n_flags=int(table.n_flags[r]),
                notes=notes.get(subject_id, []),
                ratings=ratings.get(subject_id, []),
                my_rating=mine,
                methods={name: table.methods[name][r] for name in METHODS},
            )
        )
    return GemPage(rows, number, n_pages, total, show, table.run)


# ---------------------------------------------------------------------------------------------
# Ratings


def parse_rating(value) -> int:
    """A rating from a form or JSON: a whole number 0–5 ("i" = interesting = 5, "n" = not = 0);
    GemError with a message otherwise."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("i", "n"):
        return 5 if text == "i" else 0
    # ASCII digits only (str.isdigit accepts "²", which int() refuses); JSON false/true are not ratings.
    if isinstance(value, bool) or text not in ("0", "1", "2", "3", "4", "5"):
        raise GemError(f"A rating is a whole number from 0 to 5 (or i / n); got {str(value)[:20]!r}.")
    return int(text)


def rate(workflow: Workflow, subject_id, user, value) -> GemRating:
    """Store `user`'s rating of a subject of `workflow` (a second rating replaces the first).
    GemError for a bad rating or a subject that is not the workflow's."""
    rating = parse_rating(value)
    pk = parse_id(str(subject_id))
    subject = Subject.objects.filter(pk=pk, workflow=workflow).only("pk").first() if pk is not None else None
    if subject is None:
        raise GemNotFound("No such subject in this workflow.")
    now = timezone.now()
    for _attempt in range(2):
        try:
            with transaction.atomic():
                found, created = GemRating.objects.select_for_update().get_or_create(
                    subject=subject,
                    rated_by=user,
                    defaults={"workflow": workflow, "rating": rating, "created_at": now, "updated_at": now},
                )
                if not created:
                    found.rating, found.updated_at = rating, now
                    found.save(update_fields=["rating", "updated_at"])
            return found
        except IntegrityError:  # two first ratings at once (two tabs): the loser updates the winner's
            continue
    raise GemError("Your rating could not be stored just now; try again.")


def flag_counts(workflow: Workflow):
    """{subject id: flags} of the workflow."""
    rows = GemFlag.objects.filter(workflow=workflow).values("subject").annotate(n=Count("id")).order_by()
    return {row["subject"]: row["n"] for row in rows}


# ---------------------------------------------------------------------------------------------
# Sending the top candidates to a follow-up workflow

SEND = "gems_send"
MAX_SEND = 1000


def request_send(workflow: Workflow, target: Workflow, n: int, user=None) -> tuple[Job, bool]:
    """Queue copies of the `n` best unrated-or-rated candidates into a new subject set of `target`
    (another workflow of the project: a similarity or typing workflow that looks closer). The list is
    taken now, so the copies are what the team saw; each copy remembers where it came from and the
    team's ratings, which a follow-up workflow can use as gold. GemError when it cannot be done."""
    if target.project_id != workflow.project_id:
        raise GemNotFound("No such workflow in this project.")
    if target.pk == workflow.pk:
        raise GemError("Pick another workflow: these candidates are already in this one.")
    if not 1 <= n <= MAX_SEND:
        raise GemError(f"Send between 1 and {MAX_SEND} candidates.")
    table = gem_table(workflow)
    if table is None:
        raise GemError("No anomaly scores yet: there are no candidates to send.")
    ids = [int(table.ids[r]) for r in table.order[:n]]
    return queue_job(
        SEND,
        project=workflow.project,
        workflow=target,
        params={"source_workflow": workflow.pk, "subject_ids": ids},
        user=user,
    )


@register(SEND, queue=SHORT, label="Send gem candidates", plain_errors=(GemError,))
def send_job(run: JobRun) -> str:
    """Copy the listed subjects (arrays, stamps, light curves, metadata) into a new subject set of the
    job's workflow. A subject that cannot be read fails alone; a re-run after a lost worker finds the
    copies already made (same set name, same external ids) and adds only what is missing."""
    from core.ingest import add_subject, load_subject_array, load_subject_stamps
    from core.models import SubjectSet

    target = Workflow.objects.select_related("project").get(pk=run.job.workflow_id)
    source = Workflow.objects.get(pk=run.job.params["source_workflow"])
    ids = [int(i) for i in run.job.params.get("subject_ids") or []]
    name = f"Gem candidates from {source.name} (job {run.job.pk})"[:200]
    subject_set = SubjectSet.objects.filter(project=target.project, name=name).first()
    if subject_set is None:
        subject_set = SubjectSet.objects.create(project=target.project, name=name)
        subject_set.workflows.add(target)
    ratings: dict[int, list[int]] = {}
    for subject_id, value in GemRating.objects.filter(subject_id__in=ids).values_list("subject_id", "rating"):
        ratings.setdefault(subject_id, []).append(value)
    subjects = Subject.objects.in_bulk(ids)
    copied, failed = 0, []
    for rank, subject_id in enumerate(ids, start=1):
        subject = subjects.get(subject_id)
        if subject is None:
            continue
        try:
            stamps = load_subject_stamps(subject) if (subject.metadata or {}).get("stamps_file") else None
            metadata = {k: v for k, v in (subject.metadata or {}).items() if k != "stamps_file"}
            metadata["sent_from"] = {
                "workflow": source.slug,
                "subject": subject.pk,
                "gem_rank": rank,
                "gem_ratings": ratings.get(subject.pk, []),
            }
            add_subject(
                project=target.project, workflow=target, subject_set=subject_set,
                external_id=subject.external_id, array=load_subject_array(subject), metadata=metadata,
                source="gems", object_id=subject.object_id, survey=subject.survey,
                schema_version=subject.schema_version, light_curve=subject.light_curve, stamps=stamps or None,
            )  # fmt: skip
            copied += 1
        except Exception as exc:  # one unreadable subject must not stop the rest
            failed.append(subject.external_id)
            run.log(f"{subject.external_id}: not copied ({exc})")
        run.progress(rank / max(len(ids), 1), f"copied {copied} of {len(ids)}")
    note = f"; {len(failed)} could not be read" if failed else ""
    return f"Done: {copied} candidates in the subject set “{subject_set.name}”{note}"
