"""Rare gems: volunteers flag a subject that looks like none of the field guide's classes, with an
optional short note, while they answer it.

A flag is never an answer and never a vote of its own. It comes with a vote (the `gem` and
`gem_note` fields of the real/bogus and similarity forms, and of the vote API) and each app's vote
path calls `flag_with_vote` only *after* its vote service accepted the vote: a vote refused for a
wrong or expired ticket, a subject never served to the volunteer or a closed project stores no
flag, so a flag can only be about what the volunteer was shown. The flag then belongs to that vote's
subject (for a similarity task: its comparison image), workflow and participant.

Notes are plain text: `clean_note` strips control characters and collapses whitespace, and refuses
more than NOTE_MAX characters; templates escape them wherever they are shown, CSV exports escape
formulas (core.formats.csv_safe). Notes are rate-limited with the site's one limiter
(core.ratelimit, action "gem_note"). A refused note never costs the volunteer the vote or the flag:
the flag is stored without the new note and the reply says why.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import CharField, Count, OuterRef, Subquery
from django.utils import timezone

from core import ratelimit
from core.models import GemFlag

NOTE_MAX = GemFlag.NOTE_MAX
# What the vote API's serializer accepts at most; longer text is refused before it is cleaned.
RAW_MAX = 10_000

# Zero-width (non-)joiners are format characters that emoji and some scripts need; every other
# control or format character (NUL, escapes, bidirectional overrides, lone surrogates) is dropped.
_KEPT_FORMAT = {"\u200c", "\u200d"}

NOTE_SLOW_DOWN = (
    "Your rare-gem flag was saved, but not its note: you are writing notes faster than we can take "
    "them. Wait a minute before the next one. Your answer counts."
)


class GemNoteError(ValueError):
    """A note that cannot be stored; the message is for the volunteer."""


@dataclass(frozen=True)
class GemOutcome:
    """What happened to the flag sent with a vote: `flag` (None when none was asked for) and
    `message` (why the note was not stored, or None)."""

    flag: GemFlag | None = None
    message: str | None = None


def wants_flag(value) -> bool:
    """The form's or the API's `gem` field: "1" (the page), true, "true" or "on"."""
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "on", "yes")


def clean_note(text) -> str:
    """The note as stored: control characters out, runs of whitespace as one space, trimmed; plain
    text (no markup is interpreted or removed: templates escape it). GemNoteError past NOTE_MAX."""
    if text is None:
        return ""
    text = str(text)
    if len(text) > RAW_MAX:  # no need to clean a page of text to know it is too long
        raise GemNoteError(_too_long(len(text)))
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char)[0] != "C" or char in _KEPT_FORMAT:
            kept.append(char)
    note = " ".join("".join(kept).split())
    if len(note) > NOTE_MAX:
        raise GemNoteError(_too_long(len(note)))
    return note


def _too_long(length: int) -> str:
    return (
        f"Your rare-gem flag was saved, but not its note: a note can be at most {NOTE_MAX} characters "
        f"and yours has {length}. Your answer counts."
    )


def record_flag(*, workflow_id: int, subject_id: int, participant, vote_key, note: str = "") -> GemFlag:
    """Store the flag of `participant` on `subject_id`, once: a second flag updates the existing
    one (its note, when a new one is given, and the vote it came with). `note` must be clean
    (clean_note). Only for a vote its app has just accepted (see the module's docstring)."""
    now = timezone.now()
    with transaction.atomic():
        flag = (
            GemFlag.objects.select_for_update()
            .filter(workflow_id=workflow_id, subject_id=subject_id, participant=participant)
            .first()
        )
        if flag is None:
            try:
                # A savepoint: two first flags at once meet the unique constraint, the loser updates.
                with transaction.atomic():
                    return GemFlag.objects.create(
                        workflow_id=workflow_id,
                        subject_id=subject_id,
                        participant=participant,
                        note=note,
                        vote_key=vote_key,
                        created_at=now,
                        updated_at=now,
                    )
            except IntegrityError:
                flag = GemFlag.objects.select_for_update().get(
                    workflow_id=workflow_id, subject_id=subject_id, participant=participant
                )
        fields = ["vote_key", "updated_at"]
        flag.vote_key, flag.updated_at = vote_key, now
        if note:  # a flag sent again without a note keeps the one written before
            flag.note = note
            fields.append("note")
        flag.save(update_fields=fields)
    return flag


def flag_with_vote(request, *, vote, subject_id: int, participant, gem, note) -> GemOutcome:
    """The flag sent with an accepted `vote` (the form's or API's `gem` and `gem_note`): cleaned,
    rate-limited and stored on `subject_id` (the vote's subject, or its task's comparison image).
    Nothing when `gem` does not ask for a flag. A note that is too long or too fast is left out, and
    `message` says so; the flag itself is stored all the same."""
    if not wants_flag(gem) or vote.participant_id != participant.pk:
        # The second case: a retry that lost its session cookie gets the stored vote back, which stays
        # its own participant's; a key proves one vote was sent, not who may flag with it.
        return GemOutcome()
    message = None
    try:
        cleaned = clean_note(note)
    except GemNoteError as exc:
        cleaned, message = "", str(exc)
    if cleaned:
        try:
            ratelimit.check(request, "gem_note", participant)
        except ratelimit.RateLimited:
            cleaned, message = "", NOTE_SLOW_DOWN
    flag = record_flag(
        workflow_id=vote.workflow_id,
        subject_id=subject_id,
        participant=participant,
        vote_key=vote.idempotency_key,
        note=cleaned,
    )
    return GemOutcome(flag=flag, message=message)


def withdraw_with_vote(vote_key) -> None:
    """The vote `vote_key` was taken back (undone): so is the flag that came with it."""
    GemFlag.objects.filter(vote_key=vote_key).delete()


def follow_vote(old_key, new_key) -> None:
    """The vote `old_key` was replaced by `new_key` (a skip answered when the subject came back): its
    flag now belongs to the standing vote, so the votes export and API still show it."""
    GemFlag.objects.filter(vote_key=old_key).update(vote_key=new_key)


def counts_by_workflow(participant_ids) -> dict[int, int]:
    """{workflow id: flags} of these participants (a volunteer and the anonymous ones merged into them)."""
    rows = (
        GemFlag.objects.filter(participant_id__in=participant_ids)
        .values("workflow")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["workflow"]: row["n"] for row in rows}


def flags_of(participant_ids, limit: int = 50):
    """These participants' latest flags, newest first, with subject, workflow and project."""
    return (
        GemFlag.objects.filter(participant_id__in=participant_ids)
        .select_related("subject", "workflow__project")
        .order_by("-updated_at", "-pk")[:limit]
    )


def with_gem_note(queryset, key_field: str = "idempotency_key"):
    """A vote queryset annotated with `gem_note`: the note of the flag sent with each vote ("" for a
    flag without one), None when the vote came without a flag."""
    flags = GemFlag.objects.filter(vote_key=OuterRef(key_field)).values("note")[:1]
    return queryset.annotate(gem_note=Subquery(flags, output_field=CharField()))
