"""Who is voting: registered users, anonymous browser sessions and panel workers."""

from django.db import IntegrityError, transaction

from core.models import Participant


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
