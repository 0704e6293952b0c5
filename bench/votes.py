"""Vote submissions per second through gunicorn + PostgreSQL, against a trivial view as the ceiling.

    .venv/bin/python bench/votes.py [--duration 15] [--clients 32 64] [--workers 5]

Creates (or reuses) the database `skyvote_bench` on the PostgreSQL at 127.0.0.1:5432 (override with
BENCH_DATABASE_URL), fills it with a project of 20,000 subjects, starts gunicorn on a free port and
drives it with keep-alive HTTP clients (several processes × threads). Each vote is what a client
does: GET /api/projects/bench/workflows/<id>/next/ for a subject and its ticket, then a real
POST /api/votes/ with them through the one vote service (new idempotency key, anonymous session per
client); the latencies are of the POST, votes/s counts whole classifications (both requests).
Writes the "## Vote submission" section of docs/benchmarks.md. The load generator runs on the same
2 cores as the server, so absolute numbers are a floor; the ratio to /healthz is the figure to track.
"""

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/skyvote_bench")


def ensure_database():
    import psycopg

    name = DB_URL.rsplit("/", 1)[1]
    with psycopg.connect(DB_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname=%s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')


def prepare(n_subjects: int) -> tuple[int, list[int]]:
    os.environ["DATABASE_URL"] = DB_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skyvote.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from core.models import Project, Subject, Workflow

    call_command("migrate", verbosity=0)
    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    project, _ = Project.objects.get_or_create(slug="bench", defaults={"name": "Bench", "owner": owner})
    workflow, _ = Workflow.objects.get_or_create(
        project=project, slug="rb", defaults={"name": "RB", "retirement_limit": 1_000_000}
    )
    have = Subject.objects.filter(workflow=workflow).count()
    if have < n_subjects:
        Subject.objects.bulk_create(
            [
                Subject(project=project, workflow=workflow, external_id=f"b{i}", random_key=random.random())
                for i in range(have, n_subjects)
            ],
            batch_size=5000,
        )
    ids = list(Subject.objects.filter(workflow=workflow).values_list("pk", flat=True))
    return workflow.pk, ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_json(conn, method, path, body, cookie):
    """One request on a keep-alive connection: (status, parsed JSON or None, session cookie)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if cookie:
        headers["Cookie"] = cookie
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    set_cookie = resp.getheader("Set-Cookie")
    if set_cookie and "sessionid=" in set_cookie:
        cookie = set_cookie.split(";", 1)[0]
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return resp.status, parsed, cookie


def client_process(port, path, workflow_id, subject_ids, n_threads, duration, out_q):
    latencies, errors = [], [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        cookie = ""
        local, rng = [], random.Random()
        while time.perf_counter() < stop_at:
            try:
                if path == "/healthz":
                    t0 = time.perf_counter()
                    status, _data, cookie = request_json(conn, "GET", path, None, cookie)
                else:
                    # A vote answers a served subject: ask for one (and its ticket) first.
                    status, served, cookie = request_json(
                        conn, "GET", f"/api/projects/bench/workflows/{workflow_id}/next/", None, cookie
                    )
                    if status != 200 or not served or served["subject"] is None:
                        raise http.client.HTTPException(f"next: {status}")
                    body = json.dumps(
                        {
                            "workflow": workflow_id,
                            "subject": served["subject"],
                            "answer": rng.choice(["real", "bogus"]),
                            "idempotency_key": str(uuid.uuid4()),
                            "ticket": served["ticket"],
                        }
                    )
                    t0 = time.perf_counter()
                    status, _data, cookie = request_json(conn, "POST", path, body, cookie)
                ok = status in (200, 201)
            except (OSError, http.client.HTTPException):
                t0 = time.perf_counter()
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            dt = time.perf_counter() - t0
            if ok:
                local.append(dt)
            else:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out_q.put((latencies, errors[0]))


def measure(port, path, workflow_id, subject_ids, clients, duration):
    n_proc = min(4, clients)
    q = mp.Queue()
    per = [clients // n_proc + (1 if i < clients % n_proc else 0) for i in range(n_proc)]
    procs = [
        mp.Process(target=client_process, args=(port, path, workflow_id, subject_ids, k, duration, q))
        for k in per
    ]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    if not lat:
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": errors, "n": 0}
    return {
        "rps": len(lat) / duration,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "errors": errors,
        "n": len(lat),
    }


def write_section(text: str) -> None:
    replace_section("## Vote submission", text)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--workers", type=int, default=5, help="gunicorn worker processes")
    parser.add_argument("--subjects", type=int, default=20000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    ensure_database()
    workflow_id, subject_ids = prepare(args.subjects)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": DB_URL, "DB_CONN_MAX_AGE": "600", "LOG_LEVEL": "ERROR"}
    # The whole load comes from one address at hundreds of votes a second: lift the rate limits.
    env.update(SKYVOTE_RATE_PER_PARTICIPANT="100000000", SKYVOTE_RATE_PER_ADDRESS="100000000")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "skyvote.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.2)
        measure(port, "/healthz", workflow_id, subject_ids, 8, 2.0)  # warm-up
        rows = []
        for clients in args.clients:
            ceiling = measure(port, "/healthz", workflow_id, subject_ids, clients, args.duration)
            votes = measure(port, "/api/votes/", workflow_id, subject_ids, clients, args.duration)
            rows.append((clients, ceiling, votes))
            print(
                f"{clients} clients: healthz {ceiling['rps']:.0f}/s, votes {votes['rps']:.0f}/s "
                f"(p50 {votes['p50_ms']:.1f} ms, p99 {votes['p99_ms']:.1f} ms, errors {votes['errors']})"
            )
    finally:
        server.terminate()
        server.wait(10)

    lines = [
        "## Vote submission",
        "",
        f"`bench/votes.py --duration {args.duration:g} --workers {args.workers}`: gunicorn ({args.workers} sync workers) + "
        f"PostgreSQL on this {os.cpu_count()}-core machine ({platform.processor() or platform.machine()}), "
        f"load generator on the same cores, {time.strftime('%Y-%m-%d')}. Ceiling: the trivial `/healthz` view "
        "measured in the same run.",
        "",
        "| clients | /healthz req/s | votes/s | ratio votes/ceiling | vote p50 ms | vote p99 ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients, ceiling, votes in rows:
        ratio = votes["rps"] / ceiling["rps"] if ceiling["rps"] else float("nan")
        lines.append(
            f"| {clients} | {ceiling['rps']:.0f} | {votes['rps']:.0f} | {ratio:.2f} | {votes['p50_ms']:.1f} "
            f"| {votes['p99_ms']:.1f} | {votes['errors']} |"
        )
    lines += [
        "",
        "Target (later issue): ≥ 1,000 votes/s on one 2-core machine; Zooniverse's busiest peaks averaged about 830 "
        "classifications/s across its fleet.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
