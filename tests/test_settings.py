"""Settings come from the environment; production-like variables pass `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(args, env_extra, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    env.update({"SKYVOTE_VAR_DIR": str(tmp_path / "var"), **env_extra})
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_with_production_env(tmp_path):
    result = run_manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {
            "SECRET_KEY": "x" * 20 + "production-like-secret-key-with-enough-entropy-0123456789",
            "SECURE": "1",
            "ALLOWED_HOSTS": "skyvote.example.org",
            "DEBUG": "0",
        },
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_key_is_generated_into_var_once(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_manage(["shell", "-v", "0", "-c", code], {}, tmp_path)
    second = run_manage(["shell", "-v", "0", "-c", code], {}, tmp_path)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "var" / "secret_key").read_text().strip()
    assert first.stdout.strip() == second.stdout.strip() == key and len(key) > 40


def test_sqlite_uses_wal_and_immediate_transactions(tmp_path):
    code = (
        "from django.db import connection; c = connection.cursor(); c.execute('PRAGMA journal_mode');"
        "print(c.fetchone()[0], connection.settings_dict['OPTIONS']['transaction_mode'])"
    )
    result = run_manage(["shell", "-v", "0", "-c", code], {}, tmp_path)
    assert result.stdout.split() == ["wal", "IMMEDIATE"], result.stderr


def test_production_keeps_a_strong_password_hasher():
    """The suite hashes passwords with MD5 for speed (tests/conftest.py); the product must not."""
    import skyvote.settings as production

    hashers = getattr(production, "PASSWORD_HASHERS", None)
    if hashers is None:  # Django's default list: PBKDF2 first
        from django.conf import global_settings

        hashers = global_settings.PASSWORD_HASHERS
    assert "MD5" not in hashers[0] and (
        "PBKDF2" in hashers[0] or "Argon2" in hashers[0] or "BCrypt" in hashers[0]
    )
