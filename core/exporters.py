"""Exports as registered exporters, and the machinery they share.

Each app registers its own exporters (`@register_exporter` on an `Exporter` subclass, in its
`exporters.py`, imported by its AppConfig.ready): labeling the votes and labels tables, loop the
training bundle, similarity the similarity choices. Core knows none of them: the exports page, the
API and the export job find them through the registry (`exporters()`, `exporter(name)`).

What they share lives here. Rows are read with keyset pagination (`pk > last ORDER BY pk LIMIT n`
over `values_list`), so no query holds a cursor open while the job writes its progress, the same
code runs on SQLite and PostgreSQL, and memory is one chunk, whatever the project's size. Writers
are incremental: CSV/JSON Lines row by row, Parquet one row group per chunk
(pyarrow.ParquetWriter), FITS as a binary table whose rows go to a scratch file and get their
header once the count is known, ECSV as astropy's header followed by CSV rows. An export covers
the rows that existed when it started (exporters fix the largest id first).

Privacy: no emails, user names or IP addresses; participants appear as the project's pseudonym
(HMAC with the project's salt: stable within a project, different between projects); panel
worker ids only in exports started by an owner (`params["include_worker_ids"]`).
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
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.core.files import File
from django.db import connections
from django.db.models import Func, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from core.formats import FORMULA_STARTS, csv_safe
from core.models import Project, Workflow
from core.permissions import EXPORT_ROLES, can_see_worker_ids
from core.storage import delete_stored, file_response, private_storage, random_name
from jobs.models import Job
from jobs.services import SHORT, JobLost, JobRun, queue_job, register

log = logging.getLogger(__name__)

# Every format a writer here can make (exporters offer a subset), its file extension, its media
# type and its name for people.
FORMATS = ("csv", "jsonl", "parquet", "fits", "ecsv", "zip")
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
FORMAT_NAMES = {
    "csv": "CSV",
    "jsonl": "JSON Lines",
    "parquet": "Parquet",
    "fits": "FITS",
    "ecsv": "ECSV",
    "zip": "zip",
}
# How a workflow kind reads in messages ("Labels exports are for real/bogus workflows.").
WORKFLOW_KIND_WORDS = {Workflow.REAL_BOGUS: "real/bogus", Workflow.SIMILARITY: "similarity"}
DEFAULT_CHUNK = 10_000
COPY_BUFFER = 1024 * 1024


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why, in words for the user."""


# ---------------------------------------------------------------------------------------------
# Columns: one spec drives every format.


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # int, float, str, bool, datetime, list (of str), matrix (list of lists of float)
    description: str = ""
    width: int = 0  # FITS string width (bytes); 0 for non-strings
    unit: str = ""


# Nested columns: Parquet keeps them nested (list<string>, list<list<double>>), JSON Lines as JSON
# arrays; CSV, ECSV and FITS (no nesting there) hold compact JSON text (`json_text`).
NESTED_KINDS = ("list", "matrix")


def json_text(value) -> str | None:
    """Compact JSON of a nested cell (None stays missing): the text CSV, ECSV and FITS hold."""
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Exporters and their registry


class Exporter:
    """One kind of export. Subclass it in the app that owns the data and decorate the subclass with
    `@register_exporter`; the exports page, the API and the export job find it by `identifier`."""

    # The `export` of a request and the job's params["kind"]; stable, it is in scripts and old jobs.
    identifier: str = ""
    # For people: the exports page says "<verbose_name> — <format>" (and `contents` in brackets).
    verbose_name: str = ""
    contents: str = ""
    # The formats it can write, out of FORMATS.
    formats: tuple[str, ...] = ()
    # Only workflows of this kind (Workflow.REAL_BOGUS, ...); None: any workflow, or all of them.
    workflow_kind: str | None = None
    # A bundle is one workflow's dataset, not a table over the project: a request that names no
    # workflow gets the project's only workflow of `workflow_kind`, and several are an error.
    bundle: bool = False

    def available(self, project: Project) -> bool:
        """Whether the exports page offers it for this project (the API accepts it regardless)."""
        return True

    def choices(self) -> list[tuple[str, str, str]]:
        """(identifier, format, label) for each format, as the exports page lists them."""
        extra = f" ({self.contents})" if self.contents else ""
        return [
            (self.identifier, fmt, f"{self.verbose_name} — {FORMAT_NAMES[fmt]}{extra}")
            for fmt in self.formats
        ]

    def workflow_for(self, project: Project, workflow: Workflow | None) -> Workflow | None:
        """The workflow the export is for (None: the whole project); ExportError if it cannot be."""
        if workflow is not None and self.workflow_kind and workflow.kind != self.workflow_kind:
            words = WORKFLOW_KIND_WORDS.get(self.workflow_kind, self.workflow_kind)
            raise ExportError(f"{self.identifier.capitalize()} exports are for {words} workflows.")
        if self.bundle and workflow is None:
            workflow = only_workflow(project, self.workflow_kind, self.verbose_name.lower())
        return workflow

    def clean_params(self, options: dict) -> dict:
        """Validated options of a request (e.g. a bundle's split) to keep in the job's params."""
        return {}

    def run(
        self,
        project: Project,
        target: Path,
        fmt: str,
        *,
        workflow: Workflow | None,
        params: dict,
        progress: Callable[[float, str], None] | None = None,
    ) -> dict:
        """Write the export to `target`; returns its info: at least "rows", plus the provenance
        (`base_meta`). `params` are the job's (include_worker_ids, what clean_params kept)."""
        raise NotImplementedError


_EXPORTERS: dict[str, Exporter] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: make `cls` an export people can ask for, under `cls.identifier`."""
    if not cls.identifier or not cls.formats:
        raise ValueError(f"{cls.__name__} needs an identifier and formats")
    unknown = set(cls.formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"{cls.__name__}: no writer for {sorted(unknown)}; formats are {FORMATS}")
    _EXPORTERS[cls.identifier] = cls()
    return cls


def exporters() -> list[Exporter]:
    """The registered exporters, in registration order (the apps' order in INSTALLED_APPS)."""
    return list(_EXPORTERS.values())


def exporter(name: str) -> Exporter | None:
    return _EXPORTERS.get(name)


def export_choices(project: Project) -> list[tuple[str, str, str]]:
    """(identifier, format, label) of every export the exports page offers for this project."""
    return [choice for found in exporters() if found.available(project) for choice in found.choices()]


def only_workflow(project: Project, kind: str | None, what: str) -> Workflow:
    """The project's only workflow of `kind`, for exports made for one workflow (`what`)."""
    workflows = project.workflows.select_related("active_model").order_by("pk")
    if kind:
        workflows = workflows.filter(kind=kind)
    found = list(workflows[:2])
    if len(found) != 1:
        words = f"{WORKFLOW_KIND_WORDS.get(kind, kind)} " if kind else ""
        raise ExportError(f"This project has several {words}workflows: choose one for the {what}.")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Writers: rows are tuples of Python values in column order (None = missing).


def _may_start_formula(cells) -> bool:
    """Whether any text cell of a column starts like a spreadsheet formula (core.formats.csv_safe)."""
    try:
        # The common case, all str or None, checked without a Python call per cell.
        return any(map(str.startswith, filter(None, cells), repeat(FORMULA_STARTS)))
    except TypeError:  # a cell that is not a str: check each as csv_safe does
        return any(isinstance(v, str) and v.startswith(FORMULA_STARTS) for v in cells)


class CsvWriter:
    def __init__(self, path: Path, columns: list[Column]):
        self.handle = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)
        self.writer.writerow([c.name for c in columns])
        self.dt = [i for i, c in enumerate(columns) if c.kind == "datetime"]
        self.bools = [i for i, c in enumerate(columns) if c.kind == "bool"]
        # Text cells only: a number column's -0.5 stays a number (core.formats.csv_safe).
        self.texts = [i for i, c in enumerate(columns) if c.kind == "str"]
        # JSON text starts with [ or {: nothing a spreadsheet runs as a formula.
        self.nested = [i for i, c in enumerate(columns) if c.kind in NESTED_KINDS]

    def write(self, rows: list[tuple]) -> None:
        # Column by column (zip(*rows) transposes in C): only the columns that need a conversion cost
        # Python work per cell, and a text column none of whose cells could start a formula costs one
        # scan. Half of a large votes export's time went to the per-row, per-cell loop this replaced.
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        for i in self.nested:
            cols[i] = [json_text(v) for v in cols[i]]
        for i in self.dt:
            cols[i] = [v if v is None or isinstance(v, str) else v.isoformat() for v in cols[i]]
        for i in self.bools:
            cols[i] = [None if v is None else "true" if v else "false" for v in cols[i]]
        for i in self.texts:
            if _may_start_formula(cols[i]):
                cols[i] = [csv_safe(v) for v in cols[i]]
        self.writer.writerows(zip(*cols, strict=True))

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
            "list": pa.list_(pa.string()),
            "matrix": pa.list_(pa.list_(pa.float64())),
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
        # Nested cells are JSON text here: FITS tables hold no lists of varying shape.
        text = ("str", *NESTED_KINDS)
        self.dtype = np.dtype(
            [(c.name, f"S{c.width}" if c.kind in text else spec[c.kind][0]) for c in columns]
        )
        self.tforms = [f"{c.width}A" if c.kind in text else spec[c.kind][1] for c in columns]

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
        if kind in NESTED_KINDS:
            value = json_text(value)
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
    if meta.get("licence"):
        header["LICENSE"] = meta["licence"]
        # Long strings go into CONTINUE cards, like AGGPARAM below.
        header["CITATION"] = meta.get("citation", "")
    if meta.get("aggregation"):
        # Long JSON goes into CONTINUE cards (astropy writes and reads them transparently).
        header["AGGPARAM"] = json.dumps(meta["aggregation"], sort_keys=True, default=str)


class EcsvWriter:
    """astropy's ECSV header (column types, units, descriptions, provenance in `meta`) for an empty
    table, then the rows as CSV with ECSV's conventions (True/False, missing = empty field)."""

    def __init__(self, path: Path, columns: list[Column], meta: dict):
        from astropy.table import Table

        dtypes = {"int": "i8", "float": "f8", "str": "U1", "bool": "?", "datetime": "U1", "list": "U1"}
        dtypes["matrix"] = "U1"
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
        self.nested = [i for i, c in enumerate(columns) if c.kind in NESTED_KINDS]

    def write(self, rows: list[tuple]) -> None:
        out = []
        for row in rows:
            row = list(row)
            for i in self.nested:
                row[i] = json_text(row[i])
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


class _PostgresUTCText(Func):
    """A timestamptz as SQLite stores it with USE_TZ: naive UTC "YYYY-MM-DD HH:MM:SS[.ffffff]", the
    fraction left out when it is zero (as datetime.isoformat does), so `iso` turns it into exactly the
    text datetime.isoformat() gives for the UTC datetime psycopg would have parsed."""

    # to_char, not a ::text cast: it does not depend on the session's DateStyle and always writes six
    # fraction digits; ".000000" can only be the fraction (the rest has no dot).
    template = (
        "replace(to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '.000000', '')"
    )
    output_field = TextField()


def datetime_text(queryset, names: list[str]) -> tuple:
    """(queryset, field names) that read the date-time fields `names` cheaply, as text in SQLite's
    stored form (no parsing into datetime objects and back: on PostgreSQL that parse was half of a
    votes export's time); other databases read the fields themselves."""
    vendor = connections[queryset.db].vendor
    if vendor == "sqlite":
        annotations = {f"{name}_text": Cast(name, TextField()) for name in names}
    elif vendor == "postgresql":
        annotations = {f"{name}_text": _PostgresUTCText(name) for name in names}
    else:
        return queryset, list(names)
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


def project_workflows(project: Project, workflow: Workflow | None, kinds=None) -> list[Workflow]:
    """The workflows an export covers: the one asked for, else the project's (of `kinds`), by id."""
    if workflow is not None:
        return [workflow]
    qs = project.workflows.select_related("active_model").order_by("pk")
    if kinds:
        qs = qs.filter(kind__in=kinds)
    return list(qs)


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


def project_url(project: Project) -> str:
    """The project's public page (core:project_about), on SKYVOTE_SITE_URL (jobs have no request to ask
    for the host). Spelled out rather than reversed: reversing loads every URLconf and view module into
    an export job that otherwise never needs them (tests/test_exports_memory.py measures its memory)."""
    from django.conf import settings

    return f"{settings.SKYVOTE_SITE_URL.rstrip('/')}/p/{project.slug}/about/"


def project_terms(project: Project, year: int | None = None) -> dict:
    """The terms every export carries: the labels' licence (SPDX id, name, URL) and how to cite them
    (project name, owner or contact, year, URL)."""
    year = year or timezone.now().year
    who = project.contact or project.owner.get_full_name() or project.owner.get_username()
    url = project_url(project)
    return {
        "licence": project.licence,
        "licence_name": project.licence_name,
        "licence_url": project.licence_url,
        "citation": f"{who} ({year}). {project.name}: volunteer labels from Skyvote. {url}",
        "url": url,
        "creator": who,
    }


def base_meta(project: Project, kind: str, workflow: Workflow | None) -> dict:
    return {
        "project": project.slug,
        "workflow": workflow.slug if workflow else "all",
        "kind": kind,
        "exported_at": timezone.now().isoformat(),
        "code_version": code_version(),
        **project_terms(project),
    }


def model_info(workflow: Workflow) -> dict | None:
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
# Progress and zip members


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


class _HashingWriter:
    """Writes into a zip member while computing the SHA-256 and size of what goes in."""

    def __init__(self, handle):
        self.handle, self.sha, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha.update(data)
        self.size += len(data)


def zip_add_file(zf: zipfile.ZipFile, name: str, source: Path, *, header: bytes = b"", deflate: bool) -> dict:
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


def verify_manifest(path: Path) -> dict:
    """Check a zip export (a bundle) against its manifest.json; returns the manifest, raises
    ExportError if a file is missing or its SHA-256 differs."""
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
# Jobs


def validate_request(project: Project, kind: str, fmt: str, workflow_id=None) -> Workflow | None:
    """The workflow an export request names (or None for the whole project); ExportError if invalid."""
    kind = (kind or "").strip().lower()
    fmt = (fmt or "").strip().lower()
    found = exporter(kind)
    if found is None:
        raise ExportError(f"Unknown export '{kind}'; choose one of {', '.join(_EXPORTERS)}.")
    if fmt not in found.formats:
        raise ExportError(f"A {kind} export can be {', '.join(found.formats)}, not '{fmt}'.")
    workflow = None
    if workflow_id not in (None, ""):
        try:
            workflow = project.workflows.select_related("active_model").get(pk=int(workflow_id))
        except (ValueError, TypeError, Workflow.DoesNotExist):
            raise ExportError("No such workflow in this project.")
    return found.workflow_for(project, workflow)


def start_export(
    *, project: Project, user, role: str, kind: str, fmt: str, workflow_id=None, split: dict | None = None
) -> Job:
    """Queue an export job (owners, scientists and viewers). The task is sent once the transaction commits."""
    if role not in EXPORT_ROLES:
        raise ExportError("Only the project's owners, scientists and viewers can export.")
    workflow = validate_request(project, kind, fmt, workflow_id)
    kind, fmt = kind.strip().lower(), fmt.strip().lower()
    params = {"kind": kind, "format": fmt, "include_worker_ids": can_see_worker_ids(role), "role": role}
    params |= exporter(kind).clean_params({"split": split})
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
        found = exporter(kind)
        if found is None:  # a job queued before its app (or the exporter) was removed
            raise ExportError(f"Unknown export '{kind}'.")
        info = found.run(job.project, target, fmt, workflow=job.workflow, params=params, progress=report)
        run.heartbeat(force=True)  # still ours: only now write the file where the job will point
        # Private storage under a random name: the friendly name (project, kind, time) is guessable,
        # so it is only the download's Content-Disposition (params["filename"]).
        name = random_name(f"jobs/{job.project_id}/{job.pk}/", f".{EXTENSIONS[fmt]}")
        with open(target, "rb") as handle:
            stored = private_storage().save(name, File(handle, name=target.name))
        try:
            run.finish(
                Job.SUCCEEDED,
                f"{info['rows']:,} rows · {os.path.getsize(target) / 1e6:.1f} MB",
                result=stored,
                params={
                    **params,
                    "filename": target.name,
                    "result": {k: v for k, v in info.items() if k in ("rows", "exported_at", "code_version")},
                },
            )
        except JobLost:
            delete_stored(stored)
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def download_response(job: Job):
    """A finished export's file, for a view that has checked the role: from private storage (default
    storage for exports written before), under its friendly name."""
    response = file_response(
        job.result.name,
        content_type=CONTENT_TYPES.get(job.params.get("format", ""), "application/octet-stream"),
        filename=job.params.get("filename") or Path(job.result.name).name,
        as_attachment=True,
    )
    # CSV and JSON Lines have no place for metadata: the terms come with the download instead (the
    # other formats also carry them inside: Parquet and ECSV metadata, FITS headers, bundle files).
    terms = project_terms(job.project, year=job.created_at.year)
    if terms["licence_url"]:
        response["Link"] = f'<{terms["licence_url"]}>; rel="license"'
    response["X-Skyvote-License"] = terms["licence"]
    response["X-Skyvote-Citation"] = _header_safe(terms["citation"])
    return response


def _header_safe(text: str) -> str:
    # Header values must be Latin-1 without line breaks; a project name may be neither.
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


def export_jobs(project: Project):
    return (
        Job.objects.filter(project=project, kind=Job.EXPORT)
        .select_related("workflow")
        .order_by("-created_at")
    )
