"""Who is voting: registered users, anonymous browser sessions and panel workers."""

from django.db import IntegrityError, transaction

from .models import Participant, ParticipantSkill, Vote


def participant_for_request(request, create: bool = True) -> Participant | None:
    """The participant behind a request. Anonymous visitors get one tied to their session."""
    if request.user.is_authenticated:
        if not create:
            return Participant.objects.filter(user=request.user).first()
        try:
            with transaction.atomic():
                participant, _ = Participant.objects.get_or_create(
                    user=request.user, defaults={"kind": Participant.USER}
                )
        except IntegrityError:  # two first requests at once
            participant = Participant.objects.get(user=request.user)
        return participant

    pid = request.session.get("participant_id")
    if pid:
        participant = Participant.objects.filter(pk=pid, merged_into__isnull=True).first()
        if participant:
            return participant
    if not create:
        return None
    if not request.session.session_key:
        request.session.save()
    participant = Participant.objects.create(
        kind=Participant.ANONYMOUS, session_key=request.session.session_key
    )
    request.session["participant_id"] = participant.pk
    return participant


@transaction.atomic
def merge_anonymous_into_user(anonymous: Participant, user) -> Participant:
    """Move an anonymous participant's votes to the user's participant.

    A vote on a subject the account already answered is kept on the anonymous participant
    (nothing is deleted); everything else moves, so the volunteer's history follows them.
    """
    target, _ = Participant.objects.get_or_create(user=user, defaults={"kind": Participant.USER})
    if anonymous.pk == target.pk:
        return target
    already = set(Vote.objects.filter(participant=target).values_list("workflow_id", "subject_id"))
    movable = [
        v.pk
        for v in Vote.objects.filter(participant=anonymous).only("pk", "workflow_id", "subject_id")
        if (v.workflow_id, v.subject_id) not in already
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
