"""Personal API tokens: created on the account page and shown once, stored only as a SHA-256 hash,
accepted as `Token` or `Bearer`, rejected once revoked."""

import hashlib
import re

import pytest
from django.db import connection
from django.urls import reverse

from core.models import ApiToken

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(
    r'data-testid="new-api-key"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*data-testid="new-api-key"'
)


def _create_on_page(client, name="notebook") -> str:
    response = client.post(reverse("core:api_tokens"), {"name": name})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    match = KEY_RE.search(response.content.decode())
    assert match, "the new key is shown on the page"
    return match.group(1) or match.group(2)


def test_token_is_shown_once_and_stored_hashed(client, owner, project):
    client.force_login(owner)
    key = _create_on_page(client)
    token = ApiToken.objects.get(user=owner)
    assert token.name == "notebook"
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(token.prefix) and len(token.prefix) < len(key) // 3

    # Nowhere in the database is the key itself.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM labeling_apitoken")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert key not in stored

    # The list page shows the prefix, never the key again.
    listing = client.get(reverse("core:api_tokens")).content.decode()
    assert token.prefix in listing and key not in listing

    # The key works for the API, with either scheme.
    for scheme in ("Bearer", "Token"):
        response = client.get(reverse("api_projects"), headers={"Authorization": f"{scheme} {key}"})
        assert response.status_code == 200
        assert [p["slug"] for p in response.json()["results"]] == [project.slug]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_revoked_token_is_rejected(client, owner, project):
    client.force_login(owner)
    key = _create_on_page(client)
    token = ApiToken.objects.get(user=owner)
    client.logout()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(reverse("api_projects"), headers=headers).status_code == 200

    client.force_login(owner)
    response = client.post(reverse("core:api_token_revoke", args=[token.pk]), follow=True)
    assert response.status_code == 200 and "revoked" in response.content.decode()
    client.logout()
    token.refresh_from_db()
    assert token.revoked_at is not None
    rejected = client.get(reverse("api_projects"), headers=headers)
    assert rejected.status_code == 401
    assert "revoked" in rejected.json()["detail"]


def test_users_cannot_revoke_each_others_tokens(client, owner, django_user_model):
    client.force_login(owner)
    _create_on_page(client)
    token = ApiToken.objects.get(user=owner)
    other = django_user_model.objects.create_user("mallory", password="pw-123456789")
    client.force_login(other)
    assert client.post(reverse("core:api_token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert token.prefix not in client.get(reverse("core:api_tokens")).content.decode()


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Token sv_not-a-real-key", "Bearer \u00e9t\u00e9"],
)
def test_bad_authorization_headers_get_401_with_a_reason(client, header):
    response = client.get(reverse("api_projects"), HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["detail"]


def test_inactive_users_tokens_stop_working(client, owner, project):
    from core.authentication import create_token

    _token, key = create_token(owner, "script")
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    response = client.get(reverse("api_projects"), headers={"Authorization": f"Token {key}"})
    assert response.status_code == 401


def test_token_page_needs_login(client):
    response = client.get(reverse("core:api_tokens"))
    assert response.status_code == 302 and "login" in response.headers["Location"]
