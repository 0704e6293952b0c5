"""import_votes (simple CSV and Zooniverse export) and aggregate: posteriors match mlcore.aggregation."""

import csv
import io
import json
import random

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from core.models import Participant, Subject
from labeling.aggregation import NEW_VOLUNTEER_PSEUDO_COUNTS
from labeling.models import ParticipantSkill, Vote
from mlcore.aggregation import dawid_skene, majority_vote, swap

pytestmark = pytest.mark.django_db


@pytest.fixture
def subjects(workflow):
    workflow.retirement_limit = 1000  # keep everything active: retirement is not under test here
    workflow.save()
    return [
        Subject.objects.create(project=workflow.project, workflow=workflow, external_id=f"ZTF{i:03d}")
        for i in range(12)
    ]


def simulated_votes(seed=0, n_subjects=12, n_volunteers=7):
    """Rows (subject_external_id, participant, answer, created_at) from volunteers of varied skill."""
    rng = random.Random(seed)
    truth = [rng.random() < 0.4 for _ in range(n_subjects)]
    skill = [0.95, 0.9, 0.85, 0.8, 0.7, 0.55, 0.5][:n_volunteers]
    rows = []
    minute = 0
    for v in range(n_volunteers):
        for i in rng.sample(range(n_subjects), 8):
            real = truth[i] if rng.random() < skill[v] else not truth[i]
            minute += 1
            rows.append(
                (
                    f"ZTF{i:03d}",
                    f"vol{v}",
                    "Real" if real else "bogus",
                    f"2024-05-01T10:{minute % 60:02d}:00Z",
                )
            )
    return rows


def write_csv(
    tmp_path, rows, header=("subject_external_id", "participant", "answer", "created_at"), name="v.csv"
):
    path = tmp_path / name
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def run(*args, **options):
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def arrays_from_rows(rows):
    """mlcore input built straight from the CSV rows, independently of the app's own indexing."""
    subjects = {s: i for i, s in enumerate(dict.fromkeys(r[0] for r in rows))}
    workers = {p: i for i, p in enumerate(dict.fromkeys(r[1] for r in rows))}
    items = np.array([subjects[r[0]] for r in rows])
    who = np.array([workers[r[1]] for r in rows])
    labels = np.array([1 if r[2].lower() == "real" else 0 for r in rows])
    return subjects, workers, items, who, labels


def stored_p_real(subject_index):
    stored = dict(Subject.objects.values_list("external_id", "p_real"))
    return np.array([stored[ext] for ext in subject_index])


def test_import_then_dawid_skene_matches_mlcore(tmp_path, workflow, subjects):
    rows = simulated_votes()
    out = run("import_votes", str(write_csv(tmp_path, rows)), workflow="rb")
    assert f"votes imported: {len(rows)}" in out
    assert Vote.objects.filter(source="import").count() == len(rows)
    assert Participant.objects.filter(external_id="import:vol0", kind=Participant.WORKER).count() == 1

    out = run("aggregate", workflow="ztf/rb", method="dawid_skene")
    subject_index, worker_index, items, who, labels = arrays_from_rows(rows)
    expected = dawid_skene(items, who, labels, n_classes=2)
    np.testing.assert_allclose(stored_p_real(subject_index), expected.p_real, rtol=1e-7, atol=1e-9)
    for name, w in worker_index.items():
        skill = ParticipantSkill.objects.get(participant__external_id=f"import:{name}", workflow=workflow)
        assert skill.p_l == pytest.approx(expected.confusion[w, 1, 1])
        assert skill.p_d == pytest.approx(expected.confusion[w, 0, 0])
    assert f"votes: {len(rows)} from 7 volunteers" in out
    assert f"mean P(real): {expected.p_real.mean():.4f}" in out
    assert "top volunteers:" in out and "bottom volunteers:" in out and "v-" in out


@pytest.mark.parametrize("method", ["majority", "swap"])
def test_aggregate_other_methods_match_mlcore(tmp_path, workflow, subjects, method):
    rows = simulated_votes(seed=4)
    Subject.objects.filter(external_id__in=["ZTF000", "ZTF001"]).update(gold_label="real")
    run("import_votes", str(write_csv(tmp_path, rows)), workflow="rb")
    run("aggregate", workflow="rb", method=method)
    subject_index, _, items, who, labels = arrays_from_rows(sorted(rows, key=lambda r: r[3]))
    if method == "majority":
        expected = majority_vote(items, who, labels)
    else:
        gold = [subject_index[s] for s in ("ZTF000", "ZTF001") if s in subject_index]
        expected = swap(
            items,
            who,
            labels,
            gold_items=gold,
            gold_labels=[1] * len(gold),
            pseudo_counts=NEW_VOLUNTEER_PSEUDO_COUNTS,
        )
    np.testing.assert_allclose(stored_p_real(subject_index), expected.p_real, rtol=1e-7, atol=1e-9)
    assert set(Subject.objects.exclude(p_real=None).values_list("aggregation_method", flat=True)) == {method}


def test_reimport_is_a_no_op_and_unknown_subjects_are_reported(tmp_path, workflow, subjects):
    rows = simulated_votes()[:10] + [("ZTF999", "vol1", "real", ""), ("ZTF998", "vol2", "bogus", "")]
    path = write_csv(tmp_path, rows)
    first = run("import_votes", str(path), workflow="rb")
    assert "votes imported: 10" in first
    assert "unknown subjects: 2 (2 rows not imported), e.g. ZTF999, ZTF998" in first
    before = list(Subject.objects.order_by("pk").values_list("vote_count", "p_real"))
    second = run("import_votes", str(path), workflow="rb")
    assert "votes imported: 0" in second and "already present (re-import): 10" in second
    assert Vote.objects.count() == 10
    assert list(Subject.objects.order_by("pk").values_list("vote_count", "p_real")) == before
    assert not Subject.objects.filter(external_id__in=["ZTF999", "ZTF998"]).exists()
    with pytest.raises(CommandError, match="2 rows were not imported"):
        run("import_votes", str(path), workflow="rb", strict=True)


def test_headerless_simple_csv_and_answer_map(tmp_path, workflow, subjects):
    path = write_csv(
        tmp_path, [("ZTF001", "ann", "Yes"), ("ZTF001", "bob", "Nope"), ("ZTF002", "bob", "No")], None
    )
    out = run("import_votes", str(path), workflow="rb", answer_map="nope=bogus")
    assert "votes imported: 3" in out
    assert sorted(Vote.objects.values_list("answer", flat=True)) == ["bogus", "bogus", "real"]


def zooniverse_row(
    cid, user, subject_id, value, candid=None, workflow_id="123", created="2019-03-01 12:34:56 UTC"
):
    subject_data = {str(subject_id): {"retired": None, **({"candid": candid} if candid else {})}}
    annotations = [{"task": "T0", "task_label": "Is this a real transient?", "value": value}]
    return {
        "classification_id": cid,
        "user_name": user,
        "user_id": "",
        "user_ip": "abc",
        "workflow_id": workflow_id,
        "workflow_name": "Real or bogus",
        "workflow_version": "3.1",
        "created_at": created,
        "gold_standard": "",
        "expert": "",
        "metadata": json.dumps({"started_at": "2019-03-01T12:34:50Z"}),
        "annotations": json.dumps(annotations),
        "subject_data": json.dumps(subject_data),
        "subject_ids": str(subject_id),
    }


def test_zooniverse_export(tmp_path, workflow, subjects):
    rows = [
        zooniverse_row(1, "alice", 9001, "Real", candid="ZTF001"),
        zooniverse_row(2, "not-logged-in-8f2c", 9001, "Bogus", candid="ZTF001"),
        zooniverse_row(3, "alice", 9002, "No", candid="ZTF002"),
        zooniverse_row(4, "bob", 9003, "Yes", candid="ZTF777"),  # not one of ours
        zooniverse_row(5, "bob", 9001, "Maybe", candid="ZTF001"),  # no mapping
        zooniverse_row(6, "bob", 9002, "Real", candid="ZTF002", workflow_id="999"),  # another workflow
        zooniverse_row(7, "carol", 9002, "Real", candid="ZTF002", created="yesterday-ish"),
    ]
    path = tmp_path / "classifications.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    out = run("import_votes", str(path), workflow="rb", zooniverse_workflow="123")
    assert "Imported zooniverse file" in out
    assert "votes imported: 3" in out
    assert "rows of other Zooniverse workflows skipped: 1" in out
    assert "unknown subjects: 1 (1 rows not imported), e.g. ZTF777" in out
    assert "answers not mapped: 1 rows, e.g. 'Maybe'" in out
    assert "bad rows: 1 not imported, e.g. line 8: unreadable created_at 'yesterday-ish'" in out
    votes = {
        (v.participant.external_id, v.subject.external_id): v
        for v in Vote.objects.select_related("participant", "subject")
    }
    assert set(votes) == {
        ("import:alice", "ZTF001"),
        ("import:not-logged-in-8f2c", "ZTF001"),
        ("import:alice", "ZTF002"),
    }
    assert votes[("import:alice", "ZTF001")].answer == "real"
    assert votes[("import:alice", "ZTF002")].answer == "bogus"
    assert votes[("import:alice", "ZTF001")].created_at.isoformat() == "2019-03-01T12:34:56+00:00"
    assert "votes imported: 0" in run("import_votes", str(path), workflow="rb", zooniverse_workflow="123")


def test_bad_input_is_explained(tmp_path, workflow, subjects):
    with pytest.raises(CommandError, match="No such file"):
        run("import_votes", str(tmp_path / "missing.csv"), workflow="rb")
    with pytest.raises(CommandError, match="Unrecognised header"):
        run("import_votes", str(write_csv(tmp_path, [("a", "b")], header=("subject", "who"))), workflow="rb")
    zoo = write_csv(tmp_path, [("1", "[]")], header=("classification_id", "annotations"), name="z.csv")
    with pytest.raises(CommandError, match="lacks the columns: user_name, subject_ids"):
        run("import_votes", str(zoo), workflow="rb")
    with pytest.raises(CommandError, match="not an answer of this workflow"):
        run(
            "import_votes",
            str(write_csv(tmp_path, [("ZTF001", "a", "real")])),
            workflow="rb",
            answer_map="yes=maybe",
        )
    with pytest.raises(CommandError, match="No workflow 'nope'"):
        run("import_votes", str(write_csv(tmp_path, [("ZTF001", "a", "real")])), workflow="nope")
    with pytest.raises(CommandError, match="Unknown method 'median'"):
        run("aggregate", workflow="rb", method="median")
    assert Vote.objects.count() == 0
