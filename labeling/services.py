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

Votes are taken back, never deleted: `undo_vote` retracts a volunteer's last answer (a VoteRetraction,
the row stays) and reverses exactly what it changed, and an answer to a skipped subject that came back
(labeling.selection) retracts the skip it replaces. "One vote per participant and subject" is one
*standing* vote: the unique constraint leaves retracted votes out.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core import followups, gems, tickets
from core.models import Participant, Subject, Workflow
from core.votes import VoteError, lost_session_retry, parse_idempotency_key, refuse_if_closed, store_vote_once
from labeling import aggregation, model_voter, retirement
from labeling.models import Vote, VoteRetraction
from loop import services as loop_services
from mlcore.aggregation import BOGUS, REAL, swap_skill, swap_undo

__all__ = [
    "UndoError",
    "VoteError",
    "VoteResult",
    "gold_feedback",
    "record_vote",
    "undo_vote",
    "undo_window_s",
    "undoable_vote",
]

DEFAULT_UNDO_WINDOW_S = 30


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
    followup: str | None = "",
) -> VoteResult:
    """Store one real/bogus vote. `ticket`: the one served with the subject (core.tickets.verify
    refuses anything else with TicketError). `trusted`: the caller has its own proof of serving (vote
    imports, task-link assignments, the demo seeder); no ticket, and the subject's gold label counts.
    `followup`: the answer to the follow-up question asked after `answer` (core.followups: a type key,
    "not_sure", or "" for none); one that does not fit the workflow's question is a VoteError.

    A replay (same idempotency key, same participant and subject) returns the stored vote as it is,
    follow-up included: the follow-up is not compared, like the answer, because the first request
    that got through is the vote (a retry cannot change it)."""
    key = parse_idempotency_key(idempotency_key)
    if workflow.kind != Workflow.REAL_BOGUS:
        raise VoteError("This workflow asks which images are similar: it takes no real/bogus votes.")
    answer = (answer or "").strip().lower()
    if not answer and (followup or "").strip():
        raise VoteError("A follow-up answer needs a main answer: send the answer too.")
    if answer not in set(workflow.answer_keys) | {Vote.SKIP}:
        raise VoteError(
            f"'{answer}' is not an answer of this workflow ({', '.join(workflow.answer_keys)} or skip)."
        )
    try:
        followup = followups.check_vote(workflow.followups, answer, followup)
    except followups.FollowupError as exc:
        raise VoteError(str(exc)) from None
    if started_at and finished_at and finished_at < started_at:
        started_at, finished_at = finished_at, started_at

    weighing: dict = {}

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
            if as_gold and _undid_gold_answer(workflow, subject, participant):
                # The feedback of the undone answer told them the expert's answer: a second try is an
                # ordinary vote, or undo would let anyone turn every gold check into a right answer.
                as_gold = False
            if source in Vote.SERVED_SOURCES:
                _replace_open_skip(workflow, subject, participant, key)
        # The skill this vote is weighed with, locked after the subject (the order every vote takes):
        # the vote row is written once, with the weights an undo needs.
        weighing["skill"] = (
            aggregation.weighing_skill(workflow, participant.pk, answer) if answer != Vote.SKIP else None
        )
        skill = weighing["skill"]
        vote = Vote(
            workflow=workflow,
            subject=subject,
            swap_p_l=float(skill.p_l) if skill is not None else None,
            swap_p_d=float(skill.p_d) if skill is not None else None,
            participant=participant,
            answer=answer,
            followup=followup,
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
        retired_now = _apply_vote(vote, vote.subject, workflow, weighing.get("skill"))
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
            Vote.objects.get(
                workflow=workflow, subject_id=subject_id, participant=participant, retracted=False
            ),
            created=False,
        ),
        conflict_message="This idempotency key was already used for a different vote.",
    )


def _undid_gold_answer(workflow: Workflow, subject: Subject, participant: Participant) -> bool:
    return Vote.objects.filter(
        workflow=workflow, subject=subject, participant=participant, retracted=True, was_gold=True
    ).exists()


def _replace_open_skip(workflow: Workflow, subject: Subject, participant: Participant, new_key) -> None:
    """The volunteer skipped this subject and it came back (labeling.selection): the skip is retracted
    before their new answer is stored, so they have one standing vote on it. A skip moved no count, so
    nothing else changes, but a rare-gem flag sent with the skip now belongs to the new answer (`new_key`).
    The subject row is locked, so two answers cannot both replace it."""
    skip = (
        Vote.objects.select_for_update()
        .filter(
            workflow=workflow, subject=subject, participant=participant, retracted=False, answer=Vote.SKIP
        )
        .first()
    )
    if skip is not None:
        _retract(skip, participant, VoteRetraction.REPLACED)
        gems.follow_vote(skip.idempotency_key, new_key)


def _retract(vote: Vote, participant: Participant, reason: str) -> bool:
    """Mark the vote retracted and record why; False if it already was (the conditional update and the
    one-to-one retraction row both refuse a second retraction, whoever races)."""
    if not Vote.objects.filter(pk=vote.pk, retracted=False).update(retracted=True):
        return False
    try:
        with transaction.atomic():
            VoteRetraction.objects.create(vote=vote, participant=participant, reason=reason)
    except IntegrityError:
        return False
    vote.retracted = True
    return True


def _apply_vote(vote: Vote, subject: Subject, workflow: Workflow, skill=None) -> bool:
    """Counts, belief and retirement for one new vote; the subject row (and `skill`, the volunteer's
    skill row when the vote moves P(real)) is locked."""
    if vote.answer == Vote.SKIP:
        return False
    subject.vote_count += 1
    counts = dict(subject.answer_counts or {})
    counts[vote.answer] = counts.get(vote.answer, 0) + 1
    subject.answer_counts = counts
    aggregation.update_on_vote(vote, subject, workflow, skill)
    aggregation.update_type_on_vote(vote, subject, workflow)
    subject.save(
        update_fields=[
            "vote_count", "answer_counts", "p_real", "aggregation_method",
            "type_counts", "type_posterior", "decided_type", "decided_with_model",
        ]
    )  # fmt: skip
    return retirement.retire_if_decided(subject, workflow)


def gold_feedback(vote: Vote, subject: Subject) -> dict | None:
    """After a subject served as gold the volunteer learns what the experts said; otherwise nothing."""
    if not vote.was_gold or not subject.gold_label or vote.answer == Vote.SKIP:
        return None
    from labeling.gold import guide_entry

    subtype_label, guide = guide_entry(subject.gold_subtype)
    feedback = {
        "correct": vote.workflow.answer_class(vote.answer) == subject.gold_label,
        "expert_answer": subject.gold_label,
        "subtype": subject.gold_subtype,
        "subtype_label": subtype_label,
        "guide": guide,
        # The expert's type in the workflow's own words, and whether the volunteer's follow-up named
        # it: None when the workflow has no such type or the volunteer gave no type to compare.
        "type_label": "",
        "followup": vote.followup,
        "followup_label": "",
        "type_correct": None,
    }
    labels = followups.type_labels(vote.workflow.followups)
    if subject.gold_subtype and subject.gold_subtype in labels:
        feedback["type_label"] = labels[subject.gold_subtype]
        feedback["subtype_label"] = feedback["type_label"]
        if vote.followup and vote.followup != followups.NOT_SURE:
            feedback["type_correct"] = vote.followup == subject.gold_subtype
    if vote.followup:
        feedback["followup_label"] = labels.get(vote.followup, vote.followup)
    return feedback


def _after_commit(workflow_id: int) -> None:
    # The learning loop hooks in here: count new decided labels, maybe queue a training round.
    loop_services.on_votes_committed(workflow_id)


# ---------------------------------------------------------------------------------------------
# Undo: a volunteer takes back their last answer


class UndoError(VoteError):
    """The answer cannot be undone; the message says why. `status`: 404 nothing to undo, 403 not the
    volunteer's own answer, 409 too late (the window passed, or the subject retired) or not the last."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass
class UndoResult:
    vote: Vote
    subject: Subject
    retired_now: bool = False


def undo_window_s() -> int:
    return int(getattr(settings, "SKYVOTE_UNDO_WINDOW_S", DEFAULT_UNDO_WINDOW_S))


def _last_vote(workflow: Workflow, participant: Participant) -> Vote | None:
    """The participant's most recently stored vote in the workflow, retracted or not: only that one can be
    undone, so after an undo nothing can be undone until they answer again. By insertion order (imports
    bring older creation times of their own)."""
    return (
        Vote.objects.filter(workflow=workflow, participant=participant)
        .select_related("subject")
        .order_by("-pk")
        .first()
    )


def undoable_vote(workflow: Workflow, participant: Participant, now: datetime | None = None) -> Vote | None:
    """The vote an Undo button on the page would take back now, or None. What undo_vote checks again,
    under the subject's lock, when it is pressed."""
    now = now or timezone.now()
    vote = _last_vote(workflow, participant)
    if vote is None or vote.retracted or vote.source not in Vote.SERVED_SOURCES:
        return None
    if now - vote.created_at > timedelta(seconds=undo_window_s()):
        return None
    if vote.subject_was_retired or vote.subject.is_retired:
        return None
    return vote


def undo_vote(
    *, workflow: Workflow, participant: Participant, vote_key, now: datetime | None = None
) -> UndoResult:
    """Retract the participant's last vote (named by its idempotency key) and reverse what it changed:
    the subject's counts and P(real), the volunteer's vote count and, for a gold vote, their gold tallies
    and skill. Only within the undo window, only while the subject is active, only the volunteer's own
    last vote in this workflow, cast on a served ticket (the page or the API). The subject row is locked
    first, as record_vote locks it, so an undo and a vote that retires the subject are serialised: the
    later one sees the other's result.
    """
    from core.votes import parse_idempotency_key

    try:
        key = parse_idempotency_key(vote_key)
    except VoteError:
        raise UndoError("There is no answer of yours to undo here.", status=404) from None
    found = Vote.objects.filter(idempotency_key=key, workflow=workflow).only("pk", "subject_id").first()
    if found is None:
        raise UndoError("There is no answer of yours to undo here.", status=404)
    with transaction.atomic():
        refuse_if_closed(workflow.project_id)
        subject = Subject.objects.select_for_update().get(pk=found.subject_id)
        vote = Vote.objects.select_for_update().get(pk=found.pk)
        now = now or timezone.now()
        _check_undoable(vote, subject, workflow, participant, now)
        if not _retract(vote, participant, VoteRetraction.UNDO):
            raise UndoError("That answer was already undone.")
        _reverse_vote(vote, subject, workflow)
        gems.withdraw_with_vote(vote.idempotency_key)  # the flag sent with an answer goes with it
        # Had the vote never been made, the subject might have retired already (a consensus a dissenting
        # answer held back, a P(real) past its threshold): the rule is applied to the state without it.
        retired_now = retirement.retire_if_decided(subject, workflow)
    return UndoResult(vote=vote, subject=subject, retired_now=retired_now)


def _check_undoable(vote: Vote, subject: Subject, workflow: Workflow, participant: Participant, now) -> None:
    if vote.participant_id != participant.pk:
        raise UndoError("That answer is not yours to undo.", status=403)
    if vote.retracted:
        raise UndoError("That answer was already undone.")
    if vote.source not in Vote.SERVED_SOURCES:
        raise UndoError("Only answers given on this page or through the API can be undone.")
    last = _last_vote(workflow, participant)
    if last is None or last.pk != vote.pk:
        raise UndoError("Only your last answer can be undone.")
    window = undo_window_s()
    if now - vote.created_at > timedelta(seconds=window):
        raise UndoError(f"Too late to undo: an answer can be undone for {window} seconds.")
    if vote.subject_was_retired or subject.is_retired:
        raise UndoError("Too late to undo: this subject has retired, its votes are final.")


def _reverse_vote(vote: Vote, subject: Subject, workflow: Workflow) -> None:
    """Take the retracted vote's contribution out of the (locked) subject and the volunteer's skill."""
    if vote.answer == Vote.SKIP:
        return  # a skip moved nothing
    subject.vote_count = max(0, subject.vote_count - 1)
    counts = dict(subject.answer_counts or {})
    left = int(counts.get(vote.answer, 0)) - 1
    if left > 0:
        counts[vote.answer] = left
    else:
        counts.pop(vote.answer, None)  # as if the answer had never been given
    subject.answer_counts = counts
    said = aggregation.CLASS_OF_ANSWER.get(workflow.answer_class(vote.answer))
    if said is not None:  # it moved P(real) and the volunteer's skill ("not sure" moves neither)
        p_l, p_d = _reverse_skill(vote, workflow, said)
        still_counted = (
            Vote.objects.filter(subject=subject, workflow=workflow, retracted=False)
            .filter(answer__in=_counted_keys(workflow))
            .exists()
        )
        if still_counted:
            p = subject.p_real if subject.p_real is not None else workflow.swap_prior
            subject.p_real = swap_undo(float(p), said == REAL, p_l, p_d)
        else:  # it was the only vote that moved P(real): back to no belief at all
            subject.p_real = None
            subject.aggregation_method = ""
            model_voter.forget_model_vote(subject)  # the model voted with the first vote: it goes too
    aggregation.reverse_type_on_vote(vote, subject, workflow)
    subject.save(
        update_fields=[
            "vote_count", "answer_counts", "p_real", "aggregation_method",
            "type_counts", "type_posterior", "decided_type", "decided_with_model",
        ]
    )  # fmt: skip


def _counted_keys(workflow: Workflow) -> list[str]:
    return [k for k in workflow.answer_keys if workflow.answer_class(k)]


def _reverse_skill(vote: Vote, workflow: Workflow, said: int) -> tuple[float, float]:
    """Take the vote out of the volunteer's (locked) skill row; returns the skill it was weighed with."""
    skill = aggregation.locked_skill(workflow, vote.participant_id)
    weighed = (vote.swap_p_l, vote.swap_p_d)
    skill.n_votes = max(0, skill.n_votes - 1)
    fields = ["n_votes", "updated_at"]
    if vote.was_gold and vote.gold_correct is not None:
        # The expert's side as it was when the vote was weighed: the answer if it was right, else the other.
        truth = said if vote.gold_correct else 1 - said
        if truth == REAL:
            skill.real_seen = max(0.0, skill.real_seen - 1)
            skill.real_said_real = max(0.0, skill.real_said_real - (said == REAL))
        else:
            skill.bogus_seen = max(0.0, skill.bogus_seen - 1)
            skill.bogus_said_bogus = max(0.0, skill.bogus_said_bogus - (said == BOGUS))
        skill.n_gold = max(0, skill.n_gold - 1)
        skill.n_gold_correct = max(0, skill.n_gold_correct - int(bool(vote.gold_correct)))
        if None in weighed:  # a vote stored before weights were kept: the skill its tallies give
            weighed = swap_skill(
                skill.real_seen,
                skill.real_said_real,
                skill.bogus_seen,
                skill.bogus_said_bogus,
                pseudo_counts=aggregation.NEW_VOLUNTEER_PSEUDO_COUNTS,
            )
        # A gold vote is weighed with the skill the volunteer had before it: that is their skill again.
        skill.p_l, skill.p_d = weighed
        fields += ["p_l", "p_d", "real_seen", "real_said_real", "bogus_seen", "bogus_said_bogus"]
        fields += ["n_gold", "n_gold_correct"]
    elif None in weighed:  # an ordinary vote left the skill as it was
        weighed = (skill.p_l, skill.p_d)
    skill.updated_at = timezone.now()
    skill.save(update_fields=fields)
    return weighed


# A volunteer with no skill record yet counts as a new one: P_L = P_D = 0.7 (aggregation's prior).
NEW_VOLUNTEER_WEIGHT = 0.4


def participant_weights(workflow: Workflow) -> dict[int, float]:
    """{participant id: weight in [0, 1]} from what SWAP believes about each volunteer of the workflow:
    P_L + P_D − 1, how much better than a coin their answers are (0 for a coin or worse, 1 for a
    volunteer who is always right). Volunteers not listed weigh NEW_VOLUNTEER_WEIGHT. One query."""
    from labeling.models import ParticipantSkill

    rows = ParticipantSkill.objects.filter(workflow=workflow).values_list("participant_id", "p_l", "p_d")
    return {pid: min(1.0, max(0.0, p_l + p_d - 1.0)) for pid, p_l, p_d in rows}
