"""An anonymous volunteer's votes follow them into their account when they sign up or log in."""

from django.db import transaction

from core.models import Participant
from labeling.models import ParticipantSkill, Vote


@transaction.atomic
def merge_anonymous_into_user(anonymous: Participant, user) -> Participant:
    """Move an anonymous participant's votes to the user's participant.

    A vote on a subject the account already answered is kept on the anonymous participant
    (nothing is deleted); everything else moves, so the volunteer's history follows them.
    """
    target, _ = Participant.objects.get_or_create(user=user, defaults={"kind": Participant.USER})
    if anonymous.pk == target.pk:
        return target
    # One standing vote per subject (retracted ones stay as records and may move alongside it).
    already = set(
        Vote.objects.filter(participant=target, retracted=False).values_list("workflow_id", "subject_id")
    )
    movable = [
        v.pk
        for v in Vote.objects.filter(participant=anonymous).only(
            "pk", "workflow_id", "subject_id", "retracted"
        )
        if v.retracted or (v.workflow_id, v.subject_id) not in already
    ]
    Vote.objects.filter(pk__in=movable).update(participant=target)
    # Skill tallies are rebuilt from votes by the next full aggregation; drop the stale row
    # of the anonymous participant where the account has one of its own.
    for skill in ParticipantSkill.objects.filter(participant=anonymous):
        if not ParticipantSkill.objects.filter(workflow=skill.workflow, participant=target).exists():
            skill.participant = target
            skill.save(update_fields=["participant"])
    anonymous.merged_into = target
    anonymous.save(update_fields=["merged_into"])
    return target
