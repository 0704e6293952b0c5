"""The volunteering app's exports: raw votes (one row per vote) and labels (one row per subject of a
real/bogus workflow, with the crowd's P(real), the decided label and the active model's score; its
type posterior and decided type where the workflow asks "What kind?") and volunteers (their skill).

| export | formats | one row per |
| --- | --- | --- |
| votes | csv, jsonl, parquet | vote (flat columns, client metadata in columns of its own, the rare-gem flag sent with it) |
| labels | csv, parquet, fits, ecsv | subject of a real/bogus workflow (with how many volunteers flagged it as a rare gem) |
| light_curves | csv, parquet, fits | light-curve point of a subject of a real/bogus workflow (Subject.light_curve) |
| volunteers | csv, parquet, fits | volunteer and real/bogus workflow (ParticipantSkill: SWAP and Dawid-Skene skill, type confusion) |

Votes a volunteer took back (undone, or a skip replaced by the answer given when the subject came
back: labeling.models.VoteRetraction) are left out of the votes export, as they are left out of every
count and aggregation: re-aggregating an export gives the server's numbers. The rows stay in the
database, with their retraction, for the record.

The shared machinery (writers, keyset chunks, provenance, the export job) is core.exporters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from django.db.models import BooleanField, Count, ExpressionWrapper, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from core import gems
from core.exporters import (
    DEFAULT_CHUNK,
    Column,
    Exporter,
    ExportError,
    Progress,
    base_meta,
    datetime_text,
    iso,
    json_text,
    keyset_chunks,
    model_info,
    project_workflows,
    pseudonymizer,
    register_exporter,
    write_table,
)
from core.followups import type_keys, type_labels
from core.models import GemFlag, Project, Subject, Workflow
from labeling.labels import decided_filter, label_of
from labeling.models import Vote

VOTE_FORMATS = ("csv", "jsonl", "parquet")
LABEL_FORMATS = ("csv", "parquet", "fits", "ecsv")


def _vote_columns(include_worker_ids: bool) -> list[Column]:
    cols = [
        Column("vote_id", "int", "Vote id (stable within this server)"),
        Column("participant", "str", "Participant pseudonym: stable within the project", 14),
        Column("participant_kind", "str", "user, anonymous or worker", 10),
    ]
    if include_worker_ids:
        cols.append(Column("worker_id", "str", "Panel worker id (owners only)", 200))
    cols += [
        Column("workflow", "str", "Workflow slug", 50),
        Column("subject_id", "int", "Subject id (stable within this server)"),
        Column("subject_external_id", "str", "Subject external id, e.g. the ZTF candid", 100),
        Column("answer", "str", "The answer given (or skip)", 30),
        Column("started_at", "datetime", "When the subject was shown (client clock, UTC)"),
        Column("finished_at", "datetime", "When the answer was given (UTC)"),
        Column("created_at", "datetime", "When the server stored the vote (UTC)"),
        Column("gold", "bool", "The subject had an expert (gold) label when the vote was cast"),
        Column("gold_correct", "bool", "The answer agreed with the gold label (empty if not gold)"),
        Column("late", "bool", "The subject had already retired when the vote arrived"),
        Column("source", "str", "web, api, import or panel", 20),
        Column("user_agent", "str", "Browser user agent", 400),
        Column("viewport", "str", "Browser viewport, e.g. 1280x800", 40),
        Column("gem", "bool", "The volunteer flagged the subject as a rare gem with this vote"),
        Column("gem_note", "str", "The volunteer's note with the flag (plain text; empty without one)", 280),
        Column(
            "followup",
            "str",
            "Answer to the follow-up question (What kind?): a type key of the workflow, not_sure, or empty "
            "(none asked, or passed)",
            30,
        ),
    ]
    return cols


LABEL_COLUMNS = [
    Column("subject_id", "int", "Subject id (stable within this server)"),
    Column("external_id", "str", "Subject external id, e.g. the ZTF candid", 100),
    Column("object_id", "str", "ZTF objectId", 100),
    Column("workflow", "str", "Workflow slug", 50),
    Column("ra", "float", "Right ascension (J2000)", unit="deg"),
    Column("dec", "float", "Declination (J2000)", unit="deg"),
    Column("status", "str", "active or retired", 10),
    Column("n_votes", "int", "Votes (skips not counted)"),
    Column("n_real", "int", "Votes for real"),
    Column("n_bogus", "int", "Votes for bogus"),
    Column("p_real", "float", "Aggregated posterior P(real) from the crowd"),
    Column("label", "str", "Label: gold label if any, else the crowd's when decided, else empty", 10),
    Column("label_source", "str", "gold or crowd (empty: not decided)", 10),
    Column("confidence", "float", "1 for gold, |2 P(real) - 1| for crowd labels"),
    Column("aggregation_method", "str", "How P(real) was computed (e.g. swap, dawid_skene)", 30),
    Column("aggregation_params", "str", "The workflow's aggregation/retirement parameters (JSON)", 400),
    Column("retired_reason", "str", "Why the subject retired", 60),
    Column("retired_at", "datetime", "When the subject retired (UTC)"),
    Column("needs_review", "bool", "Reached the vote limit undecided"),
    Column("gold_label", "str", "Expert (gold) label", 20),
    Column("model_score", "float", "Active model's P(real)"),
    Column("model_uncertainty", "float", "Active model's uncertainty"),
    Column("model_version", "str", "Active model version that gave the score", 20),
    Column("is_holdout", "bool", "Held out for model evaluation"),
    Column("survey", "str", "Alert stream: ztf or rubin (empty for files that are not alerts)", 10),
    Column("schema_version", "str", "Alert schema version", 20),
    Column("survey_score", "float", "The survey's own real/bogus score: Rubin reliability, ZTF drb or rb"),
    Column("survey_score_name", "str", "reliability, drb or rb", 20),
    Column("n_gem_flags", "int", "Volunteers who flagged the subject as a rare gem"),
]
# Typed labels (core.followups) and the model as a voter. They come after the columns above, so those
# keep their places: these four in every labels export, then one p_type_<key> per type of the exported
# workflows (`label_columns`; none for workflows without follow-up types).
LABEL_TYPE_COLUMNS = [
    Column(
        "decided_with_model", "bool", "P(real) was decided with the model voting (workflow's model_votes)"
    ),
    Column(
        "decided_type",
        "str",
        "Decided type (a type key) once its posterior reaches the workflow's type "
        "confidence; empty until then",
        30,
    ),
    Column("model_type", "str", "Active model's most likely type (a type key; models with a type head)", 30),
    Column("model_type_p", "float", "Active model's probability of model_type"),
]


def workflow_types(workflows: list[Workflow]) -> dict[str, str]:
    """{type key: label} of the workflows' follow-up types, in type_keys order, first workflow first
    (a key two workflows share keeps the first one's label)."""
    found: dict[str, str] = {}
    for wf in workflows:
        labels = type_labels(wf.followups)
        for key in type_keys(wf.followups):
            found.setdefault(key, labels.get(key, key))
    return found


def label_columns(types: dict[str, str]) -> list[Column]:
    """The labels export's columns: LABEL_COLUMNS, LABEL_TYPE_COLUMNS, then p_type_<key> per type."""
    return [
        *LABEL_COLUMNS,
        *LABEL_TYPE_COLUMNS,
        *(
            Column(f"p_type_{key}", "float", f"Crowd posterior P(type = {label})")
            for key, label in types.items()
        ),
    ]


def vote_queryset(project: Project, workflow: Workflow | None = None, upto_pk: int | None = None):
    workflows = project_workflows(project, workflow)
    qs = Vote.objects.filter(workflow_id__in=[w.pk for w in workflows], retracted=False)
    if upto_pk is not None:
        qs = qs.filter(pk__lte=upto_pk)
    return qs


def vote_rows(
    project: Project,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    upto_pk: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[list[tuple]]:
    """Chunks of flat vote rows in `_vote_columns(include_worker_ids)` order; date-times as ISO text."""
    slugs = {w.pk: w.slug for w in project_workflows(project, workflow)}
    pseudonym = pseudonymizer(project)
    fields = [
        "pk", "participant_id", "participant__kind", "participant__external_id", "workflow_id",
        "subject_id", "subject__external_id", "answer", "was_gold", "gold_correct", "subject_was_retired",
        "source", "user_agent", "viewport", "followup",
    ]  # fmt: skip
    qs, times = datetime_text(
        vote_queryset(project, workflow, upto_pk), ["started_at", "finished_at", "created_at"]
    )
    # The rare-gem flag sent with each vote (core.gems): its note, "" without one, None without a flag.
    qs = gems.with_gem_note(qs)
    for chunk in keyset_chunks(qs, fields + times + ["gem_note"], chunk_size, raw=True):
        if include_worker_ids:
            yield [
                (pk, pseudonym(pid), kind, ext or None, slugs[wid], sid, sext, answer, iso(t0), iso(t1), iso(t2),
                 gold, correct, late, source, agent, viewport, note is not None, note or None, followup or None)
                for pk, pid, kind, ext, wid, sid, sext, answer, gold, correct, late, source, agent, viewport, followup,
                t0, t1, t2, note in chunk
            ]  # fmt: skip
        else:
            yield [
                (pk, pseudonym(pid), kind, slugs[wid], sid, sext, answer, iso(t0), iso(t1), iso(t2),
                 gold, correct, late, source, agent, viewport, note is not None, note or None, followup or None)
                for pk, pid, kind, _ext, wid, sid, sext, answer, gold, correct, late, source, agent, viewport, followup,
                t0, t1, t2, note in chunk
            ]  # fmt: skip


def aggregation_params(workflow: Workflow) -> dict:
    """The parameters behind P(real) and retirement, as exported with every label."""
    return {
        "retirement_rule": workflow.retirement_rule,
        "retirement_limit": workflow.retirement_limit,
        "swap_prior": workflow.swap_prior,
        "swap_p_low": workflow.swap_p_low,
        "swap_p_high": workflow.swap_p_high,
        "min_votes": workflow.min_votes,
        "max_votes": workflow.max_votes,
        "consensus_fraction": workflow.consensus_fraction,
    }


def _as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def label_queryset(workflow: Workflow, upto_pk: int | None = None):
    flags = (
        GemFlag.objects.filter(workflow=workflow, subject=OuterRef("pk"))
        .order_by()
        .values("subject")
        .annotate(n=Count("pk"))
        .values("n")
    )
    qs = Subject.objects.filter(workflow=workflow).annotate(
        decided=ExpressionWrapper(decided_filter(workflow), output_field=BooleanField()),
        n_gem_flags=Coalesce(Subquery(flags, output_field=IntegerField()), 0),
    )
    if upto_pk is not None:
        qs = qs.filter(pk__lte=upto_pk)
    return qs


def label_rows(
    project: Project,
    *,
    workflow: Workflow | None = None,
    upto_pk: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    types: dict[str, str] | None = None,
) -> Iterator[list[tuple]]:
    """Chunks of label rows (`label_columns(types)` order) for the project's real/bogus workflows;
    `types` defaults to those workflows' types (workflow_types)."""
    fields = [
        "pk", "external_id", "object_id", "metadata__ra", "metadata__dec", "status", "vote_count",
        "answer_counts", "p_real", "aggregation_method", "retired_reason", "retired_at", "needs_review",
        "gold_label", "model_score", "model_uncertainty", "is_holdout", "decided",
        "survey", "schema_version", "metadata__survey_score", "metadata__survey_score_name", "n_gem_flags",
        "decided_with_model", "decided_type", "model_type", "model_type_p", "type_posterior",
    ]  # fmt: skip
    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    keys = list(workflow_types(workflows) if types is None else types)
    for wf in workflows:
        params = json.dumps(aggregation_params(wf), sort_keys=True)
        model_version = f"v{wf.active_model.version}" if wf.active_model_id else None
        # Votes for real / bogus: the answers that count as each side (an answer "not sure" neither).
        side_of = {o["key"]: o["counts_as"] for o in wf.answer_options}
        for chunk in keyset_chunks(label_queryset(wf, upto_pk), fields, chunk_size):
            rows = []
            for (
                pk, ext, obj, ra, dec, status, n, counts, p, method, reason, retired_at, review,
                gold, score, unc, holdout, decided, survey, schema, survey_score, survey_score_name, n_gems,
                with_model, decided_type, model_type, model_type_p, posterior,
            ) in chunk:  # fmt: skip
                counts = counts or {}
                # A type the posterior does not name (or a workflow without types) is missing, not 0.
                posterior = posterior if isinstance(posterior, dict) else {}
                label, source, confidence = label_of(gold, bool(decided), p)
                rows.append(
                    (
                        pk,
                        ext,
                        obj or None,
                        wf.slug,
                        _as_float(ra),
                        _as_float(dec),
                        status,
                        n,
                        sum(int(v) for k, v in counts.items() if side_of.get(k) == Subject.REAL),
                        sum(int(v) for k, v in counts.items() if side_of.get(k) == Subject.BOGUS),
                        p,
                        label or None,
                        source or None,
                        confidence,
                        method or None,
                        params,
                        reason or None,
                        retired_at,
                        review,
                        gold or None,
                        score,
                        unc,
                        model_version if score is not None else None,
                        holdout,
                        survey or None,
                        schema or None,
                        _as_float(survey_score),
                        survey_score_name if isinstance(survey_score_name, str) else None,
                        n_gems,
                        with_model,
                        decided_type or None,
                        model_type or None,
                        model_type_p,
                        *(_as_float(posterior.get(key)) for key in keys),
                    )  # fmt: skip
                )
            yield rows


# ---------------------------------------------------------------------------------------------
# Whole exports


def export_votes(
    project: Project,
    path: Path,
    fmt: str,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    if fmt not in VOTE_FORMATS:
        raise ExportError(
            f"Votes export as '{fmt}' is not possible; choose one of {', '.join(VOTE_FORMATS)}."
        )
    qs = vote_queryset(project, workflow)
    upto = qs.order_by("-pk").values_list("pk", flat=True).first() or 0
    total = qs.filter(pk__lte=upto).count()
    meta = base_meta(project, "votes", workflow) | {"upto_vote_id": upto, "worker_ids": include_worker_ids}
    columns = _vote_columns(include_worker_ids)
    chunks = vote_rows(
        project, workflow=workflow, include_worker_ids=include_worker_ids, upto_pk=upto, chunk_size=chunk_size
    )
    n = write_table(fmt, path, columns, chunks, meta, extname="VOTES", progress=Progress(total, progress))
    return {"rows": n, **meta}


def export_labels(
    project: Project,
    path: Path,
    fmt: str,
    *,
    workflow: Workflow | None = None,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    if fmt not in LABEL_FORMATS:
        raise ExportError(
            f"Labels export as '{fmt}' is not possible; choose one of {', '.join(LABEL_FORMATS)}."
        )
    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    if workflow is not None and workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Labels exist for real/bogus workflows only; export this workflow's votes instead.")
    upto = Subject.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first() or 0
    total = Subject.objects.filter(workflow__in=workflows, pk__lte=upto).count()
    types = workflow_types(workflows)
    meta = base_meta(project, "labels", workflow) | {
        "aggregation": {wf.slug: aggregation_params(wf) for wf in workflows},
        # Each workflow's follow-up types (key → label); p_type_<key> columns follow their union.
        "types": {wf.slug: workflow_types([wf]) for wf in workflows},
        "models": {wf.slug: model_info(wf) for wf in workflows},
        "label_rule": "gold label if any; else the crowd's (P(real) >= 0.5 → real) for subjects with "
        "enough evidence (labeling.labels.training_labels); else empty",
    }
    # The parameters are known per workflow up front: size their FITS column to fit, not to a guess.
    params_width = max([len(json.dumps(aggregation_params(wf), sort_keys=True)) for wf in workflows] + [1])
    columns = [
        replace(c, width=params_width) if c.name == "aggregation_params" else c for c in label_columns(types)
    ]
    chunks = label_rows(project, workflow=workflow, upto_pk=upto, chunk_size=chunk_size, types=types)
    n = write_table(fmt, path, columns, chunks, meta, extname="LABELS", progress=Progress(total, progress))
    return {"rows": n, **meta}


@register_exporter
class VotesExporter(Exporter):
    identifier = "votes"
    verbose_name = "Raw votes"
    formats = VOTE_FORMATS

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        include_worker_ids = bool(params.get("include_worker_ids"))
        return export_votes(
            project, target, fmt, workflow=workflow, include_worker_ids=include_worker_ids, progress=progress
        )


@register_exporter
class LabelsExporter(Exporter):
    identifier = "labels"
    verbose_name = "Labels"
    formats = LABEL_FORMATS
    workflow_kind = Workflow.REAL_BOGUS

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        return export_labels(project, target, fmt, workflow=workflow, progress=progress)


# ---------------------------------------------------------------------------------------------
# Light curves: one row per point of every subject's stored light curve

LIGHT_CURVE_FORMATS = ("csv", "parquet", "fits")
LIGHT_CURVE_COLUMNS = [
    Column("subject_id", "int", "Subject id (stable within this server)"),
    Column("external_id", "str", "Subject external id: ZTF candid or Rubin diaSourceId", 100),
    Column("object_id", "str", "ZTF objectId or Rubin diaObjectId", 100),
    Column("survey", "str", "ztf or rubin (empty for other sources)", 10),
    Column("workflow", "str", "Workflow slug", 50),
    Column("mjd", "float", "Time of the observation (MJD)", unit="d"),
    Column("band", "str", "Filter: u g r i z y (ZTF: g r i)", 8),
    Column("flux", "float", "Difference-image flux (empty for upper limits)", unit="nJy"),
    Column("flux_err", "float", "1-sigma flux uncertainty", unit="nJy"),
    Column("mag", "float", "AB magnitude of |flux|; for an upper limit, the limiting magnitude", unit="mag"),
    Column("mag_err", "float", "Magnitude uncertainty", unit="mag"),
    Column("kind", "str", "detection, limit (upper limit: not detected) or forced (forced photometry)", 10),
    Column("current", "bool", "The subject's own detection (the alert's candidate / diaSource)"),
]


def light_curve_points(curve) -> Iterator[tuple]:
    """(mjd, band, flux, flux_err, mag, mag_err, kind, current) of each usable point, oldest first."""
    points = []
    for point in curve or []:
        if not isinstance(point, dict):
            continue
        mjd = _as_float(point.get("mjd"))
        if mjd is None:
            continue
        points.append(
            (
                mjd,
                str(point.get("band") or "") or None,
                _as_float(point.get("flux_njy")),
                _as_float(point.get("flux_err_njy")),
                _as_float(point.get("mag")),
                _as_float(point.get("mag_err")),
                str(point.get("kind") or "") or None,
                bool(point.get("current", False)),
            )
        )
    return iter(sorted(points, key=lambda p: (p[0], p[7])))


def light_curve_queryset(project: Project, workflows: list[Workflow], upto_pk: int | None = None):
    qs = Subject.objects.filter(project=project, workflow__in=workflows)
    if upto_pk is not None:
        qs = qs.filter(pk__lte=upto_pk)
    return qs


def light_curve_rows(
    project: Project,
    *,
    workflow: Workflow | None = None,
    upto_pk: int | None = None,
    chunk_size: int = 2_000,
    subjects_done: Callable[[int], None] | None = None,
) -> Iterator[list[tuple]]:
    """Chunks of rows in LIGHT_CURVE_COLUMNS order, subject by subject (by id), each subject's points
    oldest first. subjects_done(n) is told how many subjects have been read."""
    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    slugs = {w.pk: w.slug for w in workflows}
    fields = ["pk", "external_id", "object_id", "survey", "workflow_id", "light_curve"]
    done = 0
    for chunk in keyset_chunks(light_curve_queryset(project, workflows, upto_pk), fields, chunk_size):
        rows = []
        for pk, ext, obj, survey, wid, curve in chunk:
            for point in light_curve_points(curve):
                rows.append((pk, ext, obj or None, survey or None, slugs.get(wid), *point))
        done += len(chunk)
        if subjects_done is not None:
            subjects_done(done)
        yield rows


def export_light_curves(
    project: Project,
    path: Path,
    fmt: str,
    *,
    workflow: Workflow | None = None,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = 2_000,
) -> dict:
    if fmt not in LIGHT_CURVE_FORMATS:
        raise ExportError(
            f"Light curves export as '{fmt}' is not possible; choose one of {', '.join(LIGHT_CURVE_FORMATS)}."
        )
    if workflow is not None and workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Light curves belong to the alerts of real/bogus workflows.")
    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    upto = Subject.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first() or 0
    total = light_curve_queryset(project, workflows, upto).count()
    tick = Progress(total, progress)
    meta = base_meta(project, "light_curves", workflow) | {
        "upto_subject_id": upto,
        "flux_unit": "nJy",
        "mag_system": "AB (m = 31.4 - 2.5 log10(flux / nJy))",
        "kinds": {
            "detection": "a detection on the difference image",
            "limit": "not detected: mag is the limiting (5-sigma) magnitude",
            "forced": "forced photometry at the object's position (any S/N; the flux may be negative)",
        },
    }
    chunks = light_curve_rows(
        project,
        workflow=workflow,
        upto_pk=upto,
        chunk_size=chunk_size,
        subjects_done=lambda n: tick(n, f"light curves of {n:,} of {total:,} subjects"),
    )
    n = write_table(fmt, path, LIGHT_CURVE_COLUMNS, chunks, meta, extname="LIGHTCURVES")
    return {"rows": n, **meta}


@register_exporter
class LightCurvesExporter(Exporter):
    identifier = "light_curves"
    verbose_name = "Light curves"
    contents = "one row per point: subject, mjd, band, flux, error, mag, kind"
    formats = LIGHT_CURVE_FORMATS
    workflow_kind = Workflow.REAL_BOGUS

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        return export_light_curves(project, target, fmt, workflow=workflow, progress=progress)


# ---------------------------------------------------------------------------------------------
# Volunteers: one row per volunteer and workflow (labeling.models.ParticipantSkill)

VOLUNTEER_FORMATS = ("csv", "parquet", "fits")


def _volunteer_columns(
    include_worker_ids: bool, classes_width: int = 0, matrix_width: int = 0
) -> list[Column]:
    cols = [
        Column(
            "participant",
            "str",
            "Participant pseudonym: stable within the project (as in the votes export)",
            14,
        ),
        Column("participant_kind", "str", "user, anonymous or worker", 10),
    ]
    if include_worker_ids:
        cols.append(Column("worker_id", "str", "Panel worker id (owners only)", 200))
    cols += [
        Column("workflow", "str", "Workflow slug", 50),
        Column("n_votes", "int", "Votes that count (skips and votes taken back not counted)"),
        Column("n_gold", "int", "Votes on gold subjects"),
        Column("n_gold_correct", "int", "Votes on gold subjects that agreed with the gold label"),
        Column("gold_accuracy", "float", "n_gold_correct / n_gold (empty without gold votes)"),
        Column("p_l", "float", "SWAP P(says real | real): the weight of this volunteer's next vote"),
        Column("p_d", "float", "SWAP P(says bogus | bogus): the weight of this volunteer's next vote"),
        Column("gold_p_l", "float", "P(says real | real) from the gold answers alone (with the new-volunteer prior)"),
        Column("gold_p_d", "float", "P(says bogus | bogus) from the gold answers alone (with the new-volunteer prior)"),
        Column("ds_p_l", "float", "Dawid-Skene P(says real | real) from agreement (empty before a recompute)"),
        Column("ds_p_d", "float", "Dawid-Skene P(says bogus | bogus) from agreement (empty before a recompute)"),
        Column(
            "type_classes", "list",
            "Type keys of type_confusion's rows and columns, in order (empty before a recompute has seen "
            "this volunteer name a type)", classes_width,
        ),
        Column(
            "type_confusion", "matrix",
            "Dawid-Skene type confusion: row i (true type type_classes[i]), column j: P(says type_classes[j])",
            matrix_width,
        ),
        Column("updated_at", "datetime", "When this volunteer's skill was last updated (UTC)"),
    ]  # fmt: skip
    return cols


def _type_confusion(value) -> tuple[list[str] | None, list[list[float | None]] | None]:
    """(classes, K×K matrix) of a stored type confusion, or (None, None) when there is none yet or it
    does not have that shape (non-finite entries become missing)."""
    if not isinstance(value, dict):
        return None, None
    classes, matrix = value.get("classes"), value.get("matrix")
    if not (
        isinstance(classes, list) and classes and isinstance(matrix, list) and len(matrix) == len(classes)
    ):
        return None, None
    if not all(isinstance(row, list) and len(row) == len(classes) for row in matrix):
        return None, None
    return [str(c) for c in classes], [[_as_float(x) for x in row] for row in matrix]


def volunteer_queryset(project: Project, workflow: Workflow | None = None):
    from labeling.models import ParticipantSkill

    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    return ParticipantSkill.objects.filter(workflow_id__in=[w.pk for w in workflows], n_votes__gt=0)


def volunteer_rows(
    project: Project,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    upto_pk: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[list[tuple]]:
    """Chunks of rows in `_volunteer_columns(include_worker_ids)` order, by skill id."""
    from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
    from mlcore.aggregation import BOGUS, REAL, swap_skill

    slugs = {w.pk: w.slug for w in project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])}
    pseudonym = pseudonymizer(project)
    qs = volunteer_queryset(project, workflow)
    if upto_pk is not None:
        qs = qs.filter(pk__lte=upto_pk)
    fields = [
        "pk", "participant_id", "participant__kind", "participant__external_id", "workflow_id", "n_votes",
        "n_gold", "n_gold_correct", "p_l", "p_d", "real_seen", "real_said_real", "bogus_seen",
        "bogus_said_bogus", "confusion", "type_confusion", "updated_at",
    ]  # fmt: skip
    for chunk in keyset_chunks(qs, fields, chunk_size):
        rows = []
        for (
            _pk, pid, kind, ext, wid, n, n_gold, n_correct, p_l, p_d, real_seen, real_said_real, bogus_seen,
            bogus_said_bogus, confusion, type_confusion, updated_at,
        ) in chunk:  # fmt: skip
            gold_p_l, gold_p_d = swap_skill(
                real_seen,
                real_said_real,
                bogus_seen,
                bogus_said_bogus,
                pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
            )
            has_ds = (
                isinstance(confusion, list)
                and len(confusion) == 2
                and all(isinstance(row, list) and len(row) == 2 for row in confusion)
            )
            classes, matrix = _type_confusion(type_confusion)
            row = [pseudonym(pid), kind]
            if include_worker_ids:
                row.append(ext or None)
            row += [
                slugs[wid], n, n_gold, n_correct, (n_correct / n_gold) if n_gold else None, p_l, p_d,
                _as_float(gold_p_l), _as_float(gold_p_d),
                _as_float(confusion[REAL][REAL]) if has_ds else None,
                _as_float(confusion[BOGUS][BOGUS]) if has_ds else None,
                classes, matrix, updated_at,
            ]  # fmt: skip
            rows.append(tuple(row))
        yield rows


def _nested_widths(qs, chunk_size: int) -> tuple[int, int]:
    """The longest JSON text of type_classes and type_confusion: FITS string columns are sized up
    front, and a truncated matrix would not parse."""
    classes_width = matrix_width = 1
    for chunk in keyset_chunks(qs, ["pk", "type_confusion"], chunk_size):
        for _pk, value in chunk:
            classes, matrix = _type_confusion(value)
            if classes is not None:
                classes_width = max(classes_width, len(json_text(classes)))
                matrix_width = max(matrix_width, len(json_text(matrix)))
    return classes_width, matrix_width


def export_volunteers(
    project: Project,
    path: Path,
    fmt: str,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    if fmt not in VOLUNTEER_FORMATS:
        raise ExportError(
            f"Volunteers export as '{fmt}' is not possible; choose one of {', '.join(VOLUNTEER_FORMATS)}."
        )
    if workflow is not None and workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Volunteer skills belong to real/bogus workflows.")
    qs = volunteer_queryset(project, workflow)
    upto = qs.order_by("-pk").values_list("pk", flat=True).first() or 0
    qs = qs.filter(pk__lte=upto)
    total = qs.count()
    widths = _nested_widths(qs, chunk_size) if fmt == "fits" else (0, 0)
    workflows = project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    meta = base_meta(project, "volunteers", workflow) | {
        "upto_skill_id": upto,
        "worker_ids": include_worker_ids,
        "types": {wf.slug: workflow_types([wf]) for wf in workflows},
        "type_confusion": "row i is the true type type_classes[i], column j the type the volunteer says, "
        "type_classes[j]; each row sums to 1 (labeling.recompute, Dawid-Skene on the types)",
    }
    columns = _volunteer_columns(include_worker_ids, *widths)
    chunks = volunteer_rows(
        project, workflow=workflow, include_worker_ids=include_worker_ids, upto_pk=upto, chunk_size=chunk_size
    )
    n = write_table(
        fmt, path, columns, chunks, meta, extname="VOLUNTEERS", progress=Progress(total, progress)
    )
    return {"rows": n, **meta}


@register_exporter
class VolunteersExporter(Exporter):
    identifier = "volunteers"
    verbose_name = "Volunteers"
    contents = "one row per volunteer: skill, gold record, type confusion"
    formats = VOLUNTEER_FORMATS
    workflow_kind = Workflow.REAL_BOGUS

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        include_worker_ids = bool(params.get("include_worker_ids"))
        return export_volunteers(
            project, target, fmt, workflow=workflow, include_worker_ids=include_worker_ids, progress=progress
        )
