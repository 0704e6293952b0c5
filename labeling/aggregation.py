"""Aggregation service on the request path: what one new vote changes in what we believe.

Every real/bogus vote moves the subject's P(real) by one SWAP Bayes step (Marshall et al.
2016) with the volunteer's current skill (P_L, P_D), and a vote on a gold subject updates the
volunteer's gold tallies and skill. Nothing is recomputed from scratch here: that is the
background Dawid–Skene recompute (labeling.recompute), whose result replaces this state.

Played vote by vote from an empty state, these updates give exactly
`mlcore.aggregation.swap(..., online=True)`: a gold vote is weighed with the skill the
volunteer had before it, and only then teaches us about the volunteer.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.models import Subject, Workflow
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

    p = subject.p_real if subject.p_real is not None else workflow.swap_prior
    p = min(max(float(p), P_FLOOR), 1.0 - P_FLOOR)
    subject.p_real = swap_update(p, said == REAL, skill.p_l, skill.p_d)
    subject.aggregation_method = METHOD_INCREMENTAL

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
