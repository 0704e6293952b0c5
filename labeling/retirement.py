"""Retirement rules, chosen per workflow by the scientist.

- count: retire after `retirement_limit` votes (v1).
- swap: retire as real once P(real) ≥ `swap_p_high`, as bogus once P(real) ≤ `swap_p_low`, but
  never before `min_votes` votes.
- consensus: retire once one answer holds at least `consensus_fraction` of the (non-skip)
  votes, never before `min_votes` votes.

Under swap and consensus a subject that reaches `max_votes` without being decided retires into
the expert review queue (`needs_review=True`): more volunteer votes would not settle it. Gold
subjects never retire by rule: they stay in the mix for feedback. Every retirement records
its reason.

Types (core.followups), where the workflow asks (`type_retirement`): a subject the rule decides
retires only once its type is decided too (the type posterior's maximum reaches `type_confidence`
after at least two typed votes, and the type is one of the decided side's, when it has a side). A
subject still without a type at `max_votes` retires all the same, on its real/bogus decision, with a
reason that says the type stayed undecided: the review queue is for the real/bogus label that training
and alerts need, which is settled; more votes would not settle the type either, and the reason lets the
team find these subjects. Undecided real/bogus at `max_votes` goes to review as without types. Under
the count rule a subject waits past `retirement_limit` for its type, up to `max_votes`.

Owners retire and unretire by hand; changing the rule re-evaluates the active subjects in the
background (`reevaluate_workflow`).
"""

from django.db import transaction
from django.utils import timezone

from core.models import Subject, Workflow

REASON_MAX_LENGTH = Subject._meta.get_field("retired_reason").max_length
REEVALUATE_CHUNK = 500


def retire(subject: Subject, reason: str) -> None:
    subject.status = Subject.RETIRED
    subject.retired_reason = reason[:REASON_MAX_LENGTH]
    subject.retired_at = timezone.now()
    subject.save(update_fields=["status", "retired_reason", "retired_at"])


def _send_to_review(subject: Subject, reason: str) -> None:
    subject.needs_review = True
    subject.status = Subject.RETIRED
    subject.retired_reason = reason[:REASON_MAX_LENGTH]
    subject.retired_at = timezone.now()
    subject.save(update_fields=["needs_review", "status", "retired_reason", "retired_at"])


def _consensus(subject: Subject, workflow: Workflow | None = None) -> tuple[str, int, int] | None:
    """The leading side (real or bogus), its votes and all votes that count; None without votes.

    Answers are grouped by what they count as (core.answers): two answers that both mean "real" agree,
    and an answer that counts as neither ("not sure") is not a vote for either side.
    """
    sides = workflow.answer_options if workflow is not None else []
    side_of = {o["key"]: o["counts_as"] for o in sides}
    counts: dict[str, int] = {}
    for a, n in (subject.answer_counts or {}).items():
        if a == "skip":
            continue
        side = side_of.get(a, a) if side_of else a
        if side:
            counts[side] = counts.get(side, 0) + int(n)
    total = sum(counts.values())
    if not total:
        return None
    leader = max(sorted(counts), key=lambda a: counts[a])
    return leader, counts[leader], total


def decision(subject: Subject, workflow: Workflow) -> tuple[str, str] | None:
    """What the workflow's rule says about the subject now: ("retire"|"review", reason) or None.

    Pure: reads the subject's counts and posteriors and changes nothing.
    """
    verdict = _rule_decision(subject, workflow)
    if verdict is None:
        return None
    action, reason, side = verdict
    if action != "retire" or not _waits_for_type(workflow):
        return action, reason
    # The reason column is short: the rule and side, then the type, instead of the rule's own reason.
    n = subject.vote_count
    head = f"{workflow.retirement_rule}: {side}, " if side else f"{workflow.retirement_rule}: "
    key = subject_type(subject, workflow, side)
    if key:
        return "retire", f"{head}type {key} after {n} votes"
    if n >= workflow.max_votes:
        return "retire", f"{head}type undecided after {n} votes"
    return None


def _waits_for_type(workflow: Workflow) -> bool:
    from core.followups import type_keys

    return bool(workflow.type_retirement and type_keys(workflow.followups))


def subject_type(subject: Subject, workflow: Workflow, side: str = "") -> str:
    """The subject's decided type under the workflow's current type_confidence ("" if none), and only
    one of `side`'s types when the type belongs to a side: a type the volunteers gave after the other
    answer does not describe this decision."""
    from core.followups import type_keys
    from labeling.aggregation import decided_type, n_typed_votes, type_sides

    classes = type_keys(workflow.followups)
    posterior = {k: p for k, p in (subject.type_posterior or {}).items() if k in classes}
    key = decided_type(posterior, n_typed_votes(subject, classes), workflow.type_confidence)
    if key and side in (Subject.REAL, Subject.BOGUS) and type_sides(workflow).get(key, side) != side:
        return ""
    return key


def _rule_decision(subject: Subject, workflow: Workflow) -> tuple[str, str, str] | None:
    """(action, reason, side decided: "real", "bogus", an answer key, or "") by the rule alone."""
    n = subject.vote_count
    rule = workflow.retirement_rule
    if rule == Workflow.RULE_COUNT:
        if n >= workflow.retirement_limit:
            leading = _consensus(subject, workflow)
            return "retire", f"count: {n} votes", leading[0] if leading else ""
        return None

    if n >= workflow.min_votes:
        if rule == Workflow.RULE_SWAP and subject.p_real is not None:
            if subject.p_real >= workflow.swap_p_high:
                return "retire", f"swap: real, P(real)={subject.p_real:.4f} after {n} votes", Subject.REAL
            if subject.p_real <= workflow.swap_p_low:
                return "retire", f"swap: bogus, P(real)={subject.p_real:.4f} after {n} votes", Subject.BOGUS
        elif rule == Workflow.RULE_CONSENSUS:
            leading = _consensus(subject, workflow)
            if leading and leading[1] / leading[2] >= workflow.consensus_fraction:
                answer, votes, total = leading
                return "retire", f"consensus: {answer} {votes}/{total}", answer
    if n >= workflow.max_votes:
        return "review", f"undecided after {n} votes: expert review", ""
    return None


def retire_if_decided(subject: Subject, workflow: Workflow) -> bool:
    """Retire the (locked) subject if the workflow's rule says it is decided. True if it did now.

    A subject sent to the expert review queue counts as retired now too (it leaves the pool).
    """
    if subject.is_retired or subject.gold_label:
        return False
    verdict = decision(subject, workflow)
    if verdict is None:
        return False
    action, reason = verdict
    if action == "review":
        _send_to_review(subject, reason)
    else:
        retire(subject, reason)
    return True


def manual_retire(subject: Subject, user) -> bool:
    """An owner retires a subject by hand; False if it was retired already."""
    with transaction.atomic():
        locked = Subject.objects.select_for_update().get(pk=subject.pk)
        if locked.is_retired:
            return False
        retire(locked, f"manual: retired by {getattr(user, 'username', '') or 'owner'}")
    subject.refresh_from_db()
    return True


def manual_unretire(subject: Subject, user) -> bool:
    """An owner puts a subject back into the pool (and out of the review queue)."""
    with transaction.atomic():
        locked = Subject.objects.select_for_update().get(pk=subject.pk)
        if not locked.is_retired and not locked.needs_review:
            return False
        locked.status = Subject.ACTIVE
        locked.retired_reason = ""
        locked.retired_at = None
        locked.needs_review = False
        locked.save(update_fields=["status", "retired_reason", "retired_at", "needs_review"])
    subject.refresh_from_db()
    return True


def reevaluate_workflow(workflow_id: int) -> dict:
    """Apply the workflow's current rule to all its active subjects (after a rule change).

    Each subject is locked and decided in its own short transaction, so volunteers keep voting
    meanwhile; running it twice changes nothing the second time.
    """
    workflow = Workflow.objects.get(pk=workflow_id)
    retired = reviewed = examined = 0
    last_pk = 0
    while True:
        ids = list(
            Subject.objects.filter(workflow=workflow, status=Subject.ACTIVE, gold_label="", pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", flat=True)[:REEVALUATE_CHUNK]
        )
        if not ids:
            break
        last_pk = ids[-1]
        for pk in ids:
            with transaction.atomic():
                subject = Subject.objects.select_for_update().filter(pk=pk).first()
                if subject is None:
                    continue
                examined += 1
                if retire_if_decided(subject, workflow):
                    if subject.needs_review:
                        reviewed += 1
                    else:
                        retired += 1
    return {"examined": examined, "retired": retired, "sent_to_review": reviewed}
