"""Exports are registered exporters: each app registers its own (labeling votes and labels, loop the
training bundle, similarity its choices), and the export job, the exports page and the API find them
through core.exporters' registry, never by name. Core and jobs import no product app, and
similarity imports only core, jobs and mlcore."""

import ast
import json
from pathlib import Path

import pytest
from django.urls import reverse

from core import exporters
from core.authentication import create_token
from core.models import Workflow
from core.storage import private_storage
from jobs.models import Job
from jobs.services import run_job

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


class EchoExporter(exporters.Exporter):
    """A minimal exporter from outside the apps: one row naming the project and a kept option."""

    identifier = "echo"
    verbose_name = "Echo"
    formats = ("csv", "jsonl")

    def clean_params(self, options: dict) -> dict:
        return {"note": "kept at start"}

    def run(self, project, target, fmt, *, workflow, params, progress=None) -> dict:
        progress(0.5, "half way")
        meta = exporters.base_meta(project, self.identifier, workflow)
        columns = [exporters.Column("project", "str"), exporters.Column("note", "str")]
        n = exporters.write_table(fmt, target, columns, [[(project.slug, params["note"])]], meta)
        return {"rows": n, **meta}


@pytest.fixture
def echo(monkeypatch):
    """EchoExporter registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(exporters, "_EXPORTERS", dict(exporters._EXPORTERS))
    exporters.register_exporter(EchoExporter)
    return exporters.exporter("echo")


def test_each_app_registers_its_exporters():
    found = {e.identifier: e for e in exporters.exporters()}
    # INSTALLED_APPS order
    assert list(found) == ["votes", "labels", "light_curves", "volunteers", "bundle", "similarity", "gems"]
    assert {name: type(e).__module__ for name, e in found.items()} == {
        "votes": "labeling.exporters",
        "labels": "labeling.exporters",
        "light_curves": "labeling.exporters",
        "volunteers": "labeling.exporters",
        "bundle": "loop.exporters",
        "similarity": "similarity.exporters",
        "gems": "gems.exporters",
    }
    assert found["bundle"].bundle and found["bundle"].workflow_kind == Workflow.REAL_BOGUS
    assert found["similarity"].workflow_kind == Workflow.SIMILARITY and found["votes"].workflow_kind is None
    for e in found.values():
        assert set(e.formats) <= set(exporters.FORMATS)


def test_an_exporter_needs_formats_a_writer_can_make():
    class Spreadsheet(exporters.Exporter):
        identifier = "spreadsheet"
        formats = ("xlsx",)

    with pytest.raises(ValueError, match="xlsx"):
        exporters.register_exporter(Spreadsheet)
    assert exporters.exporter("spreadsheet") is None


def test_the_export_job_runs_a_registered_exporter(project, owner, echo, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = exporters.start_export(project=project, user=owner, role="owner", kind="echo", fmt="jsonl")
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    assert job.params["note"] == "kept at start" and job.params["result"]["rows"] == 1
    # Stored under a random name in private storage; the friendly name is the download's.
    assert job.result.name.endswith(".jsonl") and project.slug not in job.result.name
    assert job.params["filename"].startswith(f"{project.slug}-all-echo-")
    with private_storage().open(job.result.name, "rb") as handle:
        assert json.loads(handle.read()) == {"project": project.slug, "note": "kept at start"}


def test_a_job_whose_exporter_is_gone_fails_with_a_message(project, owner, echo, monkeypatch):
    job = exporters.start_export(project=project, user=owner, role="owner", kind="echo", fmt="csv")
    monkeypatch.delitem(exporters._EXPORTERS, "echo")
    job = run_job(job.pk)
    assert job.status == Job.FAILED and job.error == "Unknown export 'echo'." and not job.result


def test_exports_page_offers_what_is_registered_and_available(client, project, workflow, owner, echo):
    client.force_login(owner)
    url = reverse("core:exports", args=[project.slug])
    page = client.get(url).content.decode()
    assert 'value="echo:csv">Echo — CSV<' in page and 'value="echo:jsonl">Echo — JSON Lines<' in page
    assert 'value="labels:fits">Labels — FITS<' in page
    assert "Training bundle — zip (images .npy, labels, light curves, split, manifest)" in page
    assert 'value="light_curves:parquet">Light curves — Parquet' in page
    assert 'value="similarity:zip"' not in page  # this project has no similarity workflow
    Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    assert 'value="similarity:zip"' in client.get(url).content.decode()


def test_api_export_kinds_come_from_the_registry(client, project, workflow, owner, echo):
    _token, key = create_token(owner, "tests")
    headers = {"Authorization": f"Bearer {key}"}
    url = reverse("api_exports", args=[project.slug])
    started = client.post(url, {"export": "echo", "format": "csv"}, headers=headers)
    assert started.status_code == 202, started.content
    assert started.json()["export"] == "echo"
    wrong = client.post(url, {"export": "echo", "format": "fits"}, headers=headers)
    assert wrong.status_code == 400 and "csv, jsonl" in wrong.json()["detail"]
    schema = json.loads(client.get(reverse("api_schema") + "?format=json").content)
    kinds = schema["components"]["schemas"]["ExportEnum"]["enum"]
    assert kinds == ["votes", "labels", "light_curves", "volunteers", "bundle", "similarity", "gems", "echo"]


def _imported_apps(app: str) -> dict[str, set[str]]:
    """Top-level packages each module of `app` imports (anywhere in the module), migrations aside."""
    found = {}
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    "app, forbidden",
    [
        ("jobs", {"core", "labeling", "loop", "panels", "similarity", "gems"}),
        ("core", {"labeling", "loop", "panels", "similarity", "gems"}),
        ("similarity", {"labeling", "loop", "panels", "gems"}),
        # gems sits on top: the apps below reach it only through the hooks it registers.
        ("labeling", {"gems"}),
        ("loop", {"gems"}),
        ("panels", {"gems"}),
    ],
)
def test_apps_import_only_what_sits_below_them(app, forbidden):
    offending = {
        module: names & forbidden for module, names in _imported_apps(app).items() if names & forbidden
    }
    assert offending == {}
