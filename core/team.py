"""A project's team: adding members by user name or e-mail, invitations by signed link, roles.

One service for the team page (core.views_projects) and the API (core.api_projects), so both apply
the same rules. An invitation link carries a signed token naming the Invitation row and its address;
it is good for INVITATION_MAX_AGE_S and once. Whoever opens it signed in (the address's owner, after
signing up) joins with the invited role: the link is the proof, as the e-mail went to that address.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from core.models import Invitation, Project, ProjectMembership
from core.permissions import MEMBERSHIP_ROLE_CHOICES

SALT = "skyvote.core.invitation"
INVITATION_MAX_AGE_S = 14 * 24 * 3600
ROLES = {role for role, _label in MEMBERSHIP_ROLE_CHOICES}


class TeamError(ValueError):
    """The team change cannot be made; the message says why."""


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise TeamError(f"'{role}' is not a role here: choose {', '.join(sorted(ROLES))}.")


def add_member(project: Project, who: str, role: str, *, invited_by, build_url=None):
    """Add `who` (a user name or an e-mail address) with `role`. Returns ("added", membership) for an
    existing account (its role is updated if it was already a member), ("invited", invitation) for an
    address without one, after sending the link. TeamError says what is wrong otherwise."""
    _check_role(role)
    who = (who or "").strip()
    if not who:
        raise TeamError("Enter a user name or an e-mail address.")
    users = get_user_model().objects
    user = users.filter(username__iexact=who).first()
    if user is None and "@" in who:
        user = users.filter(email__iexact=who).order_by("pk").first()
    if user is not None:
        if user.pk == project.owner_id:
            raise TeamError(f"{user.username} owns this project already.")
        membership, _ = ProjectMembership.objects.update_or_create(
            project=project, user=user, defaults={"role": role}
        )
        return "added", membership
    if "@" not in who:
        raise TeamError(
            f"There is no account named “{who}”. Enter their e-mail address to send an invitation."
        )
    try:
        validate_email(who)
    except ValidationError:
        raise TeamError(f"“{who}” is not an e-mail address.") from None
    with transaction.atomic():
        invitation = Invitation.objects.create(project=project, email=who, role=role, invited_by=invited_by)
    send_invitation(invitation, build_url)
    return "invited", invitation


def token_for(invitation: Invitation) -> str:
    return signing.dumps({"i": invitation.pk, "e": invitation.email.lower()}, salt=SALT)


def invitation_url(invitation: Invitation, build_url=None) -> str:
    path = reverse("core:invitation", args=[token_for(invitation)])
    return build_url(path) if build_url else settings.SKYVOTE_SITE_URL.rstrip("/") + path


def send_invitation(invitation: Invitation, build_url=None) -> None:
    """The e-mail with the link, through Django's e-mail backend (EMAIL_BACKEND; console by default)."""
    project = invitation.project
    inviter = invitation.invited_by.username if invitation.invited_by else "The project's owner"
    days = INVITATION_MAX_AGE_S // 86400
    send_mail(
        subject=f"Join “{project.name}” on Skyvote",
        message=(
            f"{inviter} invites you to join the Skyvote project “{project.name}” as {invitation.role}.\n\n"
            f"Open this link, sign up (or log in) and accept:\n{invitation_url(invitation, build_url)}\n\n"
            f"The link works once, for {days} days. If you did not expect this, ignore this e-mail."
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )


def invitation_from_token(token: str) -> Invitation:
    """The open invitation of a link; TeamError when it is broken, expired, revoked or used."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=INVITATION_MAX_AGE_S)
    except signing.SignatureExpired:
        raise TeamError("This invitation has expired: ask the project's owner for a new one.") from None
    except signing.BadSignature:
        raise TeamError("This invitation link is not valid: check that it was copied whole.") from None
    invitation = (
        Invitation.objects.select_related("project").filter(pk=payload.get("i")).first()
        if isinstance(payload, dict)
        else None
    )
    if invitation is None or invitation.email.lower() != payload.get("e"):
        raise TeamError("This invitation was withdrawn by the project's owner.")
    if invitation.accepted_at is not None:
        raise TeamError("This invitation has been used already.")
    return invitation


def accept(invitation: Invitation, user) -> ProjectMembership | None:
    """Join the project with the invited role (None for the owner, who needs no membership)."""
    with transaction.atomic():
        locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if locked.accepted_at is not None:
            raise TeamError("This invitation has been used already.")
        locked.accepted_at, locked.accepted_by = timezone.now(), user
        locked.save(update_fields=["accepted_at", "accepted_by"])
        if user.pk == locked.project.owner_id:
            return None
        membership, created = ProjectMembership.objects.get_or_create(
            project=locked.project, user=user, defaults={"role": locked.role}
        )
        if not created and membership.role != locked.role:
            membership.role = locked.role
            membership.save(update_fields=["role"])
        return membership


def set_role(membership: ProjectMembership, role: str) -> ProjectMembership:
    _check_role(role)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership
