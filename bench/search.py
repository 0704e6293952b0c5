"""Similarity search latency: one query against 100,000 and 1,000,000 vectors of dimension 128.

    nice -n 10 .venv/bin/python bench/search.py            # full run (writes docs/benchmarks.md)
    .venv/bin/python bench/search.py --quick --no-write     # 100,000 only, fewer queries

Measures p50/p95 single-query latency (top 10, query → ids and scores) of

* the baseline: NumPy float32 brute force (matrix–vector product + argpartition + sort), the
  obvious implementation, measured in the same run;
* similarity.index.EmbeddingIndex: float16 matrix, torch.mv, top-k, exact float32 re-rank.

and checks that the index's answers are exactly the float64 brute-force top 10 over its stored
vectors for a sample of queries. Goal: p95 < 20 ms at 1,000,000 vectors on this machine.
Vectors are random unit vectors (the worst case: no clustering for any index to exploit);
queries are stored vectors plus noise, so each has a clear nearest neighbour.
Writes the "## Similarity search" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

from mlcore.simulation import cpu_name  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Similarity search"
DIM = 128
K = 10


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: keeps the float64 temporaries small
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def numpy_baseline(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = vectors @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def measure(n: int, n_queries: int, seed: int) -> dict:
    import torch

    from similarity.index import EmbeddingIndex, brute_force_top_k

    vectors = unit_vectors(n, DIM, seed)
    ids = np.arange(n, dtype=np.int64) + 1
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, n, n_queries)
    queries = vectors[picks] + 0.05 * rng.standard_normal((n_queries, DIM)).astype(np.float32)

    t = time.perf_counter()
    index = EmbeddingIndex(ids, vectors)
    build_s = time.perf_counter() - t

    for q in queries[:5]:  # warm-up: page in the matrices, initialise kernels
        numpy_baseline(vectors, q, K)
        index.search(q, K)
    baseline, ours = [], []
    for q in queries:
        t = time.perf_counter()
        numpy_baseline(vectors, q, K)
        baseline.append(time.perf_counter() - t)
        t = time.perf_counter()
        index.search(q, K)
        ours.append(time.perf_counter() - t)

    stored = index.matrix.float().numpy()
    checked = min(20, n_queries)
    exact = sum(
        index.search(q, K).ids.tolist()
        == brute_force_top_k(ids, stored, q, K, normalise_vectors=False).ids.tolist()
        for q in queries[:checked]
    )
    found = sum(int(index.search(q, 1).ids[0]) == int(ids[p]) for q, p in zip(queries, picks, strict=True))
    b50, b95 = percentiles(baseline)
    o50, o95 = percentiles(ours)
    return {
        "n": n,
        "queries": n_queries,
        "baseline_p50": b50,
        "baseline_p95": b95,
        "index_p50": o50,
        "index_p95": o95,
        "speedup_p95": b95 / o95,
        "exact": f"{exact}/{checked}",
        "self_found": f"{found}/{n_queries}",
        "build_s": build_s,
        "memory_mb": index.matrix.numel() * 2 / 1e6,
        "threads": torch.get_num_threads(),
    }


def write_section(body: str) -> None:
    replace_section(SECTION, body, DOC)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 vectors only, 100 queries")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    n_queries = 100 if args.quick else args.queries
    rows = []
    for n in sizes:
        row = measure(n, n_queries, args.seed)
        rows.append(row)
        print(
            f"{n:>9,} vectors: numpy float32 p50 {row['baseline_p50']:.1f} / p95 {row['baseline_p95']:.1f} ms; "
            f"index p50 {row['index_p50']:.1f} / p95 {row['index_p95']:.1f} ms "
            f"({row['speedup_p95']:.1f}× at p95); exact {row['exact']}; self found {row['self_found']}",
            flush=True,
        )
    load = os.getloadavg()
    command = "nice -n 10 .venv/bin/python bench/search.py" + (" --quick" if args.quick else "")
    lines = [
        f"`{command}` — one query at a time, top {K}, dimension {DIM}, random unit vectors "
        f"(no structure to exploit), {n_queries} queries per size after 5 warm-up queries.",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch threads "
        f"{rows[0]['threads']}, load average at the end {load[0]:.1f} (this benchmark itself keeps up to 2 cores busy).",
        "",
        "| vectors | baseline NumPy float32 p50 / p95 | index (float16 + exact re-rank) p50 / p95 | p95 speed-up (baseline ÷ index) | exact top-10 vs float64 | matrix |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['baseline_p50']:.1f} / {r['baseline_p95']:.1f} ms | "
            f"{r['index_p50']:.1f} / {r['index_p95']:.1f} ms | {r['speedup_p95']:.2f}× | "
            f"{r['exact']} | {r['memory_mb']:.0f} MB |"
        )
    big = rows[-1]
    met = big["n"] == 1_000_000 and big["index_p95"] < 20.0
    lines += [
        "",
        f"Goal p95 < 20 ms at 1,000,000 vectors: **{'met' if met else 'not met'}** in this run (p95 "
        f"{big['index_p95']:.1f} ms at {big['n']:,}). The index is exact: "
        "the float16 pass only pre-selects, and every vector within the float16 error margin of the 10th "
        "score is re-scored in float32 (similarity/index.py).",
    ]
    if big["speedup_p95"] < 1.0:
        lines.append(
            f"On this CPU ({cpu_name()}) torch's float16 matrix–vector kernel is slower than NumPy's float32 "
            "product, so the index loses to the baseline; float16 storage only pays where that kernel runs at "
            "memory speed. Exact search reads the whole matrix for every query, so at 1,000,000 × 128 memory "
            "bandwidth sets the floor (the float32 baseline's p50 above); meeting 20 ms at p95 needs fewer bytes "
            "per vector (int8) or an approximate index (e.g. faiss HNSW or IVF)."
        )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(body)
        print(f"wrote {SECTION!r} in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
