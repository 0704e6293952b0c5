"""The fast paths of large exports give exactly what the plain code gave.

Date-times in the votes export are read as text the database renders (no datetime parsing per value,
the hot path of a million-row export); the text must be exactly what datetime.isoformat() gives for the
stored UTC value, with and without a fraction of a second, and empty where nothing is stored. Runs on
the suite's database: SQLite here, PostgreSQL in CI (.ci/run), each with its own SQL. The CSV writer
converts column by column: formula escaping, booleans and missing cells as before."""

import csv
import datetime as dt
import uuid

import pytest

from core.exporters import Column, CsvWriter
from core.models import Participant, Subject
from labeling.exporters import vote_rows
from labeling.models import Vote

pytestmark = pytest.mark.django_db

UTC = dt.UTC
STAMPS = [
    dt.datetime(2026, 12, 2, 3, 44, 10, 210946, tzinfo=UTC),
    dt.datetime(2026, 12, 2, 3, 44, 10, tzinfo=UTC),  # no fraction: isoformat leaves it out
    dt.datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
    # Stored from another zone: exported as the same instant in UTC.
    dt.datetime(2025, 6, 30, 23, 30, 0, 500000, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
]


def test_vote_datetimes_are_exported_as_their_utc_isoformat(project, workflow):
    subject = Subject.objects.create(project=project, workflow=workflow, external_id="dt-1")
    expected = {}
    for i, stamp in enumerate(STAMPS + [None]):
        participant = Participant.objects.create(kind=Participant.ANONYMOUS, session_key=f"dt-{i}")
        vote = Vote.objects.create(
            workflow=workflow,
            subject=subject,
            participant=participant,
            answer="real",
            idempotency_key=uuid.uuid4(),
            started_at=stamp,
            finished_at=None if stamp is None else stamp + dt.timedelta(microseconds=999_999),
            created_at=stamp or STAMPS[0],
        )
        utc = None if stamp is None else stamp.astimezone(UTC)
        expected[vote.pk] = (
            None if utc is None else utc.isoformat(),
            None if utc is None else (utc + dt.timedelta(microseconds=999_999)).isoformat(),
            (utc or STAMPS[0]).isoformat(),
        )
    rows = [row for chunk in vote_rows(project, chunk_size=2) for row in chunk]
    # Columns without worker ids: pk, participant, kind, workflow, subject id, external id, answer,
    # started_at, finished_at, created_at, ...
    got = {row[0]: tuple(row[7:10]) for row in rows}
    assert got == expected
    assert got[max(got)][0] is None
    assert "2026-12-02T03:44:10+00:00" in {t for times in got.values() for t in times}


def test_csv_writer_converts_column_by_column_like_cell_by_cell(tmp_path):
    columns = [
        Column("a", "str", ""), Column("b", "str", ""), Column("n", "float", ""), Column("ok", "bool", ""),
        Column("when", "datetime", ""),
    ]  # fmt: skip
    rows = [
        (None, "plain", -0.5, True, STAMPS[1]),
        ("=1+1", None, None, None, "2026-01-01T00:00:00+00:00"),
        ("-x", 7, 3, False, None),  # a non-text value in a text column is left as it is
    ]
    writer = CsvWriter(tmp_path / "t.csv", columns)
    writer.write(rows)
    writer.write([])
    writer.close()
    with open(tmp_path / "t.csv", newline="") as handle:
        got = list(csv.reader(handle))
    assert got == [
        ["a", "b", "n", "ok", "when"],
        ["", "plain", "-0.5", "true", "2026-12-02T03:44:10+00:00"],
        ["'=1+1", "", "", "", "2026-01-01T00:00:00+00:00"],
        ["'-x", "7", "3", "false", ""],
    ]
