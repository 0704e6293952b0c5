"""Values that cross a boundary: times and ids from clients, Python values into JSON columns, text
into CSV cells that spreadsheets open."""

import csv
import math
import re
from datetime import UTC, datetime, time

import numpy as np
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime


def parse_time(value: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date-time (or a bare date) → an aware datetime in UTC; naive values are UTC.

    None or "" gives None; anything else that is not a date raises ValueError. A bare date is
    the start of that day in UTC, or its last instant with `end_of_day` (for "until" filters).
    """
    if not value:
        return None
    try:
        parsed = parse_datetime(value)
        day = parse_date(value) if parsed is None else None
    except ValueError:
        parsed = day = None
    if parsed is None:
        if day is None:
            raise ValueError(f"'{value}' is not an ISO date (2024-05-01) or date-time.")
        parsed = datetime.combine(day, time.max if end_of_day else time.min)
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # In UTC, as the database compares it: an offset that takes the time before year 1 or after
        # 9999 (0001-01-01T00:00+05:00) cannot be converted, and is a bad value, not a server error.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"'{value}' is outside the range of dates.") from None


# The largest id a row can have (BigAutoField). A larger number names no row, and the database cannot
# even compare an id column with it (SQLite cannot bind it, PostgreSQL rejects it as out of range).
MAX_ID = 2**63 - 1
ID_RE = re.compile(r"[0-9]{1,19}")


def parse_id(value: str | None) -> int | None:
    """A row id from a client, written in ASCII digits; None for anything else. (str.isdigit() is no
    test: it accepts "²", which int() refuses.)"""
    value = (value or "").strip()
    if not ID_RE.fullmatch(value):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def parse_client_time(value: str | None) -> datetime | None:
    """A time a browser reports (when a subject was shown): the same parser, bad values ignored."""
    try:
        return parse_time(value)
    except ValueError:
        return None


def json_safe(value):
    """Any value → JSON-serialisable: NaN/±inf → None (JSON has no NaN and SQLite's JSON check
    refuses it), numpy scalars and arrays → Python, bytes dropped, other objects → str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items() if not isinstance(v, bytes | bytearray)}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value if not isinstance(v, bytes | bytearray)]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


# Spreadsheets (Excel, LibreOffice, Google Sheets) run a cell that starts with one of these as a
# formula, so a volunteer's user agent or a worker id such as "+cmd|..." or "@SUM(...)" could act
# on the machine of whoever opens an export. A leading single quote makes them show the text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A text cell that cannot start a formula: prefixed with ' if it would. Anything that is not a
    str (numbers, None) is returned as it is: a negative number stays a number."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class FormulaSafeCsvWriter:
    """csv.writer whose text cells never start a formula (csv_safe)."""

    def __init__(self, out, **options):
        self.writer = csv.writer(out, **options)

    def writerow(self, row):
        return self.writer.writerow([csv_safe(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)
