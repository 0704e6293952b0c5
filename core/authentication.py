"""Per-user API tokens: generated with `secrets`, shown once, stored as a SHA-256 hash.

A key looks like `sv_<43 url-safe characters>`. The database keeps its SHA-256 and its first
characters (`prefix`) so a user can tell tokens apart in the list; the key itself is never
stored, so a leaked database does not leak working keys. Revoking sets `revoked_at`: the row
stays for the audit trail and the key stops working at once. A token may expire (`expires_at`:
refused with 401 from then on) and may be read-only (`scope`, on `request.auth`; the check is
core.permissions.TokenScopeAllows).

Clients send `Authorization: Token <key>` or `Authorization: Bearer <key>`.
"""

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from core.models import ApiToken

KEY_PREFIX = "sv_"
SCHEMES = (b"token", b"bearer")
PREFIX_LENGTH = 10
# Writing last_used_at on every request would turn every API read into a write;
# once a minute is enough to tell a user which tokens are still in use.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_token(
    user, name: str, scope: str = ApiToken.WRITE, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user`, read-only or not, expiring after `expires_in_days` (None: never).
    Returns (token, key): the key is shown to the user once, then lost."""
    if scope not in dict(ApiToken.SCOPES):
        raise ValueError(f"Unknown token scope {scope!r}.")
    name = (name or "").strip()[:100] or "API token"
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
        scope=scope,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    return token, key


def revoke_token(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def user_for_key(key: str):
    """(user, token) for a live token of an active user, or (None, None). An expired token raises
    AuthenticationFailed: its owner should hear why it stopped working."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_key(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None, None
    now = timezone.now()
    if token.is_expired(now):
        raise exceptions.AuthenticationFailed(
            f"This API token expired on {token.expires_at:%Y-%m-%d %H:%M} UTC: "
            "create a new one on the API tokens page."
        )
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


class ApiTokenAuthentication(BaseAuthentication):
    """DRF authentication for `Authorization: Token <key>` and `Authorization: Bearer <key>`."""

    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in SCHEMES:
            return None  # not ours: let session authentication try
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Token <key>' or 'Bearer <key>'."
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API token contains characters that are not ASCII.")
        user, token = user_for_key(key)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return user, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 to unauthenticated calls.
        return self.keyword


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how the token is sent, so the schema and Swagger UI know it."""

    target_class = "core.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from Account → API tokens, sent as "
            "`Authorization: Bearer <key>` (or `Authorization: Token <key>`).",
        }
