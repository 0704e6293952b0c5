from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from core.models import Participant


@receiver(user_logged_in)
def merge_anonymous_participant(sender, request, user, **kwargs):
    """Votes cast before signing up or logging in follow the person into the account."""
    from labeling.participants import merge_anonymous_into_user

    if request is None or not hasattr(request, "session"):
        return
    pid = request.session.get("participant_id")
    # login() cycles the session key but keeps the data, so the id is still here.
    if not pid:
        return
    anonymous = Participant.objects.filter(
        pk=pid, kind=Participant.ANONYMOUS, merged_into__isnull=True
    ).first()
    if anonymous:
        merge_anonymous_into_user(anonymous, user)
    request.session.pop("participant_id", None)
