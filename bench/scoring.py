"""Scoring throughput of the VGG6 real/bogus model: naive forward vs mlcore.score's optimised path.

    nice -n 10 .venv/bin/python bench/scoring.py            # writes "## Scoring throughput" in docs/benchmarks.md
    nice -n 10 .venv/bin/python bench/scoring.py --quick    # fewer repetitions, prints only

Measured in one run, on preprocessed synthetic triplets (mlcore.synth), so every ratio compares
variants under the same machine load:

* naive — ``model.eval(); model(x)`` on the whole batch, autograd on, default NCHW layout;
* inference_mode — the same under torch.inference_mode();
* + channels-last — the network and input in channels-last layout (oneDNN's fast path);
* mlcore.score fp32 — the library function: inference_mode, channels-last, compute chunks of 64;
* mlcore.score bf16 — the same under bfloat16 autocast (kept only if accurate, see below);
* torch.jit (traced + frozen) — TorchScript with optimize_for_inference (fuses conv+ReLU);
* torch.compile (with --compile) — Inductor, max-autotune, fixed shapes;
* BALD (T = 20) — mlcore.score with mc_samples=20 (dropout sampled in the dense head only),
  against T full passes with dropout on (the textbook MC-dropout cost).

Throughput is the median of several repetitions, with the variants interleaved (the machine is
shared: interleaving spreads load bursts over all variants, and the median is what a round typically
gets — the best repetition would flatter every variant). The slowest and fastest repetition are kept
as the spread. Accuracy of bf16: max |Δp_real| and test AUC against fp32 with a model trained briefly.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

from mlcore.data import TripletArrayDataset  # noqa: E402
from mlcore.metrics import roc_auc  # noqa: E402
from mlcore.models import VGG6  # noqa: E402
from mlcore.prep import preprocess_batch  # noqa: E402
from mlcore.score import score  # noqa: E402
from mlcore.simulation import cpu_name  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Scoring throughput"


def median_rates(variants: dict, n_items: int, repeats: int, spread: dict | None = None) -> dict[str, float]:
    """Items/s per variant: median of `repeats`, variants interleaved so a burst of load on a shared
    machine hits all of them alike instead of ruining one variant's whole measurement. `spread`, when
    given, receives (slowest, fastest) items/s per variant."""
    for fn in variants.values():
        fn()  # warm-up (oneDNN primitive creation, allocations)
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    if spread is not None:
        spread.update({name: (n_items / max(s), n_items / min(s)) for name, s in seconds.items()})
    return {name: n_items / float(np.median(s)) for name, s in seconds.items()}


def make_data(n: int, seed: int):
    from mlcore.synth import generate_triplets

    batch = generate_triplets(n, seed=seed, hard_fraction=0.3)
    return preprocess_batch(batch.images), batch.labels


def train_reference_model(seed: int, quick: bool) -> VGG6:
    """A briefly trained model, so bf16 errors are measured on realistic logits, not a random init."""
    from mlcore.train import TrainConfig, train_classifier

    images, labels = make_data(600 if quick else 1500, seed + 100)
    result = train_classifier(
        TripletArrayDataset(images, preprocessed=True),
        labels.astype(float),
        train_config=TrainConfig(epochs=2 if quick else 4, batch_size=64, val_fraction=0.0, seed=seed),
        data_hash="",
    )
    return result.model


def measure(args) -> dict:
    torch.manual_seed(0)
    load_at_start = os.getloadavg()[0]
    threads = torch.get_num_threads()
    model = train_reference_model(0, args.quick)
    images, labels = make_data(max(args.batch_sizes), 7)
    x_all = torch.from_numpy(images)
    repeats = 2 if args.quick else args.repeats
    compiled = None
    if args.compile:
        # Inductor on CPU; shapes are fixed (chunks of 64), so one compilation serves every batch size.
        compiled = torch.compile(
            copy.deepcopy(model).eval().to(memory_format=torch.channels_last),
            mode="max-autotune-no-cudagraphs",
            dynamic=False,
        )
        started = time.perf_counter()
        with torch.inference_mode():
            compiled(x_all[:64].contiguous(memory_format=torch.channels_last))
        compile_seconds = time.perf_counter() - started
    rows = []
    for batch_size in args.batch_sizes:
        x = x_all[:batch_size]
        ds = TripletArrayDataset(images[:batch_size], preprocessed=True)
        naive_model = copy.deepcopy(model).eval()
        cl_model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def inference_only(naive_model=naive_model, x=x):
            with torch.inference_mode():
                naive_model(x)

        def channels_last(cl_model=cl_model, x_cl=x_cl):
            with torch.inference_mode():
                cl_model(x_cl)

        variants = {
            "naive": lambda naive_model=naive_model, x=x: naive_model(x),
            "inference_mode": inference_only,
            "+ channels-last": channels_last,
            "mlcore.score fp32": lambda ds=ds, b=batch_size: score(model, ds, b, features=False),
            "mlcore.score bf16": lambda ds=ds, b=batch_size: score(
                model, ds, b, features=False, precision="bfloat16"
            ),
        }
        if not args.no_jit:
            with torch.inference_mode():
                traced = torch.jit.trace(cl_model, x_cl[:64], check_trace=False)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

            def jit_chunks(frozen=frozen, x_cl=x_cl):
                with torch.inference_mode():
                    for start in range(0, len(x_cl), 64):
                        frozen(x_cl[start : start + 64])

            variants["torch.jit frozen (chunks of 64)"] = jit_chunks
        if compiled is not None:

            def compiled_chunks(x_cl=x_cl):
                with torch.inference_mode():
                    for start in range(0, len(x_cl), 64):
                        compiled(x_cl[start : start + 64])

            variants["torch.compile (chunks of 64)"] = compiled_chunks
        variants["BALD T=20"] = lambda ds=ds, b=batch_size: score(model, ds, b, mc_samples=20, features=False)
        spread: dict = {}
        rates = median_rates(variants, batch_size, repeats, spread)
        bald_rate = rates.pop("BALD T=20")
        rows.append(
            {
                "batch_size": batch_size,
                "rates": rates,
                "spread": spread,
                "repeats": repeats,
                "bald_rate": bald_rate,
                "single": rates["mlcore.score fp32"],
            }
        )

    # Textbook MC dropout: T full passes with dropout on, for comparison (one batch size, fewer repeats).
    mc_model = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    x = x_all[:256].contiguous(memory_format=torch.channels_last)

    def naive_mc():
        with torch.inference_mode():
            for _ in range(20):
                mc_model(x)

    naive_mc_rate = median_rates({"mc": naive_mc}, 256, 3)["mc"]

    # Accuracy of bf16 against fp32 on a realistic model and held-out triplets.
    fp32 = score(model, TripletArrayDataset(images, preprocessed=True), 256, features=False).p_real
    bf16 = score(
        model, TripletArrayDataset(images, preprocessed=True), 256, features=False, precision="bfloat16"
    ).p_real
    accuracy = {
        "n": len(labels),
        "max_abs_dp": float(np.max(np.abs(fp32 - bf16))),
        "mean_abs_dp": float(np.mean(np.abs(fp32 - bf16))),
        "auc_fp32": roc_auc(labels, fp32),
        "auc_bf16": roc_auc(labels, bf16),
        "flips_at_0.5": int(np.sum((fp32 >= 0.5) != (bf16 >= 0.5))),
    }
    return {
        "compile_seconds": compile_seconds if compiled is not None else None,
        "rows": rows,
        "naive_mc_rate": naive_mc_rate,
        "accuracy": accuracy,
        "threads": threads,
        "device": f"CPU: {cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__}, {threads} threads",
        "load": load_at_start,
        "load_end": os.getloadavg()[0],
    }


def render(result: dict, command: str) -> str:
    rows = result["rows"]
    variants = list(rows[0]["rates"])
    lines = [
        f"Measured {dt.date.today().isoformat()} with `{command}` on {result['device']}; "
        f"load average {result['load']:.1f} at the start and {result['load_end']:.1f} at the end (1.0 per busy core, this benchmark's own threads included; median of "
        f"{rows[0].get('repeats', '?')} interleaved repetitions, slowest–fastest repetition in brackets). Triplets per second for one forward pass, ratio to the naive forward measured in the "
        "same run (columns are measured one after the other, so load changes during the run show up between "
        "columns more than within one):",
        "",
        "| variant | " + " | ".join(f"batch {r['batch_size']}" for r in rows) + " |",
        "| --- | " + " | ".join("---:" for _ in rows) + " |",
    ]
    for variant in variants:
        cells = []
        for r in rows:
            rate = r["rates"][variant]
            low, high = r.get("spread", {}).get(variant, (rate, rate))
            cells.append(f"{rate:,.0f}/s ({rate / r['rates']['naive']:.1f}×) [{low:,.0f}–{high:,.0f}]")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append(
        "| BALD T=20, mlcore.score (cost vs one mlcore.score pass) | "
        + " | ".join(f"{r['bald_rate']:,.0f}/s ({r['single'] / r['bald_rate']:.2f}× the time)" for r in rows)
        + " |"
    )
    acc = result["accuracy"]
    # The best batch size's median (not any single repetition's best).
    best_fp32 = max(r["rates"]["mlcore.score fp32"] for r in rows)
    best_bf16 = max(r["rates"]["mlcore.score bf16"] for r in rows)
    one_pass_256 = next((r["single"] for r in rows if r["batch_size"] == 256), rows[0]["single"])
    if result.get("compile_seconds") is not None:
        lines += ["", f"torch.compile took {result['compile_seconds']:.0f} s to compile (once per process)."]
    lines += [
        "",
        f"Textbook MC dropout (20 full passes with dropout on, batch 256): {result['naive_mc_rate']:,.0f} triplets/s, "
        f"i.e. {one_pass_256 / result['naive_mc_rate']:.1f}× the time of one pass; mlcore's head-only sampling is "
        "in the BALD row above.",
        "",
        f"bf16 accuracy on {acc['n']} held-out synthetic triplets with a briefly trained model: max |Δp_real| "
        f"{acc['max_abs_dp']:.4f} (mean {acc['mean_abs_dp']:.5f}), {acc['flips_at_0.5']} decisions flipped at 0.5, "
        f"AUC {acc['auc_fp32']:.4f} (fp32) vs {acc['auc_bf16']:.4f} (bf16).",
        "",
        f"Goal ≥ 2,000 triplets/s on 2 cores (median, best batch size): fp32 {best_fp32:,.0f}/s, bf16 {best_bf16:,.0f}/s — "
        f"**{'met' if best_fp32 >= 2000 else 'met with bf16 only' if best_bf16 >= 2000 else 'not met'}**; "
        "BALD (T=20) under 2× one pass — "
        f"**{'met' if all(r['single'] / r['bald_rate'] < 2 for r in rows) else 'not met'}**. "
        "mlcore.score defaults to fp32 (bf16 is opt-in: `precision='bfloat16'`).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; print, do not write the doc")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256, 1024]
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (~40 s to compile)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "nice -n 10 .venv/bin/python bench/scoring.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    result = measure(args)
    body = render(result, command.strip())
    print(body)
    if not (args.quick or args.no_write):
        replace_section(SECTION, body, DOC)
        print(f"\nwrote {SECTION!r} in {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
