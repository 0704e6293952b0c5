"""Vote submission: the one path every vote takes (the page, the JSON API, task links).

`record_vote` is idempotent on the client's key, stores a vote at most once per
(workflow, subject, participant), never drops a vote for a subject that retired meanwhile
(it is stored and flagged late), and updates counts, belief and retirement in the same
transaction with the subject row locked, so concurrent voters cannot miscount. The exactly-once
part is core.votes.store_vote_once, shared with similarity answers; this module adds what a
real/bogus vote is and what it updates.

Only what was served is answered: a vote from the page or the API carries the ticket that came with
its subject (core.tickets), bound to the workflow, subject and participant, and saying whether the
subject was served as gold. Gold feedback and the volunteer's skill follow that flag, never the
subject's current gold label, and the expert's answer is in the reply to the vote that created it,
not in replays. Imports and task links prove serving themselves and call with `trusted=True`.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from core import tickets
from core.models import Participant, Subject, Workflow
from core.votes import VoteError, lost_session_retry, parse_idempotency_key, refuse_if_closed, store_vote_once
from labeling import aggregation, retirement
from labeling.models import Vote
from loop import services as loop_services

__all__ = ["VoteError", "VoteResult", "gold_feedback", "record_vote"]


@dataclass
class VoteResult:
    vote: Vote
    created: bool
    retired_now: bool = False
    feedback: dict | None = field(default=None)


def record_vote(
    *,
    workflow: Workflow,
    subject_id: int,
    participant: Participant,
    answer: str,
    idempotency_key,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    user_agent: str = "",
    viewport: str = "",
    assignment=None,
    source: str = "web",
    created_at: datetime | None = None,
    ticket: str | None = None,
    trusted: bool = False,
) -> VoteResult:
    """Store one real/bogus vote. `ticket`: the one served with the subject (core.tickets.verify
    refuses anything else with TicketError). `trusted`: the caller has its own proof of serving (vote
    imports, task-link assignments, the demo seeder); no ticket, and the subject's gold label counts."""
    key = parse_idempotency_key(idempotency_key)
    if workflow.kind != Workflow.REAL_BOGUS:
        raise VoteError("This workflow asks which images are similar: it takes no real/bogus votes.")
    answer = (answer or "").strip().lower()
    if answer not in set(workflow.answer_keys) | {Vote.SKIP}:
        raise VoteError(
            f"'{answer}' is not an answer of this workflow ({', '.join(workflow.answer_keys)} or skip)."
        )
    if started_at and finished_at and finished_at < started_at:
        started_at, finished_at = finished_at, started_at

    def build() -> Vote:
        if source != "import":  # imports record votes made elsewhere, before: the lifecycle is for new ones
            refuse_if_closed(workflow.project_id, ticket)
        subject = (
            Subject.objects.select_for_update().filter(pk=subject_id, project_id=workflow.project_id).first()
        )
        if subject is None:
            raise VoteError("No such subject in this project.")
        if subject.workflow_id is not None and subject.workflow_id != workflow.pk:
            raise VoteError("This subject is not part of this workflow.")
        if trusted:
            as_gold = bool(subject.gold_label)
        else:
            served = tickets.verify(
                ticket,
                workflow_id=workflow.pk,
                kind=tickets.SUBJECT,
                item_id=subject.pk,
                participant=participant,
            )
            # Gold only if it was served as gold (and still is): a label added after serving does not
            # make the volunteer's answer a gold check.
            as_gold = served.as_gold and bool(subject.gold_label)
        vote = Vote(
            workflow=workflow,
            subject=subject,
            participant=participant,
            answer=answer,
            idempotency_key=key,
            started_at=started_at,
            finished_at=finished_at or timezone.now(),
            user_agent=(user_agent or "")[:400],
            viewport=(viewport or "")[:40],
            # Late: the subject retired while this volunteer was looking at it. Stored, not dropped.
            subject_was_retired=subject.is_retired,
            was_gold=as_gold,
            # Gold labels are real or bogus; an answer is right when it counts as the expert's side
            # ("not sure" never is).
            gold_correct=(workflow.answer_class(answer) == subject.gold_label)
            if as_gold and answer != Vote.SKIP
            else None,
            assignment=assignment,
            source=source,
        )
        if created_at:
            vote.created_at = created_at
        return vote

    def created(vote: Vote) -> VoteResult:
        retired_now = _apply_vote(vote, vote.subject, workflow)
        transaction.on_commit(lambda: _after_commit(workflow.pk))
        return VoteResult(
            vote, created=True, retired_now=retired_now, feedback=gold_feedback(vote, vote.subject)
        )

    def same_vote(stored: Vote) -> bool:
        if (stored.workflow_id, stored.subject_id) != (workflow.pk, int(subject_id)):
            return False
        # The same vote retried after its session cookie was lost comes from a fresh anonymous
        # participant: it gets the stored vote back, which stays its own participant's.
        return stored.participant_id == participant.pk or (
            stored.answer == answer and lost_session_retry(participant)
        )

    return store_vote_once(
        Vote,
        key,
        build=build,
        created=created,
        same_vote=same_vote,
        # A replay never carries the expert's answer: it was in the reply that stored the vote.
        replay=lambda stored: VoteResult(stored, created=False),
        earlier=lambda: VoteResult(
            Vote.objects.get(workflow=workflow, subject_id=subject_id, participant=participant), created=False
        ),
        conflict_message="This idempotency key was already used for a different vote.",
    )


def _apply_vote(vote: Vote, subject: Subject, workflow: Workflow) -> bool:
    """Counts, belief and retirement for one new vote; the subject row is locked."""
    if vote.answer == Vote.SKIP:
        return False
    subject.vote_count += 1
    counts = dict(subject.answer_counts or {})
    counts[vote.answer] = counts.get(vote.answer, 0) + 1
    subject.answer_counts = counts
    aggregation.update_on_vote(vote, subject, workflow)
    subject.save(update_fields=["vote_count", "answer_counts", "p_real", "aggregation_method"])
    return retirement.retire_if_decided(subject, workflow)


def gold_feedback(vote: Vote, subject: Subject) -> dict | None:
    """After a subject served as gold the volunteer learns what the experts said; otherwise nothing."""
    if not vote.was_gold or not subject.gold_label or vote.answer == Vote.SKIP:
        return None
    from labeling.gold import guide_entry

    subtype_label, guide = guide_entry(subject.gold_subtype)
    return {
        "correct": vote.workflow.answer_class(vote.answer) == subject.gold_label,
        "expert_answer": subject.gold_label,
        "subtype": subject.gold_subtype,
        "subtype_label": subtype_label,
        "guide": guide,
    }


def _after_commit(workflow_id: int) -> None:
    # The learning loop hooks in here: count new decided labels, maybe queue a training round.
    loop_services.on_votes_committed(workflow_id)
