"""Accounts security: login lockout (django-axes), password rules at signup, the Content-Security-Policy
(django-csp) that every page works under, and API tokens with an expiry and a read-only scope."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import URLPattern, reverse
from django.utils import timezone

from core.authentication import create_token
from core.models import ApiToken
from jobs.models import Job
from labeling.models import Vote

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/accounts/login/"


# ---------------------------------------------------------------------------------------------
# Login lockout


def _login(client, username, password, address="198.51.100.7"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def _logged_in_as(client):
    return client.session.get("_auth_user_id")


def test_repeated_wrong_passwords_lock_out_that_username_from_that_address(client, django_user_model):
    alice = django_user_model.objects.create_user("alice", password="alice-pass-123")
    bob = django_user_model.objects.create_user("bob", password="bob-pass-123")
    _token, key = create_token(alice, "script")
    limit = settings.AXES_FAILURE_LIMIT
    assert 3 <= limit <= 20 and settings.AXES_COOLOFF_TIME == timedelta(minutes=15)

    for _ in range(limit - 1):
        response = _login(client, "alice", "wrong")
        assert response.status_code == 200 and "Please enter a correct username" in response.content.decode()
    locked = _login(client, "alice", "wrong")
    assert locked.status_code == 429
    html = locked.content.decode()
    assert "Too many failed log-in attempts" in html and "15 minutes" in html
    assert 'class="card narrow"' in html  # the site's own page, as the login page

    # During the cool-off even the right password is refused, with the same message.
    refused = _login(client, "alice", "alice-pass-123")
    assert refused.status_code == 429 and "Too many failed log-in attempts" in refused.content.decode()
    assert _logged_in_as(client) is None

    # Another user from the same address, and the same user from elsewhere, are not locked out.
    assert _login(client, "bob", "bob-pass-123").status_code == 302
    assert _logged_in_as(client) == str(bob.pk)
    client.logout()
    assert _login(client, "alice", "alice-pass-123", address="203.0.113.9").status_code == 302
    client.logout()

    # API tokens do not go through the login form: the locked-out user's scripts keep working.
    api = client.get(reverse("api_projects"), headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 200

    # After the cool-off the right password works again (attempts live in the database, so every
    # web process sees the same lockout).
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.filter(username="alice").exists()
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _login(client, "alice", "alice-pass-123").status_code == 302
    assert _logged_in_as(client) == str(alice.pk)


def test_lockout_uses_the_database_and_the_username_and_address_together():
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


def test_client_address_behind_trusted_proxies(rf, settings):
    from core.lockout import client_ip

    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.5")
    settings.SKYVOTE_TRUSTED_PROXIES = 0
    assert client_ip(request) == "10.0.0.1"  # a forwarded header nobody vouches for is ignored
    settings.SKYVOTE_TRUSTED_PROXIES = 1
    assert client_ip(request) == "192.0.2.5"  # what our one proxy saw, not what the client claims


# ---------------------------------------------------------------------------------------------
# Passwords


def test_signup_refuses_an_all_digit_password_with_the_message(client, django_user_model):
    validators = {v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS}
    assert validators >= {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }
    response = client.post(
        reverse("core:signup"),
        {"username": "carol", "password1": "12345678901", "password2": "12345678901"},
    )
    assert response.status_code == 200
    assert "This password is entirely numeric." in response.content.decode()
    assert not django_user_model.objects.filter(username="carol").exists()

    ok = client.post(
        reverse("core:signup"),
        {"username": "carol", "password1": "quasar-nebula-42", "password2": "quasar-nebula-42"},
    )
    assert ok.status_code == 302 and django_user_model.objects.filter(username="carol").exists()


# ---------------------------------------------------------------------------------------------
# Content-Security-Policy


def _policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.fixture
def site(client, owner, project, workflow, make_subjects):
    """One of every main page: the owner is logged in; a panel worker has started an assignment."""
    from django.test import Client

    from tests.similarity_support import similarity_workflow
    from tests.tasklinks_support import make_batch, start

    make_subjects(3)
    sim = similarity_workflow(project, n_subjects=20)
    batch = make_batch(workflow, owner, gold_share=0.0, tasks_per_assignment=2)
    worker = Client()
    task_url = start(worker, batch, "WORKER-1").headers["Location"]
    assert "/a/" in task_url, task_url
    client.force_login(owner)
    slug = project.slug
    pages = {
        "home": (client, reverse("core:home_page")),
        "classify": (client, reverse("labeling:classify", args=[slug, workflow.slug])),
        "similarity classify": (client, reverse("similarity:classify", args=[slug, sim.slug])),
        "field guide": (client, reverse("labeling:field_guide", args=[slug])),
        "dashboard": (client, reverse("labeling:project_dashboard", args=[slug])),
        "model page": (client, reverse("loop:models", args=[slug, workflow.slug])),
        "exports": (client, reverse("core:exports", args=[slug])),
        "api tokens": (client, reverse("core:api_tokens")),
        "panel task": (worker, task_url),
        "batch": (client, reverse("panels:batch", args=[slug, batch.pk])),
        "login": (Client(), LOGIN),
        "signup": (Client(), reverse("core:signup")),
    }
    return pages


STRICT = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


def test_every_main_page_sends_the_strict_policy(site):
    for name, (client, url) in site.items():
        response = client.get(url)
        assert response.status_code == 200, (name, url, response.status_code)
        policy = _policy(response)
        for directive, values in STRICT.items():
            assert policy.get(directive) == values, (name, directive, policy.get(directive))
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"], name
        assert "'unsafe-eval'" not in response.headers["Content-Security-Policy"], name


def test_api_docs_have_their_own_policy_without_inline_scripts(client):
    for name in ("api_docs", "api_redoc"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"], (name, policy["script-src"])
        assert policy["frame-ancestors"] == ["'none'"]
        html = response.content.decode()
        assert not [code for code in INLINE_SCRIPT.findall(html) if code.strip()], name
    # Swagger UI's start-up code comes from a URL of its own (script-src 'self').
    script = client.get(reverse("api_docs") + "?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


INLINE_SCRIPT = re.compile(
    r"<script(?![^>]*\bsrc=)(?![^>]*application/(?:ld\+)?json)[^>]*>(.*?)</script>", re.S
)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.S)
STYLE_ATTRIBUTE = re.compile(r"<[^>]*\sstyle\s*=", re.S)


def _templates():
    files = sorted((ROOT / "templates").rglob("*.html"))
    assert len(files) > 20
    return files


def test_no_template_has_inline_code_or_styles():
    found = []
    for path in _templates():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        found += [(name, "inline <script>") for code in INLINE_SCRIPT.findall(text) if code.strip()]
        found += [(name, "on...= handler") for _ in EVENT_HANDLER.findall(text)]
        found += [(name, "style= attribute") for _ in STYLE_ATTRIBUTE.findall(text)]
        found += [(name, "<style> element") for _ in re.findall(r"<style[\s>]", text)]
        found += [(name, "hx-on (needs eval)") for _ in re.findall(r"\shx-on", text)]
    assert found == []


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_classify_in_chromium_with_no_policy_violations(page, live_server, workflow, make_subjects):
    make_subjects(3)
    messages, violations = [], []
    page.on("console", lambda message: messages.append(message.text))
    page.on("pageerror", lambda error: messages.append(str(error)))
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', "
        "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    response = page.goto(f"{live_server.url}/p/{workflow.project.slug}/{workflow.slug}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.keyboard.press("Enter")  # closes the first-visit tutorial (static/skyvote/classify.js)
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    page.click("text=How to classify")  # the button's listener, no onclick attribute
    page.wait_for_selector("#tutorial[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    page.keyboard.press("r")
    # A function, not an expression: Playwright polls an expression with eval, which the policy blocks.
    page.wait_for_function("() => document.getElementById('counter').textContent.trim() === '1'")
    violations = page.evaluate("window.__csp")
    assert violations == []
    assert [m for m in messages if "Content Security Policy" in m] == []
    assert list(Vote.objects.values_list("answer", flat=True)) == ["real"]
    # htmx kept its hands off inline styles: no <style> it would have injected.
    assert page.evaluate("document.querySelectorAll('style').length") == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_api_docs_render_in_chromium(page, live_server):
    messages = []
    page.on("console", lambda message: messages.append(message.text))
    page.goto(f"{live_server.url}{reverse('api_docs')}")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Skyvote API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag")
    page.goto(f"{live_server.url}{reverse('api_redoc')}")
    page.wait_for_selector("text=Projects, subjects, votes", timeout=30000)
    # Redoc's own links to other hosts (web fonts, its logo) are blocked on purpose: nothing else is.
    blocked = [m for m in messages if "Content Security Policy" in m and not re.search(r"'https://[^']+'", m)]
    assert blocked == []


# ---------------------------------------------------------------------------------------------
# API tokens: expiry and scope


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_token_page_creates_a_read_only_token_that_expires(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("core:api_tokens"), {"name": "dashboard", "scope": "read", "expires_in_days": "30"}
    )
    assert response.status_code == 201
    token = ApiToken.objects.get(user=owner)
    assert token.scope == "read"
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    listing = client.get(reverse("core:api_tokens")).content.decode()
    assert "<td>read only</td>" in listing and token.expires_at.strftime("%Y-%m-%d") in listing

    never = client.post(
        reverse("core:api_tokens"), {"name": "notebook", "scope": "write", "expires_in_days": ""}
    )
    assert never.status_code == 201
    token = ApiToken.objects.get(name="notebook")
    assert token.scope == "write" and token.expires_at is None

    bad = client.post(reverse("core:api_tokens"), {"name": "x", "scope": "admin", "expires_in_days": "-3"})
    assert bad.status_code == 400 and ApiToken.objects.count() == 2


def test_old_tokens_can_write_and_never_expire(owner):
    token, _key = create_token(owner, "old")
    assert token.scope == ApiToken.WRITE and token.expires_at is None
    assert ApiToken._meta.get_field("scope").default == "write"


def test_expired_token_is_refused_with_a_clear_message(client, owner):
    token, key = create_token(owner, "short", expires_in_days=1)
    assert client.get(reverse("api_projects"), headers=_bearer(key)).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(reverse("api_projects"), headers=_bearer(key))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_read_token_reads_but_cannot_write(
    client, owner, project, workflow, make_subjects, django_capture_on_commit_callbacks
):
    (subject,) = make_subjects(1)
    _read, read_key = create_token(owner, "reader", scope="read")
    _write, write_key = create_token(owner, "writer", scope="write")
    slug = project.slug
    exports = reverse("api_exports", args=[slug])

    for url in (reverse("api_projects"), reverse("api_subjects", args=[slug]), exports):
        response = client.get(url, headers=_bearer(read_key))
        assert response.status_code == 200, url
        assert client.get(url, headers=_bearer(write_key)).status_code == 200, url

    refused = client.post(exports, {"export": "labels", "format": "csv"}, headers=_bearer(read_key))
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
    upload = client.post(
        reverse("api_uploads", args=[slug]), {"workflow": workflow.pk}, headers=_bearer(read_key)
    )
    assert upload.status_code == 403 and "read-only" in upload.json()["detail"]
    vote = {
        "workflow": workflow.pk,
        "subject": subject.pk,
        "answer": "real",
        "idempotency_key": str(uuid.uuid4()),
    }
    voted = client.post("/api/votes/", vote, content_type="application/json", headers=_bearer(read_key))
    assert voted.status_code == 403 and "read-only" in voted.json()["detail"]
    assert not Job.objects.filter(kind=Job.EXPORT).exists() and not Vote.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(exports, {"export": "labels", "format": "csv"}, headers=_bearer(write_key))
    assert started.status_code == 202, started.content
    # A write token votes (on a subject served to it, with the ticket that came with it).
    served = client.get(reverse("api_workflow_next", args=[slug, workflow.pk]), headers=_bearer(write_key))
    assert served.status_code == 200, served.content
    vote.update(subject=served.json()["subject"], ticket=served.json()["ticket"])
    voted = client.post("/api/votes/", vote, content_type="application/json", headers=_bearer(write_key))
    assert voted.status_code == 201 and Vote.objects.count() == 1, voted.content


def test_every_api_view_checks_the_token_scope():
    """A view that sets its own permission classes must keep the scope check (read-only GETs aside)."""
    from core.permissions import TokenScopeAllows
    from similarity.urls import urlpatterns as similarity_urls
    from skyvote import api_urls

    patterns = [*api_urls.urlpatterns, *[p for p in similarity_urls if str(p.pattern).startswith("api/")]]
    checked = 0
    for pattern in patterns:
        assert isinstance(pattern, URLPattern)
        view = pattern.callback.cls
        methods = {m.upper() for m in view.http_method_names if hasattr(view, m)} - {"OPTIONS", "HEAD"}
        if methods <= {"GET"}:
            continue
        assert TokenScopeAllows in view.permission_classes, pattern.name
        checked += 1
    assert checked >= 4  # votes, uploads, exports, similarity search


def test_scope_migration_keeps_old_tokens_writable(tmp_path):
    """core 0002 adds the columns to the existing table: a token made before it can still write."""
    db = tmp_path / "db.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(DATABASE_URL=f"sqlite:///{db}", SKYVOTE_VAR_DIR=str(tmp_path / "var"))

    def manage(*args):
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    manage("migrate", "core", "0001_initial", "-v", "0")
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, last_name, email,"
            " is_staff, is_active, date_joined) VALUES ('!', '2024-01-01', 0, 'old', '', '', '', 0, 1, '2024-01-01')"
        )
        conn.execute(
            "INSERT INTO labeling_apitoken (user_id, name, prefix, key_hash, created_at)"
            " VALUES (1, 'laptop', 'sv_abc', ?, '2024-01-01')",
            ("f" * 64,),
        )
    manage("migrate", "-v", "0")
    code = "from core.models import ApiToken; t = ApiToken.objects.get(); print(json.dumps([t.scope, t.expires_at]))"
    out = manage("shell", "-v", "0", "-c", "import json; " + code)
    assert json.loads(out.strip().splitlines()[-1]) == ["write", None]
