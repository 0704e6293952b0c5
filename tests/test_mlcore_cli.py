"""python -m mlcore: train/score/evaluate/simulate round trips and one-line errors with exit status 2."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint
from mlcore.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """--threads changes a process-wide torch setting; put it back for the tests that follow."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _data(tmp_path, n=40, channels_last=False):
    rng = np.random.default_rng(0)
    images = rng.normal(100, 5, size=(n, 3, 63, 63)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(float)
    images[labels == 1, 2, 29:34, 29:34] += 60
    if channels_last:
        images = np.moveaxis(images, 1, -1)
    images_path = tmp_path / "images.npy"
    np.save(images_path, images)
    labels_path = tmp_path / "labels.csv"
    with open(labels_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "p_real", "weight"])
        for i, label in enumerate(labels):
            writer.writerow([f"s{i}", 0.9 * label + 0.05, 1.0])
    return images_path, labels_path


def _run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-m", "mlcore", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_missing_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    done = _run_cli("score", "--checkpoint", tmp_path / "nope.pt", "--images", tmp_path / "nope.npy",
                    "--out", tmp_path / "s.csv")  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"error: images file not found: {tmp_path / 'nope.npy'}"]


def test_help_lists_the_commands():
    done = _run_cli("--help")
    assert done.returncode == 0
    for command in ("train", "score", "evaluate", "simulate"):
        assert command in done.stdout


def test_shape_and_count_mismatches_exit_2(tmp_path, capsys):
    images_path, labels_path = _data(tmp_path, n=10)
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 63, 63), np.float32))
    assert main(["train", "--images", str(tmp_path / "bad.npy"), "--labels", str(labels_path),
                 "--out", str(tmp_path / "m.pt"), "--quiet"]) == 2  # fmt: skip
    assert "expected 3 channels" in capsys.readouterr().err

    np.save(tmp_path / "short.npy", np.zeros(7))
    assert main(["train", "--images", str(images_path), "--labels", str(tmp_path / "short.npy"),
                 "--out", str(tmp_path / "m.pt"), "--quiet"]) == 2  # fmt: skip
    assert "has 7 labels but the images file has 10 triplets" in capsys.readouterr().err

    (tmp_path / "words.csv").write_text("p_real\nyes\n")
    assert main(["train", "--images", str(images_path), "--labels", str(tmp_path / "words.csv"),
                 "--out", str(tmp_path / "m.pt"), "--quiet"]) == 2  # fmt: skip
    assert "unreadable label row" in capsys.readouterr().err

    (tmp_path / "junk.pt").write_text("junk")
    assert main(["score", "--checkpoint", str(tmp_path / "junk.pt"), "--images", str(images_path),
                 "--out", str(tmp_path / "s.csv"), "--quiet"]) == 2  # fmt: skip
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_train_score_evaluate_round_trip(tmp_path, capsys):
    images_path, labels_path = _data(tmp_path, channels_last=True)
    checkpoint = tmp_path / "model.pt"
    code = main(["train", "--images", str(images_path), "--labels", str(labels_path), "--out", str(checkpoint),
                 "--epochs", "2", "--batch-size", "16", "--threads", "1", "--quiet"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and summary["checkpoint"] == str(checkpoint)
    loaded = load_checkpoint(checkpoint)
    assert loaded.metadata["result"]["n_train"] + loaded.metadata["result"]["n_val"] == 40

    scores = tmp_path / "scores.csv"
    assert main(["score", "--checkpoint", str(checkpoint), "--images", str(images_path), "--out", str(scores),
                 "--mc-samples", "5", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    with open(scores) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and {"p_real", "entropy", "bald"} <= set(rows[0])

    plots = tmp_path / "plots"
    assert (
        main(["evaluate", "--scores", str(scores), "--labels", str(labels_path), "--plots", str(plots)]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["roc_auc"] <= 1.0 and "mdr_at_1pct_fpr" in report and "ece" in report
    assert (plots / "roc.png").exists() and (plots / "reliability.svg").exists()

    assert main(["evaluate", "--checkpoint", str(checkpoint), "--images", str(images_path),
                 "--labels", str(labels_path), "--quiet"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["n"] == 40


def test_simulate_runs_a_tiny_active_learning_experiment(tmp_path, capsys):
    pytest.importorskip("mlcore.synth")
    pytest.importorskip("mlcore.crowd")
    out = tmp_path / "al.json"
    code = main(["simulate", "--pool-size", "120", "--test-size", "60", "--initial-labels", "20",
                 "--batch-size", "20", "--max-labels", "60", "--strategies", "random,bald+diversity",
                 "--seeds", "0", "--labels", "both", "--candidates", "50", "--mc-samples", "4",
                 "--first-round-steps", "2", "--steps-per-round", "1", "--json", str(out),
                 "--plot", str(tmp_path / "al"), "--quiet", "--threads", "1"])  # fmt: skip
    assert code == 0
    markdown = capsys.readouterr().out
    assert "| random |" in markdown and "| bald+diversity |" in markdown and "crowd" in markdown.lower()
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 4
    for run in result["runs"]:
        assert run["n_labels"] == [20, 40, 60] and len(run["test_auc"]) == 3
    assert (tmp_path / "al.png").exists() and (tmp_path / "al.svg").exists()
    assert main(["simulate", "--strategies", "magic", "--quiet"]) == 2
