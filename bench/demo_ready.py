"""How long after `make demo` prints its URL the demo has a promoted model and a working search by image.

    .venv/bin/python bench/demo_ready.py [--timeout 120] [--baseline-timeout 600] [--no-baseline] [--no-write]
                                         [--seed-args "--subjects 200 --history 100"]

Each measurement starts the demo the way `make demo` does, on a fresh throwaway var/ folder
(SKYVOTE_VAR_DIR in a temporary directory: SQLite database, media, private files, array cache and the
embedded broker all live there): `migrate`, `collectstatic`, `seed_demo`, then honcho with the
Procfile (web + the `short` worker with beat + the `gpu` worker). The clock starts when seed_demo
prints "Open http://...". The benchmark then logs in as the demo owner and polls, once a second:

* model: the real/bogus workflow's model page answers and the API lists an active classifier for it;
* search: the search-by-image page, queried with a subject, shows results (not "no embedding yet").

Modes, measured in the same run:
* "seed trains the first rounds" (the product: seed_demo's default `--first-rounds run`);
* "workers train the first rounds" (the baseline, the behaviour before: SKYVOTE_DEMO_FIRST_ROUNDS=queue,
  the gpu worker runs the first rounds with the product's settings). It may take longer than
  --baseline-timeout, reported as "> timeout".

Also reported: how long seeding took, the first ZTF model's held-out AUC and epochs, and how many
near-duplicate cutouts find their original in the top 5 of search by image (a check that the quick
embedding is useful, not only present). Writes the "## Demo ready" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Demo ready"
PROJECT, WORKFLOW, SIMILAR = "ztf-demo", "real-or-bogus", "similar"
BIN = ROOT / ".venv" / "bin"
# Settings a developer's shell may carry that would point the demo away from its fresh folder.
_CLEARED = (
    "DATABASE_URL", "MEDIA_ROOT", "SKYVOTE_PRIVATE_ROOT", "SKYVOTE_CACHE_DIR", "CELERY_BROKER_URL",
    "CACHE_URL", "CELERY_TASK_ALWAYS_EAGER", "SKYVOTE_DEMO_FIRST_ROUNDS", "DJANGO_SETTINGS_MODULE",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(var: Path, mode: str, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(SKYVOTE_VAR_DIR=str(var), SKYVOTE_DEMO_FIRST_ROUNDS=mode, PORT=str(port), PYTHONUNBUFFERED="1")
    return env


def run_seed(env: dict, port: int, log: Path, seed_args: list[str]) -> tuple[float, float]:
    """`make seed`: migrate, collectstatic, seed_demo. Returns (seconds it took, monotonic time of the URL)."""
    started = time.monotonic()
    with open(log, "ab") as out:
        for command in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v", "0"]):
            subprocess.run(
                [str(BIN / "python"), "manage.py", *command], cwd=ROOT, env=env, stdout=out, check=True
            )
    seed = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "seed_demo", "--port", str(port), *seed_args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url_at = None
    with open(log, "a") as out:
        for line in seed.stdout:
            out.write(line)
            if line.startswith("Open http"):
                url_at = time.monotonic()
            if line.startswith("First round") or line.startswith("First training round"):
                print("   ", line.rstrip())
    if seed.wait() != 0 or url_at is None:
        raise SystemExit(f"seed_demo failed; see {log}")
    return url_at - started, url_at


def start_demo(env: dict, var: Path, log: Path) -> subprocess.Popen:
    """honcho with the repository's Procfile; only the beat schedule file moves into the throwaway folder."""
    procfile = var / "Procfile"
    procfile.write_text((ROOT / "Procfile").read_text().replace("var/celerybeat-schedule", str(var / "beat")))
    out = open(log, "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [str(BIN / "honcho"), "start", "-f", str(procfile), "-d", str(ROOT), "--no-colour"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop_demo(demo: subprocess.Popen) -> None:
    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=30)


class Site:
    def __init__(self, base: str, password: str):
        self.base, self.password = base, password
        self.http = requests.Session()
        self.logged_in = False

    def login(self) -> bool:
        page = self.http.get(f"{self.base}/accounts/login/", timeout=10)
        token = self.http.cookies.get("csrftoken")
        answer = self.http.post(
            f"{self.base}/accounts/login/",
            data={"username": "demo", "password": self.password, "csrfmiddlewaretoken": token},
            headers={"Referer": page.url},
            timeout=10,
        )
        self.logged_in = answer.ok and "sessionid" in self.http.cookies
        return self.logged_in

    def api(self, path: str, **params):
        return self.http.get(f"{self.base}/api/projects/{PROJECT}/{path}", params=params, timeout=30).json()

    def model_ready(self, workflow_id: int) -> dict | None:
        page = self.http.get(f"{self.base}/p/{PROJECT}/{WORKFLOW}/model/", timeout=30)
        if page.status_code != 200:
            return None
        active = self.api("model-versions/", status="active", workflow=workflow_id)["results"]
        return next((v for v in active if v["kind"] == "classifier"), None)

    def search_ready(self, subject: str) -> bool:
        page = self.http.get(
            f"{self.base}/similarity/p/{PROJECT}/search/", params={"subject": subject}, timeout=60
        )
        return (
            page.status_code == 200 and 'data-testid="results"' in page.text and "data-subject=" in page.text
        )

    def near_duplicates_found(self, pairs: list[tuple[str, str]], k: int = 5) -> int:
        found = 0
        for duplicate, original in pairs:
            page = self.http.get(
                f"{self.base}/similarity/p/{PROJECT}/search/",
                params={"subject": duplicate, "top_k": k},
                timeout=60,
            )
            found += original in re.findall(r'<div class="muted">([^<]+)</div>', page.text)
        return found


def measure(mode: str, timeout: float, logs: Path, seed_args: list[str]) -> dict:
    var = Path(tempfile.mkdtemp(prefix=f"demo-ready-{mode}-"))
    port = free_port()
    env = environment(var, mode, port)
    log = logs / f"{mode}.log"
    print(f"{mode}: seeding into {var} (log {log})")
    seed_s, url_at = run_seed(env, port, log, seed_args)
    print(f"  seeded in {seed_s:.0f} s; URL printed, starting web + workers")
    demo = start_demo(env, var, log)
    result = {
        "mode": mode,
        "seed_s": seed_s,
        "web_s": None,
        "model_s": None,
        "search_s": None,
        "timeout": timeout,
        # Other processes share the cores: the 1-minute load average when seeding ended says how much.
        "load_at_url": os.getloadavg()[0],
    }
    site = Site(f"http://127.0.0.1:{port}", (var / "demo-password").read_text().strip())
    deadline = url_at + timeout
    workflow_id = duplicates = None
    try:
        while time.monotonic() < deadline and (result["model_s"] is None or result["search_s"] is None):
            now = time.monotonic()
            try:
                if not site.logged_in:
                    if not site.login():
                        raise requests.ConnectionError("login refused")
                    result["web_s"] = time.monotonic() - url_at
                    workflows = {w["slug"]: w["id"] for w in site.api("workflows/")["results"]}
                    workflow_id = workflows[WORKFLOW]
                    subjects = site.api("subjects/", workflow=SIMILAR, page_size=1000)["results"]
                    duplicates = [(s["external_id"], s["external_id"][: -len("-dup")]) for s in subjects]
                    duplicates = [pair for pair in duplicates if pair[0].endswith("-dup")]
                if result["model_s"] is None and (version := site.model_ready(workflow_id)):
                    result["model_s"] = time.monotonic() - url_at
                    result["model"] = version
                    print(f"  model ready after {result['model_s']:.1f} s (v{version['version']})")
                if result["search_s"] is None and site.search_ready(duplicates[0][0]):
                    result["search_s"] = time.monotonic() - url_at
                    print(f"  search ready after {result['search_s']:.1f} s")
            except (requests.RequestException, ValueError, KeyError):
                pass  # the web server is still starting
            time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        if result["search_s"] is not None:
            result["near_duplicates"] = (site.near_duplicates_found(duplicates), len(duplicates))
    finally:
        stop_demo(demo)
        shutil.rmtree(var, ignore_errors=True)  # the logs stay, in their own folder
    return result


def _fmt(seconds: float | None, timeout: float) -> str:
    return f"{seconds:.1f} s" if seconds is not None else f"> {timeout:.0f} s (not ready)"


def _ready(result: dict) -> float | None:
    if result["model_s"] is None or result["search_s"] is None:
        return None
    return max(result["model_s"], result["search_s"])


def write_section(results: list[dict]) -> str:
    names = {"run": "seed trains them (now)", "queue": "workers train them (before)"}
    lines = [
        SECTION,
        "",
        "`bench/demo_ready.py`: `make demo` on a fresh var/ folder (migrate, collectstatic, seed_demo, then "
        "honcho with the Procfile: gunicorn, the `short` worker with beat, the `gpu` worker); the clock "
        "starts when seed_demo prints its URL, then the demo owner logs in and polls once a second: *model* = "
        "the real/bogus model page answers and an active classifier is listed, *search* = search by image "
        "with a subject shows results. *Start → ready* adds the seeding (`make seed`) to it. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPU only, {time.strftime('%Y-%m-%d')}, "
        "shared with other test runs (the load column: 1-minute load average when the URL was printed).",
        "",
        "| first rounds | seeding | URL → web answers | URL → promoted model | URL → search works "
        "| URL → ready | start → ready | first ZTF model | near-duplicates in top 5 | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results:
        model = r.get("model") or {}
        auc = model.get("metrics", {}).get("heldout", {}).get("roc_auc")
        validation = model.get("metrics", {}).get("validation", {})
        first = (
            f"AUC {auc:.3f}, {validation.get('epochs_run')} epochs ({validation.get('stopped_reason')})"
            if auc is not None
            else "n/a"
        )
        ready = _ready(r)
        total = (
            f"{r['seed_s'] + ready:.0f} s" if ready is not None else f"> {r['seed_s'] + r['timeout']:.0f} s"
        )
        dups = r.get("near_duplicates")
        lines.append(
            f"| {names[r['mode']]} | {r['seed_s']:.0f} s | {_fmt(r['web_s'], r['timeout'])} "
            f"| {_fmt(r['model_s'], r['timeout'])} | {_fmt(r['search_s'], r['timeout'])} "
            f"| {_fmt(ready, r['timeout'])} | {total} | {first} "
            f"| {f'{dups[0]} / {dups[1]}' if dups else 'n/a'} | {r['load_at_url']:.1f} |"
        )
    now = next((r for r in results if r["mode"] == "run"), None)
    ready = _ready(now) if now else None
    goal = "**met**" if ready is not None and ready <= 60 else "**not met**"
    lines += [
        "",
        f"Goal: a promoted model and working search by image within 60 s of the URL: {goal}"
        + (f" ({ready:.1f} s)." if ready is not None else "."),
        "",
        "What the rows mean. *Now*: seed_demo runs the first ZTF, Rubin and embedding rounds itself, as jobs "
        "of the job system, each with a 20 s training budget (`--first-round-budget`) and at most 8 "
        "classifier epochs / 2 pretraining epochs; the URL comes after them, so what remains is the web "
        "server starting and the first search loading the index. *Before* (`SKYVOTE_DEMO_FIRST_ROUNDS=queue`, "
        "the baseline of the same run): the gpu worker runs the same three rounds one after the other with "
        "the product's settings (up to 30 epochs, 15-minute budget), so search waits for both classifier "
        "rounds and then the embedding's 15 pretraining epochs. The quick first models are weaker when the "
        "cores are busy (fewer epochs fit the budget); the workers' later rounds (every 40 labels, every 60 "
        "similarity answers) use the product's settings and warm-start from them. Seeding takes longer "
        "by the three quick rounds.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds after the URL, seed trains")
    parser.add_argument(
        "--baseline-timeout", type=float, default=600.0, help="seconds after the URL, baseline"
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--seed-args", default="", help="extra seed_demo options (a quick check of this script)"
    )
    args = parser.parse_args()
    seed_args = shlex.split(args.seed_args)

    logs = Path(tempfile.mkdtemp(prefix="demo-ready-logs-"))
    results = [measure("run", args.timeout, logs, seed_args)]
    if not args.no_baseline:
        results.append(measure("queue", args.baseline_timeout, logs, seed_args))
    text = write_section(results)
    print(text)
    if not args.no_write:
        from bench.benchdoc import replace_section

        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
