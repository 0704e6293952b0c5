"""Which subject a participant sees next.

Rules: never one they already answered, never a retired one; gold subjects mixed in by the
workflow's schedule (Workflow.gold_share_for); with an active model, the top of the acquisition
ranking (Subject.priority, written by loop.services) with an exploration share of random picks;
without one, random. A share of each volunteer's subjects (Workflow.gem_share, on a fixed schedule:
`gem_slot_due`) goes to the current top rare-gem candidates few people have seen (the gems app
registers their source: `register_gem_source`).

Skips come back: a subject the volunteer skipped on a served ticket is served to them again, first
thing, once they have answered SKIP_RETURN_AFTER other subjects since the skip, or as soon as nothing
else is left. Their answer then replaces the skip (labeling.services retracts it). It comes back once:
skipped again, it stays skipped. Undone (retracted) votes do not count as answers at all.

Speed (bench/selection.py, docs/benchmarks.md): every query walks an index in order and stops after
a handful of rows. Random picks start at a random point of the indexed `random_key` (no ORDER BY
RANDOM()); ranked picks walk (workflow, status, gold_label, priority) from the top; gold_label is in
both indexes so on SQLite (whose indexes carry the rowid) the walks never touch the table; on
PostgreSQL each entry walked still reads its row for the id (docs/benchmarks.md, "Selection
(PostgreSQL)"). "Already seen" is an index probe per candidate (NOT EXISTS on the unique vote key),
never a scan of the participant's history, so a volunteer with 1,000 answers costs the same as a new
one.

No pile-on: volunteers arriving together must not all get the single most informative subject.
A ranked pick chooses at random among the best few candidates, and reserves the chosen one for a
short time (RESERVATION_S) in the cache, so the next volunteer's pick comes from the ones not
reserved. Reservations are a preference, not a lock: when everything near the top is reserved
the pick falls back to the reserved ones rather than to nothing. They live in Django's cache:
per process by default, shared across web processes with CACHE_URL=redis://...

Serving (`serve_next`) hands the subject out with a ticket (core.tickets) that its vote must bring
back; the gold schedule counts only the participant's votes cast on such tickets (Vote.SERVED_SOURCES).
"""

import math
import random

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q

from core import tickets
from core.models import Participant, Subject, Workflow
from core.sampling import random_window
from labeling.labels import GOLD_ANSWERS
from labeling.models import Vote, VoteRetraction

TOP_FEW = 8  # randomise among this many of the best candidates
CANDIDATES = 32  # look this far down the ranking for unreserved subjects
RESERVATION_S = 30  # a served subject is kept for its volunteer about as long as one classification
DEFAULT_SKIP_RETURN_AFTER = 10  # answers to other subjects before a skipped one comes back


def skip_return_after() -> int:
    return max(0, int(getattr(settings, "SKYVOTE_SKIP_RETURN_AFTER", DEFAULT_SKIP_RETURN_AFTER)))


def _unseen(workflow: Workflow, participant: Participant):
    # Standing votes only (an undone vote is as if never cast); `retracted=False` also lets the probe use
    # the partial unique index on (workflow, subject, participant). An open skip is a standing vote: a
    # skipped subject comes back only through _returning_skip.
    seen = Vote.objects.filter(
        workflow=workflow, participant=participant, subject=OuterRef("pk"), retracted=False
    )
    return Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE).exclude(Exists(seen))


def _returning_skip(workflow: Workflow, participant: Participant, pool_exhausted: bool) -> int | None:
    """The subject of the participant's oldest open skip if it is due to come back: SKIP_RETURN_AFTER
    answers since it, or nothing else left. A walk of the partial index of open skips, and a count of at
    most SKIP_RETURN_AFTER later votes, both only for volunteers who have an open skip."""
    replaced_before = VoteRetraction.objects.filter(
        vote__workflow=workflow,
        vote__participant=participant,
        vote__subject=OuterRef("subject"),
        vote__answer=Vote.SKIP,
        reason=VoteRetraction.REPLACED,
    )
    skip = (
        Vote.objects.filter(
            workflow=workflow,
            participant=participant,
            answer=Vote.SKIP,
            retracted=False,
            source__in=Vote.SERVED_SOURCES,
            subject__status=Subject.ACTIVE,
        )
        .exclude(Exists(replaced_before))  # it came back once already and was skipped again
        .order_by("created_at", "pk")
        .values_list("pk", "subject_id")
        .first()
    )
    if skip is None:
        return None
    skip_pk, subject_id = skip
    if pool_exhausted:
        return subject_id
    needed = skip_return_after()
    answered_since = (
        Vote.objects.filter(workflow=workflow, participant=participant, retracted=False, pk__gt=skip_pk)
        .exclude(answer=Vote.SKIP)
        .values("pk")[:needed]
        .count()
    )
    return subject_id if answered_since >= needed else None


def _random_pick(qs, rng: random.Random):
    ids = random_window(qs, rng, TOP_FEW)
    return rng.choice(ids) if ids else None


def _gold_pick(unseen, rng: random.Random):
    # One gold class at a time, in random order: each is an equality range of the
    # (workflow, status, gold_label, random_key) index, walked from a random point. Volunteers
    # get real and bogus gold about equally often, which is what feedback needs.
    labels = list(GOLD_ANSWERS)
    rng.shuffle(labels)
    for label in labels:
        pick = _random_pick(unseen.filter(gold_label=label), rng)
        if pick is not None:
            return pick
    return None


def reservation_key(workflow_id: int, subject_id: int) -> str:
    return f"skyvote:reserved:{workflow_id}:{subject_id}"


def _ranked_pick(qs, rng: random.Random, workflow: Workflow, participant: Participant):
    ids = list(qs.order_by("-priority").values_list("pk", flat=True)[:CANDIDATES])
    if not ids:
        return None
    keys = {subject_id: reservation_key(workflow.pk, subject_id) for subject_id in ids}
    reserved = cache.get_many(list(keys.values()))
    free = [i for i in ids if reserved.get(keys[i], participant.pk) == participant.pk]
    pick = rng.choice((free or ids)[:TOP_FEW])
    cache.set(keys[pick], participant.pk, RESERVATION_S)
    return pick


# Rare gems: the gems app (above this one) registers where the current top gem candidates come from:
# fn(workflow, candidates) → up to TOP_FEW ids of `candidates` (a Subject queryset) best first, in one
# query. Without a registered source no gem slot is ever served.
_gem_source = None


def register_gem_source(fn) -> None:
    global _gem_source
    _gem_source = fn


def gem_slot_due(share: float, n_seen: int) -> bool:
    """Whether the participant's next subject is a gem slot: `share` of their subjects, on a fixed
    schedule by how many they answered (0.05: the 20th, 40th, ...; 1: every one; 0: none). A schedule,
    not a draw, so the seeded sequence of the other picks is unchanged and the extra query comes only
    when a slot is due."""
    if share <= 0:
        return False
    return math.floor((n_seen + 1) * share + 1e-9) > math.floor(n_seen * share + 1e-9)


def _gem_pick(ordinary, rng: random.Random, workflow: Workflow):
    # Few people have seen them: fewer votes than retire a subject under the count rule.
    ids = _gem_source(workflow, ordinary.filter(vote_count__lt=workflow.retirement_limit))
    return rng.choice(ids) if ids else None


def n_answered(workflow: Workflow, participant: Participant) -> int:
    """How far along the gold schedule the participant is: their standing votes cast on served tickets."""
    return history(workflow, participant)[0]


def history(workflow: Workflow, participant: Participant) -> tuple[int, int]:
    """(standing votes cast on served tickets, of which open skips), with one query: how far along the gold
    schedule the participant is, and whether a skipped subject may be due to come back."""
    counts = Vote.objects.filter(
        workflow=workflow, participant=participant, source__in=Vote.SERVED_SOURCES, retracted=False
    ).aggregate(seen=Count("pk"), open_skips=Count("pk", filter=Q(answer=Vote.SKIP)))
    return counts["seen"], counts["open_skips"]


def ticket_for(workflow: Workflow, subject: Subject, participant: Participant) -> str:
    """The ticket that serves `subject` to `participant` now; gold if the subject is gold now."""
    return tickets.issue(
        workflow_id=workflow.pk,
        kind=tickets.SUBJECT,
        item_id=subject.pk,
        participant_id=participant.pk,
        as_gold=bool(subject.gold_label),
    )


def serve_next(
    workflow: Workflow,
    participant: Participant,
    rng: random.Random | None = None,
    n_seen: int | None = None,
    open_skips: int | None = None,
) -> tuple[Subject | None, str | None]:
    """The next subject for the participant and the ticket its vote must carry; (None, None) when
    there is nothing left. `n_seen`, `open_skips`: what `history` says, when the caller counted already."""
    subject = next_subject(workflow, participant, rng=rng, n_seen=n_seen, open_skips=open_skips)
    if subject is None:
        return None, None
    return subject, ticket_for(workflow, subject, participant)


def next_subject(
    workflow: Workflow,
    participant: Participant,
    rng: random.Random | None = None,
    n_seen: int | None = None,
    open_skips: int | None = None,
) -> Subject | None:
    rng = rng or random.Random()
    if n_seen is None or open_skips is None:
        n_seen, open_skips = history(workflow, participant)
    if open_skips:
        returning = _returning_skip(workflow, participant, pool_exhausted=False)
        if returning is not None:
            return Subject.objects.filter(pk=returning).first()
    unseen = _unseen(workflow, participant)

    pick = None
    if rng.random() < workflow.gold_share_for(n_seen):
        pick = _gold_pick(unseen, rng)
    if pick is None:
        ordinary = unseen.filter(gold_label="")
        if _gem_source is not None and gem_slot_due(workflow.gem_share, n_seen):
            pick = _gem_pick(ordinary, rng, workflow)
        if pick is None and workflow.active_model_id and rng.random() >= workflow.exploration_share:
            pick = _ranked_pick(ordinary, rng, workflow, participant)
        if pick is None:
            pick = _random_pick(ordinary, rng)
    if pick is None:  # only gold left, or nothing at all
        pick = _gold_pick(unseen, rng)
    if pick is None and open_skips:  # nothing new left: a skipped subject comes back now
        pick = _returning_skip(workflow, participant, pool_exhausted=True)
    return Subject.objects.filter(pk=pick).first() if pick else None
