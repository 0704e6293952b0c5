"""The README's "Fetch labels from Python" snippet run as a new user would: the
owner makes a token, the snippet downloads labels as Parquet and FITS and the training bundle from
a live server with `requests`, reads them back, and votes on a served subject with its ticket."""

import hashlib
import re
from pathlib import Path

import pytest

from core.authentication import create_token
from core.models import Participant, Subject
from labeling.models import Vote
from tests.exports_support import populate

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.django_db(transaction=True)
def test_readme_snippet_against_a_live_server(
    live_server, project, workflow, owner, django_user_model, monkeypatch, tmp_path
):
    data = populate(project, workflow, django_user_model, n_subjects=5)
    _token, key = create_token(owner, "readme")
    section = README.read_text().split("## Fetch labels from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for name, value in (("SKYVOTE", live_server.url), ("TOKEN", key), ("PROJECT", project.slug)):
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", code, flags=re.M)
        assert n == 1, name
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(compile(code, str(README), "exec"), scope)
    finally:
        if "api" in scope:  # close keep-alive connections before the live server stops
            scope["api"].close()

    n_subjects = Subject.objects.filter(workflow=workflow).count()
    assert scope["labels"].num_rows == n_subjects == len(scope["fits_labels"])
    assert sorted(scope["labels"].column("external_id").to_pylist()) == sorted(
        s.external_id for s in data.subjects
    )
    manifest, bundle = scope["manifest"], scope["bundle"]
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(bundle.read(name)).hexdigest() == entry["sha256"]
    assert scope["images"].shape[0] == manifest["counts"]["subjects"] == len(scope["bundle_labels"])
    assert len(scope["X_train"]) == manifest["counts"]["train"]
    assert {s["status"] for s in scope["retired"]} == {"retired"}
    assert scope["served"]["subject"] is not None and scope["vote"]["created"] is True
    stored = Vote.objects.get(pk=scope["vote"]["id"])
    assert stored.source == "api" and stored.participant == Participant.objects.get(user=owner)
