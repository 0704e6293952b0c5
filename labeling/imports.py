"""Importing the votes of an earlier campaign into a workflow (the import_votes command calls this).

Two formats, told apart by the header:

* simple CSV: ``subject_external_id,participant,answer[,created_at]`` (header optional; with a
  header, an optional ``followup`` column holds the follow-up answer: a type key or ``not_sure``);
* Zooniverse classification export: ``classification_id, user_name, user_id, workflow_id,
  created_at, annotations (JSON), subject_data (JSON), subject_ids`` and more. The answer is
  the value of the first task's annotation (or --task), mapped case-insensitively to our
  answers ("Real"/"Yes" → real, "Bogus"/"No" → bogus; change it with --answer-map).

Every vote goes through labeling.services.record_vote with an idempotency key derived from
its source row (uuid5), so importing the same file twice adds nothing. Importers become
participants keyed by external_id "import:<name>". Subjects are matched by external_id; a
Zooniverse row is matched through --subject-key in its subject_data (default: the first of
external_id, candid, #candid, !candid found there) or else its Zooniverse subject id.
Unknown subjects, unmapped answers and bad rows are reported with examples, never invented.
Malformed CSV (an unbalanced quote that swallows the lines after it, a row with more or fewer
fields than the header) is reported row by row with its line numbers; nothing in it is imported.
Messages are in plain words, never a Python exception's text.
"""

import csv
import io
import json
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.models import Participant, Subject, Workflow
from labeling.models import Vote
from labeling.services import VoteError, record_vote

IMPORT_NAMESPACE = uuid.UUID("6f1d8c3e-2b7a-5c4e-9d61-0a4f3e2b7c19")
SIMPLE_COLUMNS = ("subject_external_id", "participant", "answer")
ZOONIVERSE_COLUMNS = ("classification_id", "user_name", "annotations", "subject_ids")
DEFAULT_SUBJECT_KEYS = ("external_id", "subject_external_id", "candid", "#candid", "!candid")
DEFAULT_ANSWER_MAP = {"real": "real", "bogus": "bogus", "yes": "real", "no": "bogus", "skip": "skip"}
EXAMPLES = 5
MALFORMED_SHOWN = 50  # malformed rows listed one by one in the report (then a count)


class VoteImportError(ValueError):
    """The file or the options cannot be used at all (no row is imported); the message says why."""


@dataclass
class SourceRow:
    line: int
    key: str  # identifies the source row; the vote's idempotency key derives from it
    subject_refs: list[str]  # candidate external ids, best first
    participant: str
    raw_answer: object
    created_at: datetime | None
    followup: str = ""  # the follow-up answer (a type key or "not_sure"), from a `followup` column


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_present: int = 0
    late: int = 0
    other_workflow: int = 0
    unknown_subjects: Counter = field(default_factory=Counter)
    unmapped_answers: Counter = field(default_factory=Counter)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    malformed: list[tuple[int, int, str]] = field(default_factory=list)  # (first line, last line, why)

    @property
    def malformed_lines(self) -> int:
        return sum(last - first + 1 for first, last, _ in self.malformed)

    def lines(self) -> list[str]:
        out = [
            f"rows read: {self.rows}",
            f"votes imported: {self.imported} ({self.late} on subjects already retired)",
            f"already present (re-import): {self.already_present}",
        ]
        if self.other_workflow:
            out.append(f"rows of other Zooniverse workflows skipped: {self.other_workflow}")
        if self.unknown_subjects:
            n_rows = sum(self.unknown_subjects.values())
            first = ", ".join(list(self.unknown_subjects)[:EXAMPLES])
            out.append(
                f"unknown subjects: {len(self.unknown_subjects)} ({n_rows} rows not imported), e.g. {first}"
            )
        if self.unmapped_answers:
            first = ", ".join(repr(a) for a in list(self.unmapped_answers)[:EXAMPLES])
            out.append(
                f"answers not mapped: {sum(self.unmapped_answers.values())} rows, e.g. {first} (use --answer-map)"
            )
        if self.bad_rows:
            first = "; ".join(f"line {n}: {msg}" for n, msg in self.bad_rows[:EXAMPLES])
            out.append(f"bad rows: {len(self.bad_rows)} not imported, e.g. {first}")
        if self.malformed:
            out.append(
                f"malformed CSV rows: {len(self.malformed)} ({self.malformed_lines} lines not imported):"
            )
            for first, last, why in self.malformed[:MALFORMED_SHOWN]:
                out.append(f"  {'line' if first == last else 'lines'} {_span(first, last)}: {why}")
            if len(self.malformed) > MALFORMED_SHOWN:
                out.append(f"  and {len(self.malformed) - MALFORMED_SHOWN} more malformed rows")
        return out

    @property
    def n_problems(self) -> int:
        return (
            sum(self.unknown_subjects.values())
            + sum(self.unmapped_answers.values())
            + len(self.bad_rows)
            + self.malformed_lines
        )


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def parse_answer_map(text: str | None, workflow: Workflow) -> dict[str, str]:
    """'Yes=real,No=bogus' → {'yes': 'real', 'no': 'bogus'} on top of the defaults."""
    allowed = set(workflow.answer_keys) | {Vote.SKIP}
    mapping = {a.lower(): a for a in workflow.answer_keys}
    # A button's label names its answer too ("Not sure" → not_sure).
    mapping.update({o["label"].lower(): o["key"] for o in workflow.answer_options})
    mapping.update({k: v for k, v in DEFAULT_ANSWER_MAP.items() if v in allowed})
    for part in (text or "").split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition("=")
        target = target.strip().lower()
        if not sep or not source.strip():
            raise VoteImportError(f"--answer-map entries look like 'Yes=real', got '{part.strip()}'.")
        if target not in allowed:
            raise VoteImportError(
                f"--answer-map maps '{source.strip()}' to '{target}', which is not an answer of this workflow "
                f"({', '.join(sorted(allowed))})."
            )
        mapping[source.strip().lower()] = target
    return mapping


def parse_created_at(value: str) -> datetime | None:
    """Zooniverse's '2019-03-01 12:34:56 UTC' or ISO 8601; naive times are UTC. ValueError if unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.endswith(" UTC"):
        value = value[:-4]
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"unreadable created_at '{value}'")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _csv_records(text: str):
    """(first line, last line, record) of every CSV record; record None when its quoting is broken.

    Strict quoting, so that text after a closing quote is an error rather than silently glued on;
    the reader goes on at the next line. Line numbers are the file's, whatever the records span.
    """
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text), strict=True)
    last = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            record = None
        first, last = last + 1, max(last + 1, reader.line_num)
        yield first, last, record


def _well_formed(records, report: ImportReport, widths: set[int], multiline_ok=frozenset()):
    """(line, record) of the records that can be trusted; the others go to report.malformed.

    widths: the field counts a row may have. multiline_ok: indexes of the columns whose cells may
    hold line breaks (Zooniverse's JSON columns); anywhere else a cell running over several lines is
    an unbalanced quote that swallowed the lines after it.
    """
    expected = " or ".join(str(w) for w in sorted(widths))
    for first, last, record in records:
        if record is None:
            why = "a quote is not closed, or text follows a closing quote (an unbalanced quote?)"
        elif not record or not any(cell.strip() for cell in record):
            continue
        elif len(record) not in widths:
            why = (
                f"{len(record)} fields where {expected} were expected (an unbalanced quote or a stray comma?)"
            )
        elif any("\x00" in cell for cell in record):
            why = "contains a NUL character (is this a text file?)"
        elif last > first and any(
            "\n" in cell or "\r" in cell for i, cell in enumerate(record) if i not in multiline_ok
        ):
            why = "a quoted field runs over several lines (an unbalanced quote?)"
        else:
            yield first, record
            continue
        report.malformed.append((first, last, why))


def _simple_rows(records, header: list[str] | None, report: ImportReport) -> list[SourceRow]:
    rows = []
    index = {name: header.index(name) for name in header} if header else None
    widths = {len(header)} if header else {len(SIMPLE_COLUMNS), len(SIMPLE_COLUMNS) + 1}
    for n, record in _well_formed(records, report, widths):
        if index:
            cells = {name: (record[i] if i < len(record) else "") for name, i in index.items()}
        else:
            names = SIMPLE_COLUMNS + ("created_at",)
            cells = dict(zip(names, record, strict=False))
        subject_ref = cells.get("subject_external_id", "").strip()
        participant = cells.get("participant", "").strip()
        try:
            created_at = parse_created_at(cells.get("created_at", ""))
        except ValueError as exc:
            report.bad_rows.append((n, str(exc)))
            continue
        rows.append(
            SourceRow(
                line=n,
                key=f"simple:{subject_ref}:{participant}",
                subject_refs=[subject_ref] if subject_ref else [],
                participant=participant,
                raw_answer=cells.get("answer", ""),
                created_at=created_at,
                followup=cells.get("followup", "").strip(),
            )
        )
    return rows


def _json_cell(text: str, column: str, default: str):
    try:
        return json.loads(text or default)
    except ValueError:  # json.JSONDecodeError: its text is for programmers
        raise ValueError(f"the {column} column is not valid JSON") from None


def _annotation_value(annotations_json: str, task: str | None):
    annotations = _json_cell(annotations_json, "annotations", "[]")
    if isinstance(annotations, dict):  # some exports hold one annotation object
        annotations = [annotations]
    if not isinstance(annotations, list) or not annotations:
        raise ValueError("no annotation")
    chosen = annotations[0]
    if task:
        chosen = next((a for a in annotations if isinstance(a, dict) and a.get("task") == task), None)
        if chosen is None:
            raise ValueError(f"no annotation for task {task}")
    if not isinstance(chosen, dict) or "value" not in chosen:
        raise ValueError("annotation without a value")
    value = chosen["value"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _zooniverse_rows(records, header, task, zooniverse_workflow, subject_key, report) -> list[SourceRow]:
    index = {name: i for i, name in enumerate(header)}

    def cell(record, name):
        i = index.get(name)
        return record[i] if i is not None and i < len(record) else ""

    rows = []
    json_columns = frozenset(
        index[name] for name in ("annotations", "subject_data", "metadata") if name in index
    )
    for n, record in _well_formed(records, report, {len(header)}, json_columns):
        if zooniverse_workflow and cell(record, "workflow_id").strip() != zooniverse_workflow:
            report.other_workflow += 1
            continue
        try:
            zooniverse_subject = cell(record, "subject_ids").strip().split(";")[0].strip()
            refs = []
            subject_data = _json_cell(cell(record, "subject_data"), "subject_data", "{}")
            meta = subject_data.get(zooniverse_subject) if isinstance(subject_data, dict) else None
            if isinstance(meta, dict):
                for key in (subject_key,) if subject_key else DEFAULT_SUBJECT_KEYS:
                    if meta.get(key) not in (None, ""):
                        refs.append(str(meta[key]).strip())
            if not subject_key and zooniverse_subject:
                refs.append(zooniverse_subject)
            value = _annotation_value(cell(record, "annotations"), task)
            created_at = parse_created_at(cell(record, "created_at"))
        except ValueError as exc:  # raised by our own checks, in words
            report.bad_rows.append((n, str(exc)))
            continue
        classification_id = cell(record, "classification_id").strip()
        participant = cell(record, "user_name").strip() or cell(record, "user_id").strip()
        rows.append(
            SourceRow(
                line=n,
                key=f"zooniverse:{classification_id}" if classification_id else f"zooniverse-row:{record}",
                subject_refs=refs,
                participant=participant,
                raw_answer=value,
                created_at=created_at,
            )
        )
    return rows


def read_rows(text: str, task=None, zooniverse_workflow=None, subject_key=None, report=None):
    """Parse a file's text into source rows; returns (format name, rows)."""
    records = _csv_records(text)
    first_line, _, first = next(records, (0, 0, None))
    if first_line == 0:
        raise VoteImportError("The file is empty.")
    if first is None:
        raise VoteImportError(
            "The header line cannot be read: a quote in it is not closed, or text follows a closing quote."
        )
    header = [c.strip().lower() for c in first]
    if all(c in header for c in ZOONIVERSE_COLUMNS):
        return "zooniverse", _zooniverse_rows(records, header, task, zooniverse_workflow, subject_key, report)
    if all(c in header for c in SIMPLE_COLUMNS):
        return "simple", _simple_rows(records, header, report)
    if "annotations" in header or "classification_id" in header:
        missing = [c for c in ZOONIVERSE_COLUMNS if c not in header]
        raise VoteImportError(
            f"This looks like a Zooniverse export but lacks the columns: {', '.join(missing)}."
        )
    if len(first) in (3, 4) and not any(c in header for c in ("answer", "participant")):
        return "simple", _simple_rows(_csv_records(text), None, report)
    raise VoteImportError(
        "Unrecognised header. Expected subject_external_id,participant,answer[,created_at] or a Zooniverse "
        f"classification export ({', '.join(ZOONIVERSE_COLUMNS)}, ...); got: {', '.join(header)}."
    )


def map_answer(raw, mapping: dict[str, str]) -> str | None:
    if isinstance(raw, bool) or raw is None or isinstance(raw, dict | list):
        return None
    return mapping.get(str(raw).strip().lower())


def import_votes(
    workflow: Workflow,
    text: str,
    answer_map: str | None = None,
    task: str | None = None,
    zooniverse_workflow: str | None = None,
    subject_key: str | None = None,
    dry_run: bool = False,
) -> tuple[str, ImportReport]:
    """Import a file's text into `workflow`: (format name, report). Rows that cannot be imported are
    counted in the report; VoteImportError when the file or the options cannot be used at all."""
    mapping = parse_answer_map(answer_map, workflow)
    report = ImportReport()
    fmt, rows = read_rows(text, task, zooniverse_workflow, subject_key, report)
    report.rows = len(rows) + len(report.bad_rows) + report.other_workflow + report.malformed_lines
    # Earlier votes first, so the incremental belief sees them in the order they were cast.
    rows.sort(key=lambda r: (r.created_at is None, r.created_at or datetime.min.replace(tzinfo=UTC), r.line))
    subject_of = dict(Subject.objects.filter(project=workflow.project).values_list("external_id", "pk"))
    participants: dict[str, Participant] = {}
    for row in rows:
        if not row.participant:
            report.bad_rows.append((row.line, "no participant"))
            continue
        if not row.subject_refs:
            report.bad_rows.append((row.line, "no subject id"))
            continue
        subject_id = next((subject_of[r] for r in row.subject_refs if r in subject_of), None)
        if subject_id is None:
            report.unknown_subjects[row.subject_refs[0]] += 1
            continue
        answer = map_answer(row.raw_answer, mapping)
        if answer is None:
            report.unmapped_answers[str(row.raw_answer)] += 1
            continue
        if dry_run:
            report.imported += 1
            continue
        participant = participants.get(row.participant)
        if participant is None:
            external_id = f"import:{row.participant}"[:200]
            participant = (
                Participant.objects.filter(kind=Participant.WORKER, external_id=external_id)
                .order_by("pk")
                .first()
            ) or Participant.objects.create(kind=Participant.WORKER, external_id=external_id)
            participants[row.participant] = participant
        key = uuid.uuid5(IMPORT_NAMESPACE, f"{workflow.pk}:{row.key}")
        try:
            result = record_vote(
                workflow=workflow,
                subject_id=subject_id,
                participant=participant,
                answer=answer,
                followup=row.followup,
                idempotency_key=key,
                created_at=row.created_at,
                finished_at=row.created_at,
                source="import",
                trusted=True,  # the import file is the record of what was shown: no tickets
            )
        except VoteError as exc:
            report.bad_rows.append((row.line, str(exc)))
            continue
        if result.created:
            report.imported += 1
            report.late += int(result.vote.subject_was_retired)
        else:
            report.already_present += 1
    return fmt, report
