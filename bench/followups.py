"""How long a volunteer takes to classify with a follow-up question ("What kind?") asked after every
answer, against the same volunteer answering the main question only, measured in the same run.

    .venv/bin/python bench/followups.py [--subjects 20] [--repeats 3]

A fresh SQLite database and media folder in a temporary directory, two live workflows of synthetic
subjects (one without follow-ups: the baseline; one asking "What kind?" after real and after bogus,
the field guide's types with their thumbnails), `manage.py runserver` (DEBUG, WhiteNoise serves the
static files) and Debian's Chromium driven by Playwright. A "volunteer" is a keyboard loop: the main
answer's key, then (typed workflow) the type's digit, waiting each time for the page to be ready for
the next key: the follow-up shown, then the counter moved on. So the figures are the page's and the
server's time per subject, with no human thinking time; the ratio is the cost of the second question.
Writes the "## Follow-up questions" section of docs/benchmarks.md.
"""

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(n_subjects: int, repeats: int) -> dict[str, str]:
    """Two workflows with enough subjects for every repeat (each repeat is a new volunteer)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from core import followups, workflows
    from core.ingest import add_subject
    from core.models import Project
    from mlcore.synth import generate_triplets

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("bench")
    project = Project.objects.create(slug="bench", name="Bench", owner=owner, status="live")
    slugs = {}
    for name, typed in (("plain", False), ("typed", True)):
        workflow, _ = workflows.create_workflow(
            project, name, is_active=True, retirement_limit=repeats + 1, gold_schedule=[[None, 0.0]]
        )
        if typed:
            questions = followups.default_followups(workflow.answers)
            for q in questions:
                q["mode"] = followups.OPTIONAL
            workflows.update_workflow(workflow, followups=questions)
        batch = generate_triplets(n_subjects, seed=11)
        for i in range(n_subjects):
            add_subject(
                project=project,
                workflow=workflow,
                subject_set=None,
                external_id=f"{name}-{i}",
                array=batch.images[i],
                metadata=batch.metadata[i],
                source="synthetic",
                truth_label="real" if batch.labels[i] else "bogus",
                truth_subtype=batch.subtypes[i],
            )
        slugs[name] = workflow.slug
    return slugs


def classify(browser, url: str, n: int, typed: bool) -> float:
    """Seconds from the first key to the n-th answer stored (the counter moved on)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(url)
    page.keyboard.press("Enter")  # the first-visit tutorial
    page.wait_for_selector("#tutorial:not([open])", state="attached")
    page.wait_for_selector("#vote-form")
    started = time.perf_counter()
    for i in range(n):
        answer = "bogus" if i % 3 else "real"
        page.keyboard.press(answer[0])
        if typed:
            page.wait_for_selector(f"#followup-{answer}:not([hidden])")
            page.keyboard.press(str(i % 5))
        page.wait_for_function(f"() => document.getElementById('counter').textContent.trim() === '{i + 1}'")
    elapsed = time.perf_counter() - started
    context.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="skyvote-bench-followups-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "skyvote.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(tmp / "media"),
        "DEBUG": "1",
        "OMP_NUM_THREADS": "1",
    }
    os.environ.update(env)
    slugs = prepare(args.subjects, args.repeats)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        times = {"plain": [], "typed": []}
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            for _ in range(args.repeats):  # alternated, so both see the same machine load
                for name in ("plain", "typed"):
                    url = f"{base}/p/bench/{slugs[name]}/"
                    times[name].append(classify(browser, url, args.subjects, typed=name == "typed"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    plain, typed = statistics.median(times["plain"]), statistics.median(times["typed"])
    n = args.subjects
    rows = [
        "| workflow | keys per subject | median s for all | s per subject | ratio to main answer only |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| main answer only (baseline) | 1 | {plain:.1f} | {plain / n:.2f} | 1.00 |",
        f'| "What kind?" after every answer | 2 | {typed:.1f} | {typed / n:.2f} | {typed / plain:.2f} |',
    ]
    body = "\n".join(
        [
            "## Follow-up questions",
            "",
            f"`bench/followups.py --subjects {n} --repeats {args.repeats}`: {n} synthetic subjects classified "
            f"with the keyboard in Chromium against `runserver` + SQLite on this {os.cpu_count()}-core machine "
            f"({platform.machine()}), browser on the same cores, {date.today().isoformat()}; median of "
            f"{args.repeats} volunteers per workflow, alternated. Baseline: the same volunteer loop answering "
            "the main question only, measured in the same run. No thinking time: this is what the page and "
            "the server add per subject.",
            "",
            *rows,
            "",
            f"Goal (the issue): {n} subjects with main and follow-up keys in under a minute: "
            f"{'met' if typed < 60 else 'not met'} ({typed:.1f} s). "
            "tests/test_followups_browser.py checks the same in the test suite (under 60 s, and prints its time).",
        ]
    )
    print(body)
    if not args.no_write:
        replace_section("## Follow-up questions", body)


if __name__ == "__main__":
    main()
