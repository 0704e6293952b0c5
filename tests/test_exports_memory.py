"""Exports stream: Python's peak memory stays within a small bound set by the chunk size, at a
project size where loading the votes the naive way (ORM instances, all at once) exceeds it."""

import csv
import tracemalloc
import uuid

import pytest
from astropy.io import fits  # noqa: F401  imported up front: module imports are not the export's memory
from django.utils import timezone

from core.models import Participant, Project, Subject
from labeling.exporters import export_labels, export_votes
from labeling.models import Vote

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

N_SUBJECTS = 1_000
N_PARTICIPANTS = 200
N_VOTES = 8_000
CHUNK = 500
BOUND = 6 * 1024 * 1024  # bytes of Python allocations at the peak


@pytest.fixture
def big(project, workflow):
    now = timezone.now()
    subjects = Subject.objects.bulk_create(
        Subject(
            project=project, workflow=workflow, external_id=f"ZTF{i:07d}", object_id=f"ZTF18obj{i:05d}",
            metadata={"ra": i * 0.01, "dec": -i * 0.001}, vote_count=10, answer_counts={"real": 6, "bogus": 4},
            p_real=(i % 100) / 100, aggregation_method="swap", status=Subject.RETIRED if i % 2 else Subject.ACTIVE,
        )
        for i in range(N_SUBJECTS)
    )  # fmt: skip
    participants = Participant.objects.bulk_create(
        Participant(kind=Participant.WORKER if i % 10 == 0 else Participant.ANONYMOUS, external_id=f"W{i}")
        for i in range(N_PARTICIPANTS)
    )
    Vote.objects.bulk_create(
        (
            Vote(
                workflow=workflow,
                subject=subjects[i % N_SUBJECTS],
                participant=participants[i // N_SUBJECTS],
                answer="real" if i % 3 else "bogus",
                started_at=now,
                finished_at=now,
                created_at=now,
                idempotency_key=uuid.uuid4(),
                user_agent="Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
                viewport="1280x800",
            )
            for i in range(N_VOTES)
        ),
        batch_size=2_000,
    )
    return project


def _peak(fn) -> int:
    """Peak of Python allocations while fn runs (callers warm up lazy imports first)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_votes_export_memory_is_bounded_where_naive_is_not(big, tmp_path, owner):
    empty = Project.objects.create(slug="empty", name="Empty", owner=owner)
    export_votes(empty, tmp_path / "warm.csv", "csv")  # lazy imports happen here
    path = tmp_path / "votes.csv"
    streamed = _peak(lambda: export_votes(big, path, "csv", include_worker_ids=True, chunk_size=CHUNK))
    with open(path, newline="") as handle:
        assert sum(1 for _ in csv.reader(handle)) == N_VOTES + 1

    def naive():
        votes = list(
            Vote.objects.filter(workflow__project=big).select_related("participant", "subject", "workflow")
        )
        assert len(votes) == N_VOTES

    loaded = _peak(naive)
    assert streamed < BOUND < loaded, (streamed, loaded)


def test_labels_parquet_and_fits_memory_is_bounded(big, tmp_path, owner):
    empty = Project.objects.create(slug="empty", name="Empty", owner=owner)
    for fmt in ("parquet", "fits"):
        export_labels(empty, tmp_path / f"warm.{fmt}", fmt)  # lazy imports happen here
        path = tmp_path / f"labels.{fmt}"
        peak = _peak(lambda path=path, fmt=fmt: export_labels(big, path, fmt, chunk_size=CHUNK))
        assert peak < BOUND, (fmt, peak)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "labels.parquet").num_rows == N_SUBJECTS
