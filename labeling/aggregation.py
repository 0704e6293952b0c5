"""Aggregation service on the request path: what one new vote changes in what we believe.

Every real/bogus vote moves the subject's P(real) by one SWAP Bayes step (Marshall et al.
2016) with the volunteer's current skill (P_L, P_D), and a vote on a gold subject updates the
volunteer's gold tallies and skill. Nothing is recomputed from scratch here: that is the
background Dawid–Skene recompute (labeling.recompute), whose result replaces this state.
With Workflow.model_votes the active model votes too, as the first step of a subject's first
counted vote (labeling.model_voter).

Played vote by vote from an empty state, these updates give exactly
`mlcore.aggregation.swap(..., online=True)`: a gold vote is weighed with the skill the
volunteer had before it, and only then teaches us about the volunteer.
"""

import math

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.models import Subject, Workflow
from labeling.model_voter import first_vote_start
from labeling.models import ParticipantSkill, Vote
from mlcore.aggregation import BOGUS, REAL, swap_skill_update, swap_tally_update, swap_update

METHOD_INCREMENTAL = "swap"
# Space Warps starts volunteers at P_L = P_D = 0.5, so their votes carry no information until
# they have seen gold. Most volunteers are far better than chance (sensitivities 0.77–0.99 on
# real panels), and without gold a whole workflow would sit at the prior until the hourly
# Dawid–Skene recompute. We start at 0.7 (pseudo-counts 1.4 right, 0.6 wrong: the same 70 %
# as Dawid–Skene's confusion prior); gold answers move it from there.
NEW_VOLUNTEER_PSEUDO_COUNTS = (1.4, 0.6)
# A posterior of exactly 0 or 1 (e.g. a unanimous majority recompute) could never move again.
P_FLOOR = 1e-12
CLASS_OF_ANSWER = {Subject.REAL: REAL, Subject.BOGUS: BOGUS}


def locked_skill(workflow: Workflow, participant_id: int) -> ParticipantSkill:
    """The volunteer's skill row in this workflow, created if needed and locked for update.

    Two first votes of one volunteer at once both try to create it: one wins, the other
    reads the winner's row (the unique constraint decides, not a Python check).
    """
    try:
        with transaction.atomic():
            ParticipantSkill.objects.get_or_create(workflow=workflow, participant_id=participant_id)
    except IntegrityError:
        pass
    return ParticipantSkill.objects.select_for_update().get(workflow=workflow, participant_id=participant_id)


def weighing_skill(workflow: Workflow, participant_id: int, answer: str) -> ParticipantSkill | None:
    """The locked skill row a new vote with this answer will be weighed with, or None when the answer
    moves nothing ("not sure", a skip). Taken before the vote is stored, so that the vote row is
    written once with the (P_L, P_D) that undoing it needs (labeling.services.undo_vote)."""
    # The workflow says which answers count as real or bogus; "not sure" and the like move nothing.
    if workflow.kind != Workflow.REAL_BOGUS or CLASS_OF_ANSWER.get(workflow.answer_class(answer)) is None:
        return None
    return locked_skill(workflow, participant_id)


def update_on_vote(
    vote: Vote, subject: Subject, workflow: Workflow, skill: ParticipantSkill | None = None
) -> tuple[float, float] | None:
    """Incremental update for one new, non-skip vote; the caller holds the subject's row lock
    and saves the subject's p_real and aggregation_method. `skill`: the row from `weighing_skill`,
    when the caller locked it already. Returns the (P_L, P_D) the vote was weighed with (None if it
    moved nothing)."""
    said = CLASS_OF_ANSWER.get(workflow.answer_class(vote.answer))
    if workflow.kind != Workflow.REAL_BOGUS or said is None:
        return None
    skill = skill or locked_skill(workflow, vote.participant_id)
    weighed = (float(skill.p_l), float(skill.p_d))

    if subject.p_real is not None:
        p = subject.p_real
    else:  # the first counted vote: the model votes first, when the workflow lets it (labeling.model_voter)
        p = first_vote_start(subject, workflow, workflow.swap_prior)
    p = min(max(float(p), P_FLOOR), 1.0 - P_FLOOR)
    subject.p_real = swap_update(p, said == REAL, skill.p_l, skill.p_d)
    subject.aggregation_method = METHOD_INCREMENTAL + ("+model" if subject.decided_with_model else "")

    skill.n_votes += 1
    fields = ["n_votes", "updated_at"]
    # Only a vote on a subject served as gold measures the volunteer (Vote.was_gold, from the ticket):
    # a label that arrived after serving is for the full recompute, which weighs every vote alike.
    truth = CLASS_OF_ANSWER.get(subject.gold_label) if vote.was_gold else None
    if truth is not None:
        tallies = (skill.real_seen, skill.real_said_real, skill.bogus_seen, skill.bogus_said_bogus)
        skill.p_l, skill.p_d = swap_skill_update(
            *tallies, truth=truth, said=said, pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS
        )
        (skill.real_seen, skill.real_said_real, skill.bogus_seen, skill.bogus_said_bogus) = swap_tally_update(
            *tallies, truth=truth, said=said
        )
        skill.n_gold += 1
        skill.n_gold_correct += int(truth == said)
        fields += ["p_l", "p_d", "real_seen", "real_said_real", "bogus_seen", "bogus_said_bogus"]
        fields += ["n_gold", "n_gold_correct"]
    skill.updated_at = timezone.now()
    skill.save(update_fields=fields)
    return weighed


# --- Types (core.followups): what kind of real or bogus ---------------------------------------------
#
# The K classes are all the workflow's type keys (core.followups.type_keys), real and bogus ones
# together, in the builder's order: a type key names one type across the workflow, a volunteer who
# answered "real" and named a real type disagrees about the type with one who named a bogus type, and
# the Dawid–Skene recompute (labeling.recompute) works on the same K. "Not sure", "" (not asked or
# passed) and skips are no type at all and move nothing.
#
# On the vote path the posterior is Dawid–Skene's (labeling.recompute) with every volunteer at its
# prior: right about the type with probability TYPE_PRIOR_ACCURACY, a wrong answer spread evenly over
# the other K − 1 types, every type equally likely before the votes. Each typed vote then multiplies its
# type's odds by r = a(K − 1)/(1 − a) (21 with ten types), so the posterior depends on the counts only:
# p_k ∝ r^(n_k). As with P(real), where a new volunteer also counts at 0.7, the recompute replaces it
# with what the volunteers' own confusion says. A smoothed share of the votes was tried instead: with
# volunteers right 55–90 % of the time it left a third of the subjects undecided at 20 typed votes
# (bench/type_aggregation.py).
TYPE_PRIOR_ACCURACY = 0.7
# A type is never decided on one volunteer's word, whatever the posterior.
TYPE_MIN_VOTES = 2
# Posteriors come back from JSON: a value meant to equal the threshold must not miss it by rounding.
_TYPE_EPS = 1e-9


def type_posterior(
    counts: dict, classes: list[str], accuracy: float = TYPE_PRIOR_ACCURACY
) -> dict[str, float]:
    """The incremental type posterior {type key: p} from typed vote counts; {} without typed votes."""
    n = [max(0, int(counts.get(k, 0))) for k in classes]
    if not classes or sum(n) <= 0:
        return {}
    if len(classes) == 1:
        return {classes[0]: 1.0}
    log_r = math.log(accuracy * (len(classes) - 1) / (1.0 - accuracy))
    top = max(n)
    # In log space relative to the leader: hundreds of votes must not overflow.
    weights = [math.exp((c - top) * log_r) for c in n]
    total = sum(weights)
    return {k: w / total for k, w in zip(classes, weights, strict=True)}


def decided_type(posterior: dict, n_typed: int, confidence: float) -> str:
    """The type key whose posterior reaches `confidence` after at least TYPE_MIN_VOTES typed votes,
    else "" (also when two types tie at the top)."""
    if n_typed < TYPE_MIN_VOTES or not posterior:
        return ""
    ranked = sorted(posterior.items(), key=lambda kv: -float(kv[1]))
    key, top = ranked[0]
    if len(ranked) > 1 and float(ranked[1][1]) >= float(top) - _TYPE_EPS:
        return ""
    return key if float(top) >= float(confidence) - _TYPE_EPS else ""


def n_typed_votes(subject: Subject, classes: list[str]) -> int:
    counts = subject.type_counts or {}
    return sum(int(counts.get(k, 0)) for k in classes)


def _count_type(vote: Vote, subject: Subject, workflow: Workflow, step: int) -> bool:
    from core.followups import type_keys

    classes = type_keys(workflow.followups)
    if vote.answer == Vote.SKIP or not vote.followup or vote.followup not in classes:
        return False
    counts = dict(subject.type_counts or {})
    left = int(counts.get(vote.followup, 0)) + step
    if left > 0:
        counts[vote.followup] = left
    else:
        counts.pop(vote.followup, None)
    subject.type_counts = counts
    subject.type_posterior = type_posterior(counts, classes)
    subject.decided_type = decided_type(
        subject.type_posterior, n_typed_votes(subject, classes), workflow.type_confidence
    )
    return True


def update_type_on_vote(vote: Vote, subject: Subject, workflow: Workflow) -> bool:
    """Count a new vote's type (Vote.followup) on the locked subject and refresh its type posterior and
    decided type; the caller saves type_counts, type_posterior and decided_type. False (nothing changed)
    for a vote that names no type of the workflow. A posterior from the last recompute gives way to the
    counts' one: the recompute's can only be redone from all votes, by the next recompute."""
    return _count_type(vote, subject, workflow, +1)


def reverse_type_on_vote(vote: Vote, subject: Subject, workflow: Workflow) -> bool:
    """Take an undone vote's type out of the locked subject: the inverse of update_type_on_vote."""
    return _count_type(vote, subject, workflow, -1)


def type_sides(workflow: Workflow) -> dict[str, str]:
    """{type key: "real" | "bogus"}: the side of the answer each type's question follows (absent when
    that answer counts as neither)."""
    sides = {}
    for f in workflow.followups or []:
        side = workflow.answer_class(f.get("answer", ""))
        for t in f.get("types", []):
            if side:
                sides[t["key"]] = side
    return sides
