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
    them; started together, returned once every one of them is ready."""
    workers = {}
    for queue, env in queues.items():
        command = [
            sys.executable, "-m", "celery", "-A", "skyvote", "worker", "-Q", queue, "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"{queue}-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO",
        ]  # fmt: skip
        workers[queue] = _spawn(loop_env, command, f"worker-{queue}", env)
    for queue, worker in workers.items():
        wait_for(
            lambda w=worker: _ready(w, " ready."),
            timeout,
            loop_env,
            f"the {queue} worker to start",
            interval=0.3,
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

    Its request threads normally share the test's in-memory SQLite connection (pytest-django passes it
    to them as an override). loop_env has swapped this thread's connection for a database file; for
    this test the request threads open their own connections to that file instead. PostgreSQL (and a
    SQLite test database file) need nothing: every thread already opens the same database.
    """
    override = live_server.thread.connections_override
    shared = connections["default"]
    if override.get("default") is None or override["default"] is shared:
        yield live_server
        return
    saved_override, saved_settings = override["default"], connections.settings["default"]
    del override["default"]
    connections.settings["default"] = shared.settings_dict
    try:
        yield live_server
    finally:
        connections.settings["default"] = saved_settings
        override["default"] = saved_override
