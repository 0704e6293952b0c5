"""bench/loop.py's report: a round whose model is not promoted is reported as such (it used to crash
looking for the pool it never scored), and the settings that differ from the product's are listed."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from core.models import Workflow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "loop.py"


@pytest.fixture(scope="module")
def bench_loop():
    spec = importlib.util.spec_from_file_location("bench_loop_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(bench_loop, *, status: str, metrics: dict, n_scored) -> dict:
    args = SimpleNamespace(
        labelled=1000, unlabelled=10000, heldout=300, k=50, train_budget=5.0, epochs=30,
        precision="auto", strategy="entropy", quick=True, no_write=True,
    )  # fmt: skip
    workflow_values = {"retirement_limit": 1, "exploration_share": 0.0, "train_every": 50}
    defaults = {name: Workflow._meta.get_field(name).get_default() for name in workflow_values}
    timings = {"export": 1.0, "train": 5.0, "evaluate": 0.5, "register": 0.2}
    return {
        "args": vars(args),
        "generation_s": 3.0,
        "first": {**timings, "score": 2.0, "write": 0.5},
        "first_total": 10.0,
        "steady": timings if status != "active" else {**timings, "score": 2.0, "write": 0.5},
        "total": 7.5,
        "outcome": bench_loop.promotion_outcome(status, metrics),
        "settings_differ": bench_loop.settings_differences(args, workflow_values, defaults),
        "version": {
            "n_train": 900,
            "device": "cpu",
            "heldout_auc": 0.91,
            "status": status,
            "epochs": 3,
            "stopped": "time budget",
        },  # fmt: skip
        "ranking_changed": status == "active",
        "write": {"n": 100, "executemany_s": 0.1, "bulk_update_s": 0.3},
        "cold": {"n": 100, "files_s": 0.2, "cache_s": 0.1},
        "torch_threads": 2,
        "n_scored": n_scored,
        "used_precision": "float32",
        "precision": {
            "n": 256,
            "float32": {"per_s": 1000.0},
            "bfloat16": {"per_s": 1500.0},
            "max_abs_diff": 0.01,
            "top10_overlap": 0.9,
        },  # fmt: skip
        "load": (2.0, 2.0, 2.0),
        "cpu_share": 1.5,
        "followups": [("anomaly", 70.0)],
    }


def test_not_promoted_round_is_reported_instead_of_timed(bench_loop):
    reason = "Held-out AUC 0.8000 is worse than the active v1's 0.9000 beyond the tolerance."
    body = bench_loop.render(
        result(
            bench_loop,
            status="rejected",
            metrics={"promotion": {"promoted": False, "reason": reason}},
            n_scored=None,
        )
    )
    assert f"not promoted: {reason}" in body
    assert "**not measured**" in body
    assert "| **total** | **10.0** | **7.5** |" not in body


def test_promoted_round_is_timed(bench_loop):
    metrics = {"promotion": {"promoted": True, "reason": "Not worse."}}
    body = bench_loop.render(result(bench_loop, status="active", metrics=metrics, n_scored=10000))
    assert "| **total** | **10.0** | **7.5** |" in body
    assert "not promoted" not in body
    assert "score 10,000 unretired subjects" in body
    # Jobs queued after the ranking was written are shown, outside the total.
    assert "follow-up jobs the round queued (anomaly)" in body and "| 0.0 | 70.0 |" in body


def test_settings_that_differ_are_listed_with_the_product_defaults(bench_loop):
    body = bench_loop.render(result(bench_loop, status="active", metrics={}, n_scored=10)).splitlines()
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in body
        if line.startswith("| SKYVOTE_LOOP") or line.startswith("| Workflow.")
    }
    assert set(rows) == {
        "SKYVOTE_LOOP['train_time_budget_s']",
        "Workflow.retirement_limit",
        "Workflow.exploration_share",
    }
    assert "| 900.0 | 5.0 |" in rows["SKYVOTE_LOOP['train_time_budget_s']"]


def test_product_defaults_match_the_settings(bench_loop):
    for name, default in bench_loop.PRODUCT_LOOP_DEFAULTS.items():
        assert settings.SKYVOTE_LOOP[name] == default, name
