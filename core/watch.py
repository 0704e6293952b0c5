"""Live feed: a watched folder whose new alert files are ingested once each.

`manage.py ingest --watch DIR` polls a folder, and so does a periodic job for every folder in
settings.SKYVOTE_WATCH_FOLDERS (Celery beat, `skyvote.watch_folders`). Both share this module:

* A file is read only once its size and modification time have stayed the same since an earlier
  poll (and for at least `settle_s` seconds), so a file still being written is never read half-way.
  Names ending in .part, .tmp, .partial, .crdownload or .filepart, and hidden files, are never read:
  a writer that writes to such a name and renames it when done is picked up on the next poll.
* Files already ingested are remembered by name, size and modification time in a state file (JSON,
  written atomically); a file that changes afterwards is read again (its alerts then count as
  duplicates). A file that failed is remembered too, with its errors, and not retried until it
  changes.
* One poll at a time per state file (an exclusive lock), so the command and the periodic job can
  watch the same folder without ingesting a file twice.
* Alert filters (core.alerts.parse_filter) leave alerts out; they are counted as "filtered".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from celery import shared_task
from django.conf import settings

from core import alerts as alert_tools
from core.ingest import SUPPORTED_SUFFIXES, IngestReport, _suffix, ingest_paths, subject_set_named

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".filepart", ".download")
STATE_VERSION = 1


class WatchError(ValueError):
    """A watch that cannot run (no such folder, project or workflow; a bad filter)."""


@dataclass
class WatchConfig:
    folder: Path
    project: object
    workflow: object
    subject_set: str = ""
    filters: tuple[str, ...] = ()
    settle_s: float = 0.0
    state_path: Path | None = None

    def __post_init__(self):
        self.folder = Path(self.folder).resolve()
        self.filters = tuple(self.filters or ())
        alert_tools.parse_filters(self.filters)  # a bad filter fails before any file is touched
        if self.state_path is None:
            self.state_path = default_state_path(self.folder, self.project, self.workflow)
        self.state_path = Path(self.state_path)

    def as_params(self) -> dict:
        return {
            "folder": str(self.folder),
            "subject_set": self.subject_set,
            "filters": list(self.filters),
            "settle_s": self.settle_s,
            "state": str(self.state_path),
        }


def default_state_path(folder: Path, project, workflow) -> Path:
    key = hashlib.sha256(f"{Path(folder).resolve()}|{project.pk}|{workflow.pk}".encode()).hexdigest()[:16]
    return Path(settings.PRIVATE_ROOT) / "watch" / f"{key}.json"


@dataclass
class PollResult:
    busy: bool = False  # another poll of the same state held the lock
    ready: list[Path] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # seen, but still changing (or too new)
    report: IngestReport | None = None


def is_partial(path: Path) -> bool:
    name = path.name.lower()
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIXES)


def _candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise WatchError(f"{folder} is not a folder")
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or is_partial(path):
            continue
        if path.is_file() and _suffix(path) in SUPPORTED_SUFFIXES:
            found.append(path)
    return found


def _load(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        state = {"version": STATE_VERSION}
    state.setdefault("seen", {})
    state.setdefault("done", {})
    return state


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path):
    """Yields True with the state's lock held, or False when another poll holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _scan(config: WatchConfig, state: dict, now: float) -> tuple[list[Path], list[str]]:
    """Ready files (unchanged since an earlier poll at least settle_s ago, not done yet) and the names
    still waiting; records what this poll saw."""
    ready, waiting, present = [], [], set()
    for path in _candidates(config.folder):
        name = path.relative_to(config.folder).as_posix()
        present.add(name)
        try:
            stat = path.stat()
        except OSError:
            continue
        signature = [stat.st_size, stat.st_mtime_ns]
        done = state["done"].get(name)
        if done and [done.get("size"), done.get("mtime_ns")] == signature:
            continue
        seen = state["seen"].get(name)
        if seen and seen[:2] == signature and now - float(seen[2]) >= config.settle_s:
            ready.append(path)
        else:
            if not seen or seen[:2] != signature:
                state["seen"][name] = [*signature, now]
            waiting.append(name)
    for name in list(state["seen"]):
        if name not in present:
            del state["seen"][name]
    return ready, waiting


def poll(
    config: WatchConfig,
    *,
    ingest: bool = True,
    now: float | None = None,
    progress: Callable[[int, int, IngestReport], None] | None = None,
    on_item: Callable[[], None] | None = None,
) -> PollResult:
    """One look at the folder: ingest the files that are ready (ingest=False: only say which)."""
    now = time.time() if now is None else now
    with _locked(config.state_path) as held:
        if not held:
            return PollResult(busy=True)
        state = _load(config.state_path)
        state["folder"] = str(config.folder)
        ready, waiting = _scan(config, state, now)
        result = PollResult(ready=ready, waiting=waiting)
        if ingest and ready:
            subject_set = subject_set_named(config.project, config.workflow, config.subject_set)
            report = ingest_paths(
                ready, project=config.project, workflow=config.workflow, subject_set=subject_set,
                progress=progress, on_item=on_item, relative_to=config.folder, filters=config.filters,
            )  # fmt: skip
            by_name = {file_result.name: file_result for file_result in report.files}
            for path in ready:
                name = path.relative_to(config.folder).as_posix()
                size, mtime_ns = state["seen"].pop(name, [None, None, None])[:2]
                file_result = by_name.get(name)
                errors = []
                if file_result is not None:
                    errors = [f"{label}: {reason}" for label, reason in file_result.alert_errors]
                    errors += [file_result.error] if file_result.error else []
                state["done"][name] = {
                    "size": size,
                    "mtime_ns": mtime_ns,
                    "at": now,
                    "ingested": file_result.ingested if file_result else 0,
                    "duplicates": file_result.duplicates if file_result else 0,
                    "filtered": file_result.filtered if file_result else 0,
                    "errors": errors,
                }
            result.report = report
        _save(config.state_path, state)
    return result


# ---------------------------------------------------------------------------------------------
# The periodic job: settings.SKYVOTE_WATCH_FOLDERS, checked by Celery beat


def configured_watches() -> list[WatchConfig]:
    """WatchConfigs of settings.SKYVOTE_WATCH_FOLDERS: dicts with folder, project and workflow (slugs),
    and optionally subject_set, filters (list of texts), settle_s and state (path)."""
    from core.models import Project, Workflow

    watches = []
    for entry in getattr(settings, "SKYVOTE_WATCH_FOLDERS", []) or []:
        try:
            project = Project.objects.get(slug=entry["project"])
            workflow = Workflow.objects.get(project=project, slug=entry["workflow"])
            watches.append(
                WatchConfig(
                    folder=Path(entry["folder"]),
                    project=project,
                    workflow=workflow,
                    subject_set=entry.get("subject_set", ""),
                    filters=tuple(entry.get("filters", ())),
                    settle_s=float(entry.get("settle_s", 0.0)),
                    state_path=Path(entry["state"]) if entry.get("state") else None,
                )
            )
        except (KeyError, TypeError, ValueError, Project.DoesNotExist, Workflow.DoesNotExist) as exc:
            log.warning("SKYVOTE_WATCH_FOLDERS entry %r is not usable: %s", entry, exc)
    return watches


def watch_config_from_params(job) -> WatchConfig:
    params = job.params.get("watch") or {}
    return WatchConfig(
        folder=Path(params["folder"]),
        project=job.project,
        workflow=job.workflow,
        subject_set=params.get("subject_set", ""),
        filters=tuple(params.get("filters", ())),
        settle_s=float(params.get("settle_s", 0.0)),
        state_path=Path(params["state"]) if params.get("state") else None,
    )


def queue_watch_jobs() -> int:
    """For each configured folder with files ready, one ingest job (none while one is open)."""
    from jobs.models import Job
    from jobs.services import queue_job

    queued = 0
    for config in configured_watches():
        try:
            result = poll(config, ingest=False)
        except (WatchError, OSError) as exc:
            log.warning("watched folder %s: %s", config.folder, exc)
            continue
        if result.busy or not result.ready:
            continue
        open_jobs = Job.objects.filter(
            kind=Job.INGEST,
            workflow=config.workflow,
            status__in=Job.OPEN,
            params__watch__folder=str(config.folder),
        )
        if open_jobs.exists():
            continue
        queue_job(
            Job.INGEST,
            project=config.project,
            workflow=config.workflow,
            params={"watch": config.as_params(), "subject_set": config.subject_set},
            message=f"{len(result.ready)} new file(s) in the watched folder {config.folder}",
        )
        queued += 1
    return queued


@shared_task(name="skyvote.watch_folders", ignore_result=True)
def watch_folders() -> int:
    """Scheduled (settings.CELERY_BEAT_SCHEDULE): an ingest job for each watched folder with new files."""
    return queue_watch_jobs()
