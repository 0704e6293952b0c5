"""Storing a vote exactly once: the skeleton shared by real/bogus votes (labeling.services) and
similarity answers (similarity.services).

A client sends each vote with an idempotency key (a UUID) and retries with the same key when it
does not know whether a request arrived, so a key seen before returns the stored vote instead of
counting twice. The vote table's unique constraints (the key; one vote per participant and
subject or task) are what make this hold under concurrency: the insert runs in a savepoint, and
the loser of a race re-reads what the winner stored. What a vote is, which row it locks, what it
updates and what the caller gets back are the apps' parts, passed in as callables.

A retry can also arrive without the session cookie: the response that set it was lost, so the
retry gets a new anonymous participant and the key belongs to the old one. `lost_session_retry`
tells that case apart from a key reused for something else, so the apps can replay the stored vote.
The vote stays with its participant (votes never move between participants) and the new session
is not given the old participant either: a key proves that one vote was sent, not who sent it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

from django.db import IntegrityError, models, transaction

from core.models import Participant

V = TypeVar("V", bound=models.Model)
R = TypeVar("R")


class VoteError(ValueError):
    """The vote cannot be accepted; the message says why, in words for the volunteer."""


def parse_idempotency_key(key, error: type[VoteError] = VoteError) -> uuid.UUID:
    """The client's key as a UUID, or `error` saying it must be one."""
    if isinstance(key, uuid.UUID):
        return key
    try:
        return uuid.UUID(str(key))
    except (ValueError, TypeError, AttributeError):
        raise error("The idempotency key must be a UUID.") from None


def refuse_if_closed(project_id: int, ticket: str | None = None, error: type[VoteError] = VoteError) -> None:
    """Raise `error` (the app's own vote error, so its handlers catch it) unless the project takes votes
    now (core.permissions.vote_refusal). The error is marked `project_closed` with `status` 409: the vote
    is fine, the project's state refuses it, and the pages answer with a page that says so.

    Read fresh inside the vote's transaction: a project paused a moment ago refuses at once. The ticket
    says when the subject was served, so a vote in flight when the project was paused still counts."""
    from core.models import Project
    from core.permissions import vote_refusal
    from core.tickets import served_and_expiry

    project = Project.objects.filter(pk=project_id).only("name", "status", "status_changed_at").first()
    if project is None:
        return
    served = served_and_expiry(ticket) if ticket else None
    message = vote_refusal(project, served_at=served[0] if served else None)
    if message is None:
        return
    refused = error(message)
    refused.status, refused.project_closed = 409, True
    raise refused


def lost_session_retry(participant: Participant) -> bool:
    """Whether `participant` looks like what a retry gets when its session cookie was lost: an
    anonymous participant made for this very request, with no account and no vote of any kind.

    Whoever sends a vote's idempotency key (a random UUID the client made) may see that vote again:
    the callers also require the same workflow, subject or task and answer as the stored vote.
    """
    if participant.kind != Participant.ANONYMOUS or participant.user_id or participant.merged_into_id:
        return False
    # Every vote table (real/bogus votes, similarity answers) keys its rows by idempotency_key.
    vote_relations = [
        relation
        for relation in Participant._meta.related_objects
        if any(f.name == "idempotency_key" for f in relation.related_model._meta.get_fields())
    ]
    return not any(
        relation.related_model.objects.filter(**{relation.field.name: participant}).exists()
        for relation in vote_relations
    )


def store_vote_once(
    model: type[V],
    key: uuid.UUID,
    *,
    build: Callable[[], V],
    created: Callable[[V], R],
    same_vote: Callable[[V], bool],
    replay: Callable[[V], R],
    earlier: Callable[[], R],
    conflict_message: str,
    error: type[VoteError] = VoteError,
) -> R:
    """Store the vote `build` makes at most once and return what the app's callables make of it.

    * build(): inside the transaction: lock the row the vote counts towards, check it, and return
      the unsaved vote (with `key` as its idempotency_key). It may raise `error`.
    * created(vote): inside the same transaction, right after the insert: counts, retirement,
      on-commit hooks; returns the result for a new vote.
    * same_vote(stored): whether the vote stored under `key` is for the same subject or task and
      participant as this request; if not, the key was reused and `error(conflict_message)` is raised.
    * replay(stored): the result for a retried request (the vote stored under `key`).
    * earlier(): the result when this participant had already voted here under another key.
    """

    def replay_stored(stored: V) -> R:
        if not same_vote(stored):
            raise error(conflict_message)
        return replay(stored)

    stored = model.objects.filter(idempotency_key=key).first()
    if stored is not None:
        return replay_stored(stored)

    with transaction.atomic():
        vote = build()
        try:
            # A savepoint, so that a unique-constraint violation leaves the outer transaction usable.
            with transaction.atomic():
                vote.save(force_insert=True)
        except IntegrityError:
            pass
        else:
            return created(vote)

    # Lost a race to the same key, or this participant already voted here under another key.
    stored = model.objects.filter(idempotency_key=key).first()
    if stored is not None:
        return replay_stored(stored)
    return earlier()
