"""Served-subject tickets: a vote is only accepted for something that was served.

Serving a real/bogus subject (or a similarity task) to a participant hands out a short-lived ticket,
signed with the site's secret (django.core.signing, timestamped, with a salt of its own), bound to
the workflow, the subject or task, the participant and the moment it was served. The vote comes back
with it; `verify` refuses a missing, forged or expired ticket, another participant's, and one for
another subject, task or workflow. Nothing is stored: the signature is the record, and the one-vote-
per-participant constraint on the vote tables makes one ticket worth at most one standing vote (a
real/bogus vote taken back by its volunteer's undo no longer stands: labeling.services.undo_vote).

A ticket also says whether the subject was served as gold, so that the expert's answer is revealed,
and the volunteer's skill measured, only when the volunteer knowingly faced a gold check (not when a
subject became gold after it was shown, and never for a subject picked by the client). The flag is
not readable in the ticket: a signed value is only base64, and a client that could see "gold" before
answering could skip gold checks or take extra care over them. It is an HMAC of the ticket's nonce
that only the server can tell from its "not gold" twin.

Vote imports and task links keep their own proof of serving (the import's file, the assignment's
subject list) and need no ticket (`trusted=True` in the vote services).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

from core.votes import VoteError

SALT = "skyvote.served-ticket"
GOLD_SALT = "skyvote.served-ticket.gold"
SUBJECT, TASK = "subject", "task"
DEFAULT_MAX_AGE_S = 3600


class TicketError(VoteError):
    """The vote's ticket does not prove that this participant was served this subject or task.

    `status` is the HTTP status the pages and the API answer with: 400 when there is no ticket at all,
    403 when there is one that does not fit.
    """

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ticket:
    workflow_id: int
    kind: str
    item_id: int
    participant_id: int
    served_at: datetime
    as_gold: bool
    token: str


def max_age_s() -> int:
    return int(getattr(settings, "SKYVOTE_TICKET_MAX_AGE_S", DEFAULT_MAX_AGE_S))


def _gold_mark(nonce: str, as_gold: bool) -> str:
    return salted_hmac(GOLD_SALT, f"{nonce}:{int(bool(as_gold))}").hexdigest()[:16]


def issue(*, workflow_id: int, kind: str, item_id: int, participant_id: int, as_gold: bool = False) -> str:
    """A ticket for serving subject or task `item_id` (kind SUBJECT or TASK) to a participant now."""
    nonce = secrets.token_urlsafe(9)
    payload = {
        "w": int(workflow_id),
        "k": kind,
        "i": int(item_id),
        "p": int(participant_id),
        "t": int(time.time()),
        "n": nonce,
        "g": _gold_mark(nonce, as_gold),
    }
    return signing.dumps(payload, salt=SALT, compress=False)


def _decode(token: str) -> dict:
    if not token:
        raise TicketError(
            "This vote has no ticket. A vote answers a subject you were served: ask for the next subject "
            "and send its ticket with your answer.",
            status=400,
        )
    try:
        payload = signing.loads(str(token), salt=SALT, max_age=max_age_s())
    except signing.SignatureExpired:
        minutes = max(1, max_age_s() // 60)
        raise TicketError(
            f"This was served more than {minutes} minutes ago, so the vote was not stored. "
            "Here is a fresh one to answer."
        ) from None
    except (signing.BadSignature, ValueError, TypeError):
        raise TicketError("This vote's ticket is not valid, so the vote was not stored.") from None
    if not isinstance(payload, dict) or not {"w", "k", "i", "p", "t", "n", "g"} <= set(payload):
        raise TicketError("This vote's ticket is not valid, so the vote was not stored.")
    return payload


def verify(token: str | None, *, workflow_id: int, kind: str, item_id: int, participant) -> Ticket:
    """The ticket if it was issued for this workflow, subject or task and participant and has not
    expired; TicketError saying what is wrong otherwise.

    A ticket issued to an anonymous participant who has since logged in (their votes moved to the
    account: Participant.merged_into) still counts for the account.
    """
    payload = _decode(token)
    if payload["k"] != kind or payload["w"] != int(workflow_id):
        raise TicketError("This ticket was issued for another workflow, so the vote was not stored.")
    if payload["i"] != int(item_id):
        noun = "subject" if kind == SUBJECT else "task"
        raise TicketError(f"This ticket was issued for another {noun}, so the vote was not stored.")
    if payload["p"] != participant.pk and not _merged_into(payload["p"], participant):
        raise TicketError("This ticket was issued to someone else, so the vote was not stored.")
    return Ticket(
        workflow_id=payload["w"],
        kind=payload["k"],
        item_id=payload["i"],
        participant_id=payload["p"],
        served_at=datetime.fromtimestamp(payload["t"], tz=UTC),
        as_gold=constant_time_compare(payload["g"], _gold_mark(payload["n"], True)),
        token=str(token),
    )


def peek(token: str | None, **binding) -> Ticket | None:
    """`verify`, with None instead of an error: for showing a subject again after a refused request
    (only what was really served to this participant is shown again, never a subject the client names)."""
    try:
        return verify(token, **binding)
    except TicketError:
        return None


def served_and_expiry(token: str) -> tuple[datetime, datetime] | None:
    """When a ticket we issued was served and when it stops being accepted."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    served_at = datetime.fromtimestamp(payload["t"], tz=UTC)
    return served_at, served_at + timedelta(seconds=max_age_s())


def _merged_into(participant_id: int, participant) -> bool:
    from core.models import Participant

    return Participant.objects.filter(pk=participant_id, merged_into=participant).exists()
