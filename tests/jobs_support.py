"""Real processes for the job-system tests: Celery workers on one queue each, a gunicorn web server, and
pytest-django's live server pointed at the database the workers share.

Builds on tests/test_celery_integration.py's `loop_env` (a database file, media and broker folders
shared with the processes this starts; the filesystem broker, or Redis when CELERY_BROKER_URL is set).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connections

REPO = Path(__file__).resolve().parent.parent


def _logs(loop_env) -> str:
    return "\n".join(
        f"--- {p.log_path.name} ---\n{p.log_path.read_text(errors='replace')[-2500:]}"
        for p in loop_env["workers"]
    )


def wait_for(predicate, timeout: float, loop_env, what: str, interval: float = 0.2):
    """predicate()'s first truthy value; fails with the processes' logs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{_logs(loop_env)}")


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process and its children (its own process group: started with start_new_session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _spawn(loop_env, command: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
    log_path = loop_env["tmp"] / f"{name}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO, env={**loop_env["env"], **(env or {})}, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    process.log_path = log_path
    # loop_env SIGKILLs everything in this list when the test ends, passed or not.
    loop_env["workers"].append(process)
    return process


def start_workers(loop_env, queues: dict[str, dict], timeout: float = 120) -> dict[str, subprocess.Popen]:
    """One `celery worker -Q <queue> -c 1` per entry {queue: extra environment}, as the Procfile runs
    them, each returned ready.

    One after the other: on a fresh filesystem broker, two workers declaring their queues at the same
    moment race on kombu's exchange files (one creates the file empty, the other reads it and dies
    with a JSONDecodeError)."""
    workers = {}
    for queue, env in queues.items():
        command = [
            sys.executable, "-m", "celery", "-A", "skyvote", "worker", "-Q", queue, "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"{queue}-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO",
        ]  # fmt: skip
        worker = workers[queue] = _spawn(loop_env, command, f"worker-{queue}", env)
        wait_for(
            lambda w=worker: _ready(w, " ready."), timeout, loop_env, f"the {queue} worker", interval=0.3
        )
    return workers


def _ready(process: subprocess.Popen, marker: str) -> bool:
    text = process.log_path.read_text(errors="replace")
    if process.poll() is not None:
        pytest.fail(f"{process.log_path.name}: exited with {process.returncode}:\n{text[-3000:]}")
    return marker in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(loop_env, port: int, timeout: float = 60) -> subprocess.Popen:
    """The web process of the Procfile (one worker here), on the shared database, media and broker."""
    command = [
        sys.executable, "-m", "gunicorn", "skyvote.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
        "--threads", "2", "--timeout", "60", "--log-level", "info",
    ]  # fmt: skip
    process = _spawn(loop_env, command, "gunicorn")

    def answering():
        _ready(process, "")  # fails at once if gunicorn died
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(answering, timeout, loop_env, "gunicorn to accept connections", interval=0.2)
    return process


@pytest.fixture
def live_server_on_shared_db(live_server, loop_env):
    """pytest-django's live server, answering from the database the worker processes use.

    On the in-memory SQLite test database, loop_env has swapped this thread's connection for a
    database file; the live server's request threads would use the in-memory database (pytest-django
    hands them its connection, or they open it by name). For this test they open the file instead.
    PostgreSQL (or a SQLite test database file) needs nothing: every thread opens the same database.
    Take `live_server` before `loop_env` (an autouse fixture in the test module does), so that a live
    server started by this test is set up like the one every other test gets.
    """
    shared = connections["default"]
    saved_settings = connections.settings["default"]
    if shared.settings_dict["NAME"] == saved_settings["NAME"]:
        yield live_server
        return
    override = live_server.thread.connections_override
    saved_override = override.pop("default", None)
    connections.settings["default"] = shared.settings_dict
    try:
        yield live_server
    finally:
        connections.settings["default"] = saved_settings
        if saved_override is not None:
            override["default"] = saved_override
