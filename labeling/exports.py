"""Exports for scientists (issue 8): tidy tables with provenance, streamed in bounded memory.

| kind | formats | one row per |
| --- | --- | --- |
| votes | csv, jsonl, parquet | vote (flat columns, client metadata in columns of its own) |
| labels | csv, parquet, fits, ecsv | subject of a real/bogus workflow |
| bundle | zip | training bundle: images.npy, labels.csv, manifest.json |
| similarity | zip | choices.csv (per task, who chose what) and pairs.csv (shown/chosen counts) |

Rows are read with keyset pagination (`pk > last ORDER BY pk LIMIT n` over `values_list`), so
no query holds a cursor open while the job writes its progress, the same code runs on SQLite
and PostgreSQL, and memory is one chunk, whatever the project's size. Writers are incremental:
CSV/JSON Lines row by row, Parquet one row group per chunk (pyarrow.ParquetWriter), FITS as a
binary table whose rows go to a scratch file and get their header once the count is known, ECSV
as astropy's header followed by CSV rows, the bundle's image stack as a .npy written the same
way. An export covers the rows that existed when it started (the largest id is fixed first).

Privacy: no emails, user names or IP addresses; participants appear as the project's pseudonym
(HMAC with the project's salt: stable within a project, different between projects); panel
worker ids only in exports started by an owner.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connections
from django.db.models import BooleanField, ExpressionWrapper, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from core.models import Project, Subject, Workflow
from jobs.models import Job, job_upload_path
from jobs.services import SHORT, JobLost, JobRun, queue_job, register
from labeling.models import Vote

log = logging.getLogger(__name__)

FORMATS = {
    "votes": ("csv", "jsonl", "parquet"),
    "labels": ("csv", "parquet", "fits", "ecsv"),
    "bundle": ("zip",),
    "similarity": ("zip",),
}
EXTENSIONS = {
    "csv": "csv",
    "jsonl": "jsonl",
    "parquet": "parquet",
    "fits": "fits",
    "ecsv": "ecsv",
    "zip": "zip",
}
CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "fits": "application/fits",
    "ecsv": "text/plain",
    "zip": "application/zip",
}
DEFAULT_CHUNK = 10_000
DEFAULT_SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}
COPY_BUFFER = 1024 * 1024


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why, in words for the user."""


# ---------------------------------------------------------------------------------------------
# Columns: one spec drives every format.


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # int, float, str, bool, datetime
    description: str = ""
    width: int = 0  # FITS string width (bytes); 0 for non-strings
    unit: str = ""


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
]

BUNDLE_LABEL_COLUMNS = [
    Column("index", "int", "Row of images.npy"),
    Column("subject_id", "int"),
    Column("external_id", "str", width=100),
    Column("object_id", "str", width=100),
    Column("label", "str", "real or bogus", 10),
    Column("target", "int", "1 = real, 0 = bogus"),
    Column("p_real", "float", "Crowd posterior (1/0 for gold)"),
    Column("weight", "float", "Confidence: 1 for gold, |2 P(real) - 1| otherwise"),
    Column("label_source", "str", "gold or crowd", 10),
    Column("n_votes", "int"),
    Column("is_holdout", "bool"),
    Column("split", "str", "train, validation or test", 10),
    Column("original_shape", "str", "Array shape before NaN padding to the common shape", 30),
]


# ---------------------------------------------------------------------------------------------
# Writers: rows are tuples of Python values in column order (None = missing).


class CsvWriter:
    def __init__(self, path: Path, columns: list[Column]):
        self.handle = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)
        self.writer.writerow([c.name for c in columns])
        self.dt = [i for i, c in enumerate(columns) if c.kind == "datetime"]
        self.bools = [i for i, c in enumerate(columns) if c.kind == "bool"]

    def write(self, rows: list[tuple]) -> None:
        dt, bools = self.dt, self.bools
        out = []
        for row in rows:
            row = list(row)
            for i in dt:
                if row[i] is not None and not isinstance(row[i], str):
                    row[i] = row[i].isoformat()
            for i in bools:
                if row[i] is not None:
                    row[i] = "true" if row[i] else "false"
            out.append(row)
        self.writer.writerows(out)

    def close(self) -> None:
        self.handle.close()


class JsonLinesWriter:
    def __init__(self, path: Path, columns: list[Column]):
        self.handle = open(path, "w", encoding="utf-8")
        self.names = [c.name for c in columns]
        self.dt = [i for i, c in enumerate(columns) if c.kind == "datetime"]

    def write(self, rows: list[tuple]) -> None:
        names, dt, dumps = self.names, self.dt, json.dumps
        lines = []
        for row in rows:
            if dt:
                row = list(row)
                for i in dt:
                    row[i] = _text(row[i])
            lines.append(dumps(dict(zip(names, row, strict=True)), ensure_ascii=False))
        if lines:
            self.handle.write("\n".join(lines))
            self.handle.write("\n")

    def close(self) -> None:
        self.handle.close()


class ParquetWriter:
    """One Parquet row group per chunk; column descriptions and provenance in the schema metadata."""

    def __init__(self, path: Path, columns: list[Column], meta: dict):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        types = {
            "int": pa.int64(),
            "float": pa.float64(),
            "str": pa.string(),
            "bool": pa.bool_(),
            "datetime": pa.timestamp("us", tz="UTC"),
        }
        fields = [
            pa.field(
                c.name,
                types[c.kind],
                metadata={"description": c.description, **({"unit": c.unit} if c.unit else {})},
            )
            for c in columns
        ]
        self.schema = pa.schema(fields, metadata={"skyvote": json.dumps(meta, default=str)})
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        pa = self.pa
        arrays = []
        for values, field in zip(zip(*rows, strict=True), self.schema, strict=True):
            if pa.types.is_timestamp(field.type):
                # ISO text → timestamp, vectorised by Arrow's cast.
                arrays.append(pa.array([_text(v) for v in values], type=pa.string()).cast(field.type))
            else:
                arrays.append(pa.array(values, type=field.type))
        self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


class FitsWriter:
    """A FITS binary table written in two steps: rows (big-endian records) to a scratch file while
    the count grows, then primary header + table header (NAXIS2 = the count) + the rows + padding.

    Missing floats are NaN, missing integers -1, missing logicals the FITS null (byte 0)."""

    BLOCK = 2880

    def __init__(self, path: Path, columns: list[Column], meta: dict, extname: str):
        self.path, self.columns, self.meta, self.extname = path, columns, meta, extname
        self.scratch_path = path.with_suffix(".rows")
        self.scratch = open(self.scratch_path, "wb")
        self.n = 0
        spec = {
            "int": (">i8", "K"),
            "float": (">f8", "D"),
            "bool": ("S1", "L"),
            "datetime": ("S32", "32A"),
        }
        self.dtype = np.dtype(
            [(c.name, f"S{c.width}" if c.kind == "str" else spec[c.kind][0]) for c in columns]
        )
        self.tforms = [f"{c.width}A" if c.kind == "str" else spec[c.kind][1] for c in columns]

    def _cell(self, column: Column, value):
        kind = column.kind
        if kind == "float":
            return math.nan if value is None else float(value)
        if kind == "int":
            return -1 if value is None else int(value)
        if kind == "bool":
            return b"" if value is None else (b"T" if value else b"F")
        if kind == "datetime":
            return b"" if value is None else _text(value).encode("ascii")
        text = "" if value is None else str(value)
        # FITS strings are ASCII; a truncated field is better than a failed export.
        return text.encode("ascii", "replace")[: column.width]

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        cols = self.columns
        records = np.array(
            [tuple(self._cell(c, v) for c, v in zip(cols, row, strict=True)) for row in rows],
            dtype=self.dtype,
        )
        self.scratch.write(records.tobytes())
        self.n += len(rows)

    def close(self) -> None:
        from astropy.io import fits

        self.scratch.close()
        empty = [
            fits.Column(
                name=c.name,
                format=tform,
                unit=c.unit or None,
                array=np.zeros(0, dtype=self.dtype[c.name]),
            )
            for c, tform in zip(self.columns, self.tforms, strict=True)
        ]
        header = fits.BinTableHDU.from_columns(empty).header
        header["NAXIS2"] = self.n
        header["EXTNAME"] = self.extname
        for i, c in enumerate(self.columns, start=1):
            if c.kind == "int":
                header[f"TNULL{i}"] = -1
        _fits_provenance(header, self.meta)
        assert header["NAXIS1"] == self.dtype.itemsize, "FITS row size must match the record dtype"
        primary = fits.PrimaryHDU().header
        _fits_provenance(primary, self.meta)
        with open(self.path, "wb") as out:
            out.write(primary.tostring().encode("ascii"))
            out.write(header.tostring().encode("ascii"))
            size = 0
            with open(self.scratch_path, "rb") as rows:
                while block := rows.read(COPY_BUFFER):
                    out.write(block)
                    size += len(block)
            out.write(b"\0" * ((-size) % self.BLOCK))
        self.scratch_path.unlink(missing_ok=True)


def _fits_provenance(header, meta: dict) -> None:
    header["ORIGIN"] = "Skyvote"
    for key, fits_key in (
        ("project", "PROJECT"),
        ("workflow", "WORKFLOW"),
        ("exported_at", "DATE"),
        ("code_version", "CODEVERS"),
        ("kind", "EXPKIND"),
    ):
        if meta.get(key):
            header[fits_key] = str(meta[key])[:68]
    if meta.get("aggregation"):
        # Long JSON goes into CONTINUE cards (astropy writes and reads them transparently).
        header["AGGPARAM"] = json.dumps(meta["aggregation"], sort_keys=True, default=str)


class EcsvWriter:
    """astropy's ECSV header (column types, units, descriptions, provenance in `meta`) for an empty
    table, then the rows as CSV with ECSV's conventions (True/False, missing = empty field)."""

    def __init__(self, path: Path, columns: list[Column], meta: dict):
        from astropy.table import Table

        dtypes = {"int": "i8", "float": "f8", "str": "U1", "bool": "?", "datetime": "U1"}
        table = Table()
        for c in columns:
            table[c.name] = np.zeros(0, dtype=dtypes[c.kind])
            table[c.name].description = c.description or None
            if c.unit:
                table[c.name].unit = c.unit
        table.meta.update(json.loads(json.dumps(meta, default=str)))
        buffer = io.StringIO()
        table.write(buffer, format="ascii.ecsv", delimiter=",")
        self.handle = open(path, "w", newline="", encoding="utf-8")
        self.handle.write(buffer.getvalue())
        self.writer = csv.writer(self.handle, lineterminator="\n")
        self.dt = [i for i, c in enumerate(columns) if c.kind == "datetime"]
        self.bools = [i for i, c in enumerate(columns) if c.kind == "bool"]

    def write(self, rows: list[tuple]) -> None:
        out = []
        for row in rows:
            row = list(row)
            for i in self.dt:
                row[i] = _text(row[i])
            for i in self.bools:
                if row[i] is not None:
                    row[i] = "True" if row[i] else "False"
            out.append(row)
        self.writer.writerows(out)

    def close(self) -> None:
        self.handle.close()


def open_writer(fmt: str, path: Path, columns: list[Column], meta: dict, extname: str = "DATA"):
    if fmt == "csv":
        return CsvWriter(path, columns)
    if fmt == "jsonl":
        return JsonLinesWriter(path, columns)
    if fmt == "parquet":
        return ParquetWriter(path, columns, meta)
    if fmt == "fits":
        return FitsWriter(path, columns, meta, extname)
    if fmt == "ecsv":
        return EcsvWriter(path, columns, meta)
    raise ExportError(f"Unknown format '{fmt}'.")


def write_table(
    fmt: str,
    path: Path,
    columns: list[Column],
    chunks: Iterable[list[tuple]],
    meta: dict,
    *,
    extname: str = "DATA",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `chunks` of rows to `path` in `fmt`; returns the row count."""
    writer = open_writer(fmt, path, columns, meta, extname)
    n = 0
    try:
        for chunk in chunks:
            writer.write(chunk)
            n += len(chunk)
            if progress is not None:
                progress(n)
    finally:
        writer.close()
    return n


# ---------------------------------------------------------------------------------------------
# Rows


def keyset_chunks(
    queryset, fields: list[str], chunk_size: int = DEFAULT_CHUNK, *, raw: bool = False
) -> Iterator[list[tuple]]:
    """values_list rows of `queryset` in chunks, ordered by pk; `fields[0]` must be "pk".

    raw=True runs the ORM's SQL on a plain cursor and skips Django's per-value converters (the
    hot path of a million-row export); annotations must then come last in `fields`, and values
    arrive as the database driver gives them (see `iso` for date-times)."""
    assert fields[0] == "pk"
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        page = page.order_by("pk").values_list(*fields)[:chunk_size]
        if raw:
            try:
                sql, params = page.query.sql_with_params()
            except EmptyResultSet:  # e.g. a project without workflows: nothing to read
                return
            with connections[page.db].cursor() as cursor:
                cursor.execute(sql, params)
                chunk = cursor.fetchall()
        else:
            chunk = list(page)
        if not chunk:
            return
        yield chunk
        last = chunk[-1][0]
        if len(chunk) < chunk_size:
            return


def datetime_text(queryset, names: list[str]) -> tuple:
    """(queryset, field names) that read the date-time fields `names` cheaply: on SQLite as the
    stored text (no parsing into datetime objects and back), elsewhere as the fields themselves."""
    if connections[queryset.db].vendor != "sqlite":
        return queryset, list(names)
    annotations = {f"{name}_text": Cast(name, TextField()) for name in names}
    return queryset.annotate(**annotations), list(annotations)


def iso(value) -> str | None:
    """ISO 8601 text of a stored date-time: a datetime, or SQLite's naive-UTC text
    ("YYYY-MM-DD HH:MM:SS[.ffffff]", as Django stores it with USE_TZ)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.replace(" ", "T", 1) + "+00:00"
    return value.isoformat()


def _text(value) -> str | None:
    """Date-time column values are ISO strings already, or datetimes from other row sources."""
    return value if value is None or isinstance(value, str) else value.isoformat()


def pseudonymizer(project: Project, cache_size: int = 65_536) -> Callable[[int], str]:
    """project.pseudonym with a bounded cache: one HMAC per participant, not per vote."""
    return lru_cache(maxsize=cache_size)(project.pseudonym)


def _project_workflows(project: Project, workflow: Workflow | None, kinds=None) -> list[Workflow]:
    if workflow is not None:
        return [workflow]
    qs = project.workflows.select_related("active_model").order_by("pk")
    if kinds:
        qs = qs.filter(kind__in=kinds)
    return list(qs)


def vote_queryset(project: Project, workflow: Workflow | None = None, upto_pk: int | None = None):
    workflows = _project_workflows(project, workflow)
    qs = Vote.objects.filter(workflow_id__in=[w.pk for w in workflows])
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
    slugs = {w.pk: w.slug for w in _project_workflows(project, workflow)}
    pseudonym = pseudonymizer(project)
    fields = [
        "pk", "participant_id", "participant__kind", "participant__external_id", "workflow_id",
        "subject_id", "subject__external_id", "answer", "was_gold", "gold_correct", "subject_was_retired",
        "source", "user_agent", "viewport",
    ]  # fmt: skip
    qs, times = datetime_text(
        vote_queryset(project, workflow, upto_pk), ["started_at", "finished_at", "created_at"]
    )
    for chunk in keyset_chunks(qs, fields + times, chunk_size, raw=True):
        if include_worker_ids:
            yield [
                (pk, pseudonym(pid), kind, ext or None, slugs[wid], sid, sext, answer, iso(t0), iso(t1), iso(t2),
                 gold, correct, late, source, agent, viewport)
                for pk, pid, kind, ext, wid, sid, sext, answer, gold, correct, late, source, agent, viewport, t0, t1, t2
                in chunk
            ]  # fmt: skip
        else:
            yield [
                (pk, pseudonym(pid), kind, slugs[wid], sid, sext, answer, iso(t0), iso(t1), iso(t2),
                 gold, correct, late, source, agent, viewport)
                for pk, pid, kind, _ext, wid, sid, sext, answer, gold, correct, late, source, agent, viewport, t0, t1, t2
                in chunk
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


def decided_filter(workflow: Workflow) -> Q:
    """Subjects with a training label: the same rule as labeling.labels.training_labels."""
    from labeling import labels

    return labels._evidence_filter(workflow, int(workflow.min_votes), False) & (
        Q(gold_label__in=labels.GOLD_ANSWERS) | Q(p_real__isnull=False)
    )


def label_of(gold_label: str, decided: bool, p_real: float | None) -> tuple[str, str, float | None]:
    """(label, label_source, confidence) of one subject."""
    if gold_label in (Subject.REAL, Subject.BOGUS):
        return gold_label, "gold", 1.0
    if decided and p_real is not None:
        return (Subject.REAL if p_real >= 0.5 else Subject.BOGUS), "crowd", abs(2.0 * p_real - 1.0)
    return "", "", (abs(2.0 * p_real - 1.0) if p_real is not None else None)


def _as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def label_queryset(workflow: Workflow, upto_pk: int | None = None):
    qs = Subject.objects.filter(workflow=workflow).annotate(
        decided=ExpressionWrapper(decided_filter(workflow), output_field=BooleanField())
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
) -> Iterator[list[tuple]]:
    """Chunks of label rows (LABEL_COLUMNS order) for the project's real/bogus workflows."""
    fields = [
        "pk", "external_id", "object_id", "metadata__ra", "metadata__dec", "status", "vote_count",
        "answer_counts", "p_real", "aggregation_method", "retired_reason", "retired_at", "needs_review",
        "gold_label", "model_score", "model_uncertainty", "is_holdout", "decided",
    ]  # fmt: skip
    for wf in _project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS]):
        params = json.dumps(aggregation_params(wf), sort_keys=True)
        model_version = f"v{wf.active_model.version}" if wf.active_model_id else None
        for chunk in keyset_chunks(label_queryset(wf, upto_pk), fields, chunk_size):
            rows = []
            for (
                pk, ext, obj, ra, dec, status, n, counts, p, method, reason, retired_at, review,
                gold, score, unc, holdout, decided,
            ) in chunk:  # fmt: skip
                counts = counts or {}
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
                        int(counts.get(Subject.REAL, 0)),
                        int(counts.get(Subject.BOGUS, 0)),
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
                    )  # fmt: skip
                )
            yield rows


# ---------------------------------------------------------------------------------------------
# Provenance


def code_version() -> str:
    """`git describe` of the running code where it is a git checkout, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return "git " + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "skyvote " + str(settings.SPECTACULAR_SETTINGS.get("VERSION", "unknown"))


def base_meta(project: Project, kind: str, workflow: Workflow | None) -> dict:
    return {
        "project": project.slug,
        "workflow": workflow.slug if workflow else "all",
        "kind": kind,
        "exported_at": timezone.now().isoformat(),
        "code_version": code_version(),
    }


def _model_info(workflow: Workflow) -> dict | None:
    model = workflow.active_model
    if model is None:
        return None
    return {
        "id": model.pk,
        "kind": model.kind,
        "version": model.version,
        "artifact_sha256": model.artifact_sha256,
        "metrics": model.metrics,
        "created_at": iso(model.created_at),
    }


# ---------------------------------------------------------------------------------------------
# Whole exports (used by the Celery task and the benchmark)


class Progress:
    """Reports progress to a callback at most every `interval` seconds (rows done / total)."""

    def __init__(self, total: int, callback: Callable[[float, str], None] | None, interval: float = 0.5):
        self.total, self.callback, self.interval = max(total, 1), callback, interval
        self.last = 0.0
        self.offset = 0

    def __call__(self, done: int, message: str = "") -> None:
        now = time.monotonic()
        if self.callback is None or now - self.last < self.interval:
            return
        self.last = now
        done += self.offset
        self.callback(min(done / self.total, 0.999), message or f"{done:,} of {self.total:,} rows")


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
    if fmt not in FORMATS["votes"]:
        raise ExportError(
            f"Votes export as '{fmt}' is not possible; choose one of {', '.join(FORMATS['votes'])}."
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
    if fmt not in FORMATS["labels"]:
        raise ExportError(
            f"Labels export as '{fmt}' is not possible; choose one of {', '.join(FORMATS['labels'])}."
        )
    workflows = _project_workflows(project, workflow, kinds=[Workflow.REAL_BOGUS])
    if workflow is not None and workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Labels exist for real/bogus workflows only; export this workflow's votes instead.")
    upto = Subject.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first() or 0
    total = Subject.objects.filter(workflow__in=workflows, pk__lte=upto).count()
    meta = base_meta(project, "labels", workflow) | {
        "aggregation": {wf.slug: aggregation_params(wf) for wf in workflows},
        "models": {wf.slug: _model_info(wf) for wf in workflows},
        "label_rule": "gold label if any; else the crowd's (P(real) >= 0.5 → real) for subjects with "
        "enough evidence (labeling.labels.training_labels); else empty",
    }
    # The parameters are known per workflow up front: size their FITS column to fit, not to a guess.
    params_width = max([len(json.dumps(aggregation_params(wf), sort_keys=True)) for wf in workflows] + [1])
    columns = [replace(c, width=params_width) if c.name == "aggregation_params" else c for c in LABEL_COLUMNS]
    chunks = label_rows(project, workflow=workflow, upto_pk=upto, chunk_size=chunk_size)
    n = write_table(fmt, path, columns, chunks, meta, extname="LABELS", progress=Progress(total, progress))
    return {"rows": n, **meta}


def split_of(external_id: str, fractions: dict[str, float] = DEFAULT_SPLIT) -> str:
    """Fixed split from a hash of the subject's external id: the same subject always lands in the
    same split, on any server, whatever else the dataset contains."""
    u = int.from_bytes(hashlib.sha256(str(external_id).encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name in ("train", "validation"):
        edge += fractions[name]
        if u < edge:
            return name
    return "test"


def _validate_split(split: dict | None) -> dict[str, float]:
    if not split:
        return dict(DEFAULT_SPLIT)
    try:
        fractions = {name: float(split[name]) for name in ("train", "validation", "test")}
    except (KeyError, TypeError, ValueError):
        raise ExportError("The split needs numeric 'train', 'validation' and 'test' fractions.")
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ExportError("The split fractions must be non-negative and add up to 1.")
    return fractions


def _npy_shape(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), dtype


class _HashingWriter:
    """Writes into a zip member while computing the SHA-256 and size of what goes in."""

    def __init__(self, handle):
        self.handle, self.sha, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha.update(data)
        self.size += len(data)


def _zip_add_file(
    zf: zipfile.ZipFile, name: str, source: Path, *, header: bytes = b"", deflate: bool
) -> dict:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=True) as member:
        out = _HashingWriter(member)
        if header:
            out.write(header)
        with open(source, "rb") as handle:
            while block := handle.read(COPY_BUFFER):
                out.write(block)
    return {"sha256": out.sha.hexdigest(), "bytes": out.size}


def bundle_workflow(project: Project, workflow_id: int | None) -> Workflow:
    """The workflow a training bundle is for: the one asked for, or the project's only real/bogus one."""
    workflows = project.workflows.filter(kind=Workflow.REAL_BOGUS).select_related("active_model")
    if workflow_id is not None:
        workflow = workflows.filter(pk=workflow_id).first()
        if workflow is None:
            raise ExportError("Training bundles are made for one real/bogus workflow of this project.")
        return workflow
    found = list(workflows[:2])
    if len(found) != 1:
        raise ExportError(
            "This project has several real/bogus workflows: choose one for the training bundle."
        )
    return found[0]


def export_bundle(
    project: Project,
    path: Path,
    *,
    workflow: Workflow | None = None,
    split: dict | None = None,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = 2_000,
) -> dict:
    """A zip with images.npy (N, ...) float32, labels.csv (row i ↔ images[i]) and manifest.json."""
    workflow = workflow or bundle_workflow(project, None)
    if workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError("Training bundles are made for real/bogus workflows.")
    fractions = _validate_split(split)
    upto = Subject.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first() or 0
    qs = label_queryset(workflow, upto).filter(decided_filter(workflow))
    fields = ["pk", "external_id", "object_id", "data", "gold_label", "p_real", "vote_count", "is_holdout"]
    total = qs.count()
    tick = Progress(2 * total, progress)

    # Pass 1: array shapes from the .npy headers only, to find one common shape.
    shapes: dict[tuple[int, ...], int] = {}
    skipped_no_data = 0
    done = 0
    for chunk in keyset_chunks(qs, ["pk", "data"], chunk_size):
        for _pk, name in chunk:
            if not name:
                skipped_no_data += 1
                continue
            with default_storage.open(name, "rb") as handle:
                shape, _ = _npy_shape(handle)
            shapes[shape] = shapes.get(shape, 0) + 1
        done += len(chunk)
        tick(done, f"checking arrays: {done:,} of {total:,}")
    ndims = {len(s) for s in shapes}
    if len(ndims) > 1:
        raise ExportError(
            f"Subjects of this workflow have arrays of different dimensions ({sorted(shapes)})."
        )
    common = tuple(max(dims) for dims in zip(*shapes, strict=True)) if shapes else ()

    # Pass 2: arrays (NaN-padded to the common shape) to a scratch file, labels to labels.csv.
    tick.offset = total
    workdir = Path(tempfile.mkdtemp(prefix="skyvote-bundle-", dir=path.parent))
    counts = {"subjects": 0, "train": 0, "validation": 0, "test": 0, "real": 0, "bogus": 0, "gold": 0}
    counts["holdout"] = counts["padded"] = 0
    try:
        raw_path = workdir / "images.raw"
        labels_path = workdir / "labels.csv"
        labels_writer = CsvWriter(labels_path, BUNDLE_LABEL_COLUMNS)
        done = 0
        with open(raw_path, "wb") as raw:
            for chunk in keyset_chunks(qs, fields, chunk_size):
                rows = []
                for pk, ext, obj, name, gold, p, n_votes, holdout in chunk:
                    done += 1
                    if not name:
                        continue
                    with default_storage.open(name, "rb") as handle:
                        array = np.load(handle, allow_pickle=False).astype("<f4", copy=False)
                    original = array.shape
                    if array.shape != common:
                        padded = np.full(common, np.nan, dtype="<f4")
                        padded[tuple(slice(0, d) for d in array.shape)] = array
                        array = padded
                        counts["padded"] += 1
                    raw.write(np.ascontiguousarray(array).tobytes())
                    label, source, weight = label_of(gold, True, p)
                    p_out = (1.0 if label == Subject.REAL else 0.0) if source == "gold" else p
                    which = split_of(ext, fractions)
                    rows.append(
                        (
                            counts["subjects"],
                            pk,
                            ext,
                            obj or None,
                            label,
                            int(label == Subject.REAL),
                            p_out,
                            weight,
                            source,
                            n_votes,
                            holdout,
                            which,
                            "x".join(map(str, original)),
                        )  # fmt: skip
                    )
                    counts["subjects"] += 1
                    counts[which] += 1
                    counts[label] += 1
                    counts["gold"] += source == "gold"
                    counts["holdout"] += bool(holdout)
                labels_writer.write(rows)
                tick(done, f"writing arrays: {done:,} of {total:,}")
        labels_writer.close()
        counts["skipped_no_data"] = skipped_no_data

        npy_header = io.BytesIO()
        np.lib.format.write_array_header_2_0(
            npy_header,
            {"descr": "<f4", "fortran_order": False, "shape": (counts["subjects"], *common)},
        )
        methods = sorted(
            m for m in qs.order_by().values_list("aggregation_method", flat=True).distinct() if m
        )
        manifest = base_meta(project, "bundle", workflow) | {
            "format": "skyvote-training-bundle/1",
            "counts": counts,
            "image_shape": list(common),
            "image_dtype": "float32",
            "image_layout": "images.npy[i] is labels.csv row i; NaN = masked or padded pixels",
            "aggregation": {"methods": methods, "thresholds": aggregation_params(workflow)},
            "label_rule": "gold label if any, else the crowd's P(real) >= 0.5 for subjects with enough "
            "evidence (labeling.labels.training_labels)",
            "split": {
                "method": "sha256(external_id) as a number in [0, 1): train below the train fraction, "
                "then validation, then test",
                "fractions": fractions,
            },
            "model_version": _model_info(workflow),
            "query": {
                "description": f"subjects of workflow '{workflow.slug}' (id {workflow.pk}) with a training "
                f"label, id <= {upto}, ordered by id",
                "sql": _sql(qs.order_by("pk").values_list(*fields)),
            },
            "files": {},
        }
        with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
            manifest["files"]["images.npy"] = _zip_add_file(
                zf, "images.npy", raw_path, header=npy_header.getvalue(), deflate=False
            )
            manifest["files"]["labels.csv"] = _zip_add_file(zf, "labels.csv", labels_path, deflate=True)
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str), zipfile.ZIP_DEFLATED)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": counts["subjects"], **{k: v for k, v in manifest.items() if k != "files"}}


def _sql(queryset) -> str:
    try:
        return str(queryset.query)
    except Exception:  # some backends cannot render every parameter; the description still says it
        return ""


def verify_bundle(path: Path) -> dict:
    """Check a training bundle against its manifest; returns the manifest, raises ExportError if a
    file is missing or its SHA-256 differs."""
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for name, expected in manifest["files"].items():
            sha = hashlib.sha256()
            try:
                with zf.open(name) as handle:
                    while block := handle.read(COPY_BUFFER):
                        sha.update(block)
            except KeyError:
                raise ExportError(f"{name} is listed in the manifest but missing from the bundle.")
            if sha.hexdigest() != expected["sha256"]:
                raise ExportError(f"{name}: SHA-256 differs from the manifest.")
    return manifest


# ---------------------------------------------------------------------------------------------
# Similarity (issue 6's models; imported lazily so exports work before that app has them)


def similarity_available() -> bool:
    try:
        from similarity import models as sim
    except ImportError:
        return False
    return all(hasattr(sim, name) for name in ("SimilarityTask", "SimilarityVote", "PairStat"))


def _similarity_choice_columns(include_worker_ids: bool) -> list[Column]:
    cols = [
        Column("vote_id", "int", "Similarity vote id"),
        Column("task_id", "int", "Similarity task id"),
        Column("workflow", "str", "Workflow slug", 50),
        Column("participant", "str", "Participant pseudonym: stable within the project", 14),
        Column("participant_kind", "str", "user, anonymous or worker", 10),
    ]
    if include_worker_ids:
        cols.append(Column("worker_id", "str", "Panel worker id (owners only)", 200))
    return cols + [
        Column("comparison_id", "int", "Subject the candidates were compared with"),
        Column("comparison_external_id", "str", width=100),
        Column("position", "int", "Tile position of the candidate (1 = first)"),
        Column("candidate_id", "int", "Candidate subject id"),
        Column("candidate_external_id", "str", width=100),
        Column(
            "candidate_source", "str", "Why the candidate was shown (nearest, uncertain, mid, random)", 20
        ),
        Column("chosen", "bool", "The participant chose this candidate as similar"),
        Column("none_similar", "bool", "The participant said none were similar"),
        Column("started_at", "datetime"),
        Column("finished_at", "datetime"),
        Column("created_at", "datetime"),
    ]


SIMILARITY_TASK_COLUMNS = [
    Column("task_id", "int"),
    Column("workflow", "str", width=50),
    Column("comparison_id", "int"),
    Column("comparison_external_id", "str", width=100),
    Column("n_candidates", "int"),
    Column("strategy", "str", "random or embedding", 20),
    Column("model_version", "int", "Embedding model version that picked the candidates"),
    Column("n_votes", "int"),
    Column("retired", "bool"),
    Column("created_at", "datetime"),
]

SIMILARITY_PAIR_COLUMNS = [
    Column("workflow", "str", width=50),
    Column("comparison_id", "int"),
    Column("comparison_external_id", "str", width=100),
    Column("candidate_id", "int"),
    Column("candidate_external_id", "str", width=100),
    Column("shown", "int", "Times the candidate was shown next to the comparison subject"),
    Column("chosen", "int", "Times it was chosen as similar"),
    Column("rate", "float", "chosen / shown"),
    Column("rate_low", "float", "Wilson 95% interval, lower end"),
    Column("rate_high", "float", "Wilson 95% interval, upper end"),
]


def _external_ids(ids) -> dict[int, str]:
    return dict(Subject.objects.filter(pk__in=set(ids)).values_list("pk", "external_id"))


def similarity_choice_rows(project, workflows, include_worker_ids: bool, upto_pk: int, chunk_size: int):
    from similarity.models import SimilarityVote

    slugs = {w.pk: w.slug for w in workflows}
    pseudonym = pseudonymizer(project)
    fields = [
        "pk", "task_id", "workflow_id", "participant_id", "participant__kind", "participant__external_id",
        "task__comparison_id", "task__comparison__external_id", "task__candidates", "task__candidate_sources",
        "chosen", "none_similar", "started_at", "finished_at", "created_at",
    ]  # fmt: skip
    qs = SimilarityVote.objects.filter(workflow_id__in=list(slugs), pk__lte=upto_pk)
    for chunk in keyset_chunks(qs, fields, chunk_size):
        names = _external_ids(c for row in chunk for c in (row[8] or []))
        rows = []
        for (
            pk,
            task,
            wid,
            pid,
            kind,
            ext,
            comp,
            comp_ext,
            candidates,
            sources,
            chosen,
            none,
            start,
            end,
            made,
        ) in chunk:
            who = (pseudonym(pid), kind, ext or None) if include_worker_ids else (pseudonym(pid), kind)
            picked = set(chosen or [])
            sources = sources or []
            for position, candidate in enumerate(candidates or [], start=1):
                source = sources[position - 1] if position <= len(sources) else None
                rows.append(
                    (
                        pk,
                        task,
                        slugs[wid],
                        *who,
                        comp,
                        comp_ext,
                        position,
                        candidate,
                        names.get(candidate),
                        source,
                        candidate in picked,
                        none,
                        start,
                        end,
                        made,
                    )  # fmt: skip
                )
        yield rows


def similarity_task_rows(workflows, chunk_size: int):
    from similarity.models import SimilarityTask

    slugs = {w.pk: w.slug for w in workflows}
    fields = [
        "pk", "workflow_id", "comparison_id", "comparison__external_id", "candidates", "strategy",
        "model_version__version", "n_votes", "retired", "created_at",
    ]  # fmt: skip
    qs = SimilarityTask.objects.filter(workflow_id__in=list(slugs))
    for chunk in keyset_chunks(qs, fields, chunk_size):
        yield [
            (pk, slugs[wid], comp, comp_ext, len(cands or []), strategy, version, n, retired, made)
            for pk, wid, comp, comp_ext, cands, strategy, version, n, retired, made in chunk
        ]


def similarity_pair_rows(workflows, chunk_size: int):
    from similarity.models import PairStat, wilson_interval

    slugs = {w.pk: w.slug for w in workflows}
    fields = [
        "pk", "workflow_id", "comparison_id", "comparison__external_id", "candidate_id", "candidate__external_id",
        "shown", "chosen",
    ]  # fmt: skip
    qs = PairStat.objects.filter(workflow_id__in=list(slugs))
    for chunk in keyset_chunks(qs, fields, chunk_size):
        rows = []
        for _pk, wid, comp, comp_ext, cand, cand_ext, shown, chosen in chunk:
            low, high = wilson_interval(chosen, shown)
            rate = chosen / shown if shown else None
            rows.append((slugs[wid], comp, comp_ext, cand, cand_ext, shown, chosen, rate, low, high))
        yield rows


def export_similarity(
    project: Project,
    path: Path,
    *,
    workflow: Workflow | None = None,
    include_worker_ids: bool = False,
    progress: Callable[[float, str], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict:
    """A zip with choices.csv (one row per vote and candidate shown: tidy, no lists in cells),
    tasks.csv (one row per task) and pairs.csv (shown/chosen counts per pair), plus manifest.json."""
    if not similarity_available():
        raise ExportError("Similarity exports need the similarity app's tasks, which this server lacks.")
    from similarity.models import PairStat, SimilarityTask, SimilarityVote

    workflows = _project_workflows(project, workflow, kinds=[Workflow.SIMILARITY])
    ids = [w.pk for w in workflows]
    votes = SimilarityVote.objects.filter(workflow_id__in=ids)
    upto = votes.order_by("-pk").values_list("pk", flat=True).first() or 0
    total = (
        votes.filter(pk__lte=upto).count()
        + SimilarityTask.objects.filter(workflow_id__in=ids).count()
        + PairStat.objects.filter(workflow_id__in=ids).count()
    )
    tick = Progress(total, progress)
    meta = base_meta(project, "similarity", workflow) | {
        "upto_vote_id": upto,
        "worker_ids": include_worker_ids,
    }
    workdir = Path(tempfile.mkdtemp(prefix="skyvote-similarity-", dir=path.parent))
    counts = {}
    try:
        parts = [
            ("choices.csv", _similarity_choice_columns(include_worker_ids),
             similarity_choice_rows(project, workflows, include_worker_ids, upto, chunk_size)),
            ("tasks.csv", SIMILARITY_TASK_COLUMNS, similarity_task_rows(workflows, chunk_size)),
            ("pairs.csv", SIMILARITY_PAIR_COLUMNS, similarity_pair_rows(workflows, chunk_size)),
        ]  # fmt: skip
        for name, columns, chunks in parts:
            counts[name] = write_table("csv", workdir / name, columns, chunks, meta, progress=tick)
            tick.offset += counts[name]
        counts["votes"] = votes.filter(pk__lte=upto).count()
        manifest = meta | {"format": "skyvote-similarity/1", "counts": counts, "files": {}}
        with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
            for name, _columns, _chunks in parts:
                manifest["files"][name] = _zip_add_file(zf, name, workdir / name, deflate=True)
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str), zipfile.ZIP_DEFLATED)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": counts["choices.csv"], **meta}


# ---------------------------------------------------------------------------------------------
# Jobs


def validate_request(project: Project, kind: str, fmt: str, workflow_id=None) -> Workflow | None:
    """The workflow an export request names (or None for the whole project); ExportError if invalid."""
    kind = (kind or "").strip().lower()
    fmt = (fmt or "").strip().lower()
    if kind not in FORMATS:
        raise ExportError(f"Unknown export '{kind}'; choose one of {', '.join(FORMATS)}.")
    if fmt not in FORMATS[kind]:
        raise ExportError(f"A {kind} export can be {', '.join(FORMATS[kind])}, not '{fmt}'.")
    workflow = None
    if workflow_id not in (None, ""):
        try:
            workflow = project.workflows.select_related("active_model").get(pk=int(workflow_id))
        except (ValueError, TypeError, Workflow.DoesNotExist):
            raise ExportError("No such workflow in this project.")
    if kind in ("labels", "bundle") and workflow is not None and workflow.kind != Workflow.REAL_BOGUS:
        raise ExportError(f"{kind.capitalize()} exports are for real/bogus workflows.")
    if kind == "bundle":
        workflow = bundle_workflow(project, workflow.pk if workflow else None)
    if kind == "similarity":
        if not similarity_available():
            raise ExportError("Similarity exports need the similarity app's tasks, which this server lacks.")
        if workflow is not None and workflow.kind != Workflow.SIMILARITY:
            raise ExportError("Similarity exports are for similarity workflows.")
    return workflow


def start_export(
    *, project: Project, user, role: str, kind: str, fmt: str, workflow_id=None, split: dict | None = None
) -> Job:
    """Queue an export job (owners and collaborators). The task is sent once the transaction commits."""
    from core.permissions import EXPORT_ROLES, can_see_worker_ids

    if role not in EXPORT_ROLES:
        raise ExportError("Only the project's owners and collaborators can export.")
    workflow = validate_request(project, kind, fmt, workflow_id)
    kind, fmt = kind.strip().lower(), fmt.strip().lower()
    params = {"kind": kind, "format": fmt, "include_worker_ids": can_see_worker_ids(role), "role": role}
    if kind == "bundle":
        params["split"] = _validate_split(split)
    job, _ = queue_job(Job.EXPORT, project=project, workflow=workflow, params=params, user=user)
    return job


def result_filename(job: Job) -> str:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    scope = job.workflow.slug if job.workflow_id else "all"
    kind, fmt = job.params["kind"], job.params["format"]
    return f"{job.project.slug}-{scope}-{kind}-{stamp}.{EXTENSIONS[fmt]}"


@register(Job.EXPORT, queue=SHORT, label="Export", plain_errors=(ExportError,))
def export_job(run: JobRun) -> None:
    """Write the export to a temporary file, then store it as the job's result. Every write is
    conditional on still owning the job (JobRun), so a worker presumed dead cannot overwrite a retry."""
    job = run.job
    params = job.params
    kind, fmt = params.get("kind"), params.get("format")
    workdir = Path(tempfile.mkdtemp(prefix=f"skyvote-export-{job.pk}-"))
    try:
        target = workdir / result_filename(job)
        report = lambda fraction, message: run.progress(fraction, message, force=True)  # noqa: E731
        if kind == "votes":
            info = export_votes(
                job.project, target, fmt, workflow=job.workflow,
                include_worker_ids=bool(params.get("include_worker_ids")), progress=report,
            )  # fmt: skip
        elif kind == "labels":
            info = export_labels(job.project, target, fmt, workflow=job.workflow, progress=report)
        elif kind == "bundle":
            info = export_bundle(
                job.project, target, workflow=job.workflow, split=params.get("split"), progress=report
            )
        elif kind == "similarity":
            info = export_similarity(
                job.project, target, workflow=job.workflow,
                include_worker_ids=bool(params.get("include_worker_ids")), progress=report,
            )  # fmt: skip
        else:
            raise ExportError(f"Unknown export '{kind}'.")
        run.heartbeat(force=True)  # still ours: only now write the file where the job will point
        with open(target, "rb") as handle:
            stored = default_storage.save(job_upload_path(job, target.name), File(handle, name=target.name))
        try:
            run.finish(
                Job.SUCCEEDED,
                f"{info['rows']:,} rows · {os.path.getsize(target) / 1e6:.1f} MB",
                result=stored,
                params={
                    **params,
                    "result": {k: v for k, v in info.items() if k in ("rows", "exported_at", "code_version")},
                },
            )
        except JobLost:
            default_storage.delete(stored)
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export_jobs(project: Project):
    return (
        Job.objects.filter(project=project, kind=Job.EXPORT)
        .select_related("workflow")
        .order_by("-created_at")
    )
