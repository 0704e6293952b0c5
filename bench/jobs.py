"""Export latency while a training round runs: one worker per queue (the Procfile) vs. one worker for both.

    .venv/bin/python bench/jobs.py [--round-s 45] [--votes 20000] [--no-write]

A throwaway database (SQLite file under a temporary SKYVOTE_VAR_DIR, the embedded filesystem broker)
holds a real/bogus workflow with labelled subjects and `--votes` votes. For each worker layout:
  1. start the workers (real `celery worker` processes, concurrency 1, as `make demo` runs them);
  2. queue a training round that is made to run for `--round-s` seconds (time budget, no early stop);
  3. once its job is running, queue a votes CSV export and time it from queueing to its file being
     stored (the job's finished_at), and note whether the round was still running then.
Layouts: "short + gpu" (one worker per queue: the product) and, as the baseline of the same run,
"one worker, both queues" (the export waits behind the round, as every job did before the queues
were split by the length of the work). Writes the "## Export during a round" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Export during a round"


def _environment(var: Path) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "skyvote.settings",
        "SKYVOTE_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(var / "media"),
        "SKYVOTE_PRIVATE_ROOT": str(var / "private"),
        "SKYVOTE_CACHE_DIR": str(var / "cache"),
        "SKYVOTE_MIN_TRAIN_LABELS": "10",
        "SKYVOTE_MC_SAMPLES": "4",
        "CELERY_TASK_ALWAYS_EAGER": "",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


def _seed(n_subjects: int, n_labelled: int, n_votes: int):
    """Subjects (arrays only), crowd labels for a round to train on, and votes to export."""
    import numpy as np
    from django.contrib.auth import get_user_model

    from core.ingest import add_subject
    from core.models import Participant, Project, Subject, Workflow
    from labeling.models import Vote
    from mlcore.synth import generate_triplets

    owner = get_user_model().objects.create_user("bench-owner", password="bench-pass-123")
    project = Project.objects.create(slug="bench", name="Bench", owner=owner)
    workflow = Workflow.objects.create(project=project, slug="rb", name="Real or bogus?", train_every=0)
    batch = generate_triplets(n_subjects, seed=0)
    ids = []
    for i in range(n_subjects):
        subject, _ = add_subject(
            project=project, workflow=workflow, subject_set=None, external_id=f"bench-{i}",
            array=batch.images[i], metadata={}, source="synthetic", render=False,
        )  # fmt: skip
        ids.append(subject.pk)
    for pk, y in zip(ids[:n_labelled], batch.labels[:n_labelled], strict=True):
        Subject.objects.filter(pk=pk).update(
            status=Subject.RETIRED, vote_count=3, p_real=0.95 if y else 0.05, retired_reason="bench"
        )
    for pk, y in zip(
        ids[n_labelled : 2 * n_labelled], batch.labels[n_labelled : 2 * n_labelled], strict=True
    ):
        Subject.objects.filter(pk=pk).update(gold_label="real" if y else "bogus")
    rng = np.random.default_rng(0)
    per_participant = max(1, n_subjects // 2)
    participants = Participant.objects.bulk_create(
        [Participant(kind=Participant.ANONYMOUS) for _ in range(-(-n_votes // per_participant))]
    )
    votes = []
    for p_index, participant in enumerate(participants):
        chosen = rng.choice(
            ids, size=min(per_participant, n_votes - p_index * per_participant), replace=False
        )
        votes += [
            Vote(
                workflow=workflow,
                subject_id=int(s),
                participant=participant,
                answer=rng.choice(["real", "bogus"]),
            )
            for s in chosen
        ]
    Vote.objects.bulk_create(votes, batch_size=2000)
    return owner, project, workflow


def _start_worker(queues: str, env: dict, log_dir: Path) -> subprocess.Popen:
    log_path = log_dir / f"worker-{queues.replace(',', '-')}-{uuid.uuid4().hex[:4]}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "skyvote", "worker", "-Q", queues, "-c", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "-l", "INFO",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if " ready." in log_path.read_text(errors="replace"):
            return worker
        if worker.poll() is not None:
            raise SystemExit(f"worker exited: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.3)
    raise SystemExit(f"worker did not start: {log_path.read_text(errors='replace')[-2000:]}")


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def measure(layout: str, queues: list[str], owner, project, workflow, round_s: float, env: dict, logs: Path):
    from django.db import transaction

    from core.exporters import start_export
    from jobs.models import Job
    from loop.services import request_training

    workers = []
    try:
        for q in queues:  # one after the other: kombu's filesystem exchange files race on first use
            workers.append(_start_worker(q, env, logs))
        budget = {"time_budget_s": round_s, "epochs": 100_000, "patience": 100_000}
        with transaction.atomic():
            round_job, _ = request_training(workflow, reason="bench", train_config=budget)
        _wait(
            lambda: Job.objects.filter(pk=round_job.pk, status=Job.RUNNING, progress__gt=0.1).exists(),
            120,
            "the training round to be training",
        )
        with transaction.atomic():
            export = start_export(project=project, user=owner, role="owner", kind="votes", fmt="csv")
        done = _wait(
            lambda: Job.objects.filter(pk=export.pk, status__in=[Job.SUCCEEDED, Job.FAILED]).first(),
            round_s * 4 + 120,
            "the export",
        )
        round_state = Job.objects.get(pk=round_job.pk)
        round_running = round_state.status == Job.RUNNING or (
            round_state.finished_at is not None and round_state.finished_at > done.finished_at
        )
        result = {
            "layout": layout,
            "status": done.status,
            "latency_s": (done.finished_at - export.created_at).total_seconds(),
            "work_s": (done.finished_at - done.started_at).total_seconds() if done.started_at else None,
            "round_running": round_running,
            "rows": (done.params.get("result") or {}).get("rows"),
        }
        _wait(
            lambda: Job.objects.filter(pk=round_job.pk, status__in=[Job.SUCCEEDED, Job.FAILED]).exists(),
            round_s * 4 + 300,
            "the training round to end",
        )
        return result
    finally:
        for worker in workers:
            _stop(worker)


def render(results: list[dict], round_s: float, n_votes: int) -> str:
    separate = next(r for r in results if r["layout"].startswith("short"))
    shared = next(r for r in results if not r["layout"].startswith("short"))
    ratio = shared["latency_s"] / separate["latency_s"] if separate["latency_s"] else float("nan")
    lines = [
        SECTION,
        "",
        f"`bench/jobs.py`: a votes CSV export ({n_votes:,} votes) started while a training round runs for "
        f"{round_s:.0f} s (time budget, no early stop), on the embedded filesystem broker with real "
        f"`celery worker` processes (concurrency 1). Latency = queueing the export → its file stored. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({_cpu()}).",
        "",
        "| workers | export latency | of which the export's own work | round still running when it finished |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['layout']} | {r['latency_s']:.1f} s | {r['work_s']:.1f} s | {'yes' if r['round_running'] else 'no'} |"
        )
    goal = "met" if separate["latency_s"] <= 10 and separate["round_running"] else "NOT met"
    lines += [
        "",
        f"One worker per queue answers {ratio:.1f}× faster than the baseline of the same run (one worker for "
        f"both queues, where the export waits for the round). Goal: the export finishes within about 10 s of "
        f"the click while a round runs: **{goal}** ({separate['latency_s']:.1f} s).",
    ]
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    from mlcore.simulation import cpu_name

    return cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-s", type=float, default=45.0)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--labelled", type=int, default=400)
    parser.add_argument("--votes", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="skyvote-bench-jobs-"))
    env = _environment(var)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    owner, project, workflow = _seed(args.subjects, args.labelled, args.votes)
    results = []
    for layout, queues in (
        ("short + gpu (one worker each)", ["short", "gpu"]),
        ("one worker, both queues", ["short,gpu"]),
    ):
        print(f"measuring: {layout}", flush=True)
        results.append(measure(layout, queues, owner, project, workflow, args.round_s, env, var))
        print(results[-1], flush=True)
    text = render(results, args.round_s, args.votes)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT / "bench"))
        from benchdoc import replace_section

        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
