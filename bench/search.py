"""Similarity search at 100,000 and 1,000,000 vectors of dimension 128: exact vs approximate.

    nice -n 10 .venv/bin/python bench/search.py            # full run (writes docs/benchmarks.md)
    .venv/bin/python bench/search.py --quick --no-write     # 100,000 only, fewer queries

For each size and data set, the same queries one at a time (top 15, query → ids and exact scores):

* exact: similarity.index.EmbeddingIndex as used below the threshold (float16 matrix, torch.mv,
  exact float32 re-rank of everything near the 15th score) — the baseline, measured in the same run;
* approximate: the same index with an attached faiss IVF (8-bit scalar quantiser, 4·√N lists,
  default nprobe) whose RERANK_CANDIDATES candidates are re-scored exactly in float32.

Both are checked against exact float32 search over the ORIGINAL float32 vectors (before the index
stores them in float16): recall@15 = |returned ∩ true top 15| / 15, averaged over the queries.

Data sets:
(a) random unit vectors — no structure for an IVF to exploit (its worst case);
(b) trained-embedding structure — BASE_GALAXIES synthetic galaxies (mlcore.galaxies, 32 px) embedded by
    the embedding network after a short SimCLR pre-training (PRETRAIN_S seconds, mlcore.embedding_train);
    N vectors are then drawn by picking one of those embeddings at random and adding Gaussian noise
    whose norm is about the median nearest-neighbour distance among them, re-normalised. Queries are
    fresh draws of the same kind (not stored).

Also the crossover: exact vs approximate p95 at smaller N on (b), and an nprobe sweep at 1,000,000 on
(b). Goals: p95 < 5 ms per query at 1,000,000 vectors, recall@15 ≥ 0.95 on (b), build ≤ 120 s.
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
K = 15
BASE_GALAXIES = 10_000
PRETRAIN_IMAGES = 2_000
GALAXY_SIZE = 32
PRETRAIN_S = 30.0
CROSSOVER_SIZES = (5_000, 10_000, 20_000, 50_000)
NPROBE_SWEEP = (16, 32, 64, 128)
WARM_UP = 20


def unit(block: np.ndarray) -> np.ndarray:
    return (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32)


def random_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: keeps the temporaries small
        out[start : start + 100_000] = unit(
            rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        )
    return out


def galaxy_embeddings(
    seed: int, n_base: int = BASE_GALAXIES, pretrain_s: float = PRETRAIN_S
) -> tuple[np.ndarray, dict]:
    """Unit embeddings of BASE_GALAXIES synthetic galaxies by a briefly pre-trained network."""
    import torch

    from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet, embed, prepare_images
    from mlcore.embedding_train import TrainSettings, pretrain_simclr
    from mlcore.galaxies import generate_cutouts

    t = time.perf_counter()
    batch = generate_cutouts(n_base, seed=seed, size=GALAXY_SIZE)
    images = prepare_images(list(batch.images), GALAXY_SIZE)
    t_gen = time.perf_counter() - t
    torch.manual_seed(seed)
    model = EmbeddingNet(EmbeddingConfig(input_size=GALAXY_SIZE))
    settings = TrainSettings(pretrain_epochs=50, time_budget_s=pretrain_s, seed=seed)
    t = time.perf_counter()
    losses = pretrain_simclr(
        model,
        images[:PRETRAIN_IMAGES],
        epochs=settings.pretrain_epochs,
        settings=settings,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
    )
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    vectors = embed(model, images, device="cpu", symmetrize=False)
    t_embed = time.perf_counter() - t
    return vectors, {
        "generate_s": t_gen,
        "pretrain_s": t_train,
        "epochs": len(losses),
        "embed_s": t_embed,
        "classes": len(set(batch.classes)),
        "n_base": n_base,
    }


def nn_distance(base: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Median distance from a base vector to its nearest other base vector."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(base), min(sample, len(base)), replace=False)
    sims = base[rows] @ base.T
    sims[np.arange(len(rows)), rows] = -np.inf
    best = sims.max(axis=1)
    return float(np.median(np.sqrt(np.maximum(0.0, 2 - 2 * best))))


def structured_vectors(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    sigma = noise / np.sqrt(base.shape[1])  # per component: the noise vector's norm is about `noise`
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        picks = rng.integers(0, len(base), m)
        out[start : start + m] = unit(
            base[picks] + sigma * rng.standard_normal((m, base.shape[1]), dtype=np.float32)
        )
    return out


def true_top_k(vectors: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    """Exact float32 top k over the original vectors (row numbers)."""
    scores = vectors @ query
    top = np.argpartition(-scores, k)[:k]
    return set(top.tolist())


def pct(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def time_queries(index, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    for q in queries[:WARM_UP]:  # warm-up: page in the matrices and the IVF lists, initialise kernels
        index.search(q, K)
    times, answers = [], []
    for q in queries:
        t = time.perf_counter()
        result = index.search(q, K)
        times.append(time.perf_counter() - t)
        answers.append(result.ids)
    return times, answers


def recall(answers: list[np.ndarray], truths: list[set[int]], ids: np.ndarray) -> float:
    # ids are 1..N, rows 0..N-1: the row of id i is i - 1.
    return float(
        np.mean(
            [len({int(a) - 1 for a in ans} & truth) / K for ans, truth in zip(answers, truths, strict=True)]
        )
    )


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, sweep: bool = False) -> dict:
    from similarity.index import EmbeddingIndex

    n = len(vectors)
    ids = np.arange(n, dtype=np.int64) + 1
    truths = [true_top_k(vectors, q, K) for q in queries]
    index = EmbeddingIndex(ids, vectors)
    index.approx_min = 0
    exact_times, exact_answers = time_queries(index, queries)
    t = time.perf_counter()
    ivf = index.build_ivf()
    build_s = time.perf_counter() - t
    approx_times, approx_answers = time_queries(index, queries)
    e50, e95 = pct(exact_times)
    a50, a95 = pct(approx_times)
    row = {
        "data": name,
        "n": n,
        "exact_p50": e50,
        "exact_p95": e95,
        "approx_p50": a50,
        "approx_p95": a95,
        "speedup_p95": e95 / a95,
        "exact_recall": recall(exact_answers, truths, ids),
        "approx_recall": recall(approx_answers, truths, ids),
        # What the approximation alone loses: recall against today's exact index's own answers.
        "approx_vs_exact": float(
            np.mean(
                [
                    len(set(a.tolist()) & set(e.tolist())) / K
                    for a, e in zip(approx_answers, exact_answers, strict=True)
                ]
            )
        ),
        "build_s": build_s,
        "nlist": ivf.nlist,
        "nprobe": ivf.nprobe,
        "matrix_mb": index.matrix.numel() * 2 / 1e6,
        "ivf_mb": len(ivf.to_bytes()) / 1e6,
        "sweep": [],
    }
    if sweep:
        default = ivf.nprobe
        for nprobe in NPROBE_SWEEP:
            ivf.nprobe = nprobe
            times, answers = time_queries(index, queries)
            vs_exact = np.mean(
                [
                    len(set(a.tolist()) & set(e.tolist())) / K
                    for a, e in zip(answers, exact_answers, strict=True)
                ]
            )
            row["sweep"].append((nprobe, *pct(times), recall(answers, truths, ids), float(vs_exact)))
        ivf.nprobe = default
    print(
        f"{name} {n:>9,}: exact p50 {e50:.2f} / p95 {e95:.2f} ms (recall {row['exact_recall']:.3f}); "
        f"IVF+rerank p50 {a50:.2f} / p95 {a95:.2f} ms (recall {row['approx_recall']:.3f}, nlist {ivf.nlist}, "
        f"nprobe {ivf.nprobe}); build {build_s:.1f} s; sweep {row['sweep']}",
        flush=True,
    )
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 vectors only, 50 queries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    import torch

    from similarity.index import APPROX_MIN_N, RERANK_CANDIDATES

    started = time.perf_counter()
    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    n_queries = 50 if args.quick else args.queries
    base, made = galaxy_embeddings(args.seed, *((2000, 5.0) if args.quick else ()))
    noise = nn_distance(base)
    print(f"galaxy embeddings: {made}; median nearest-neighbour distance {noise:.3f}", flush=True)
    rows, crossover = [], []
    for n in sizes:
        vectors = random_vectors(n + n_queries, args.seed + n)
        rows.append(measure("random", vectors[:n], vectors[n:]))
        del vectors
        vectors = structured_vectors(base, n + n_queries, noise, args.seed + n + 1)
        rows.append(measure("galaxies", vectors[:n], vectors[n:], sweep=n == sizes[-1]))
        del vectors
    if not args.quick:
        for n in CROSSOVER_SIZES:
            vectors = structured_vectors(base, n + n_queries, noise, args.seed + n + 2)
            crossover.append(measure("galaxies", vectors[:n], vectors[n:]))
    total_s = time.perf_counter() - started
    load = os.getloadavg()

    command = "nice -n 10 .venv/bin/python bench/search.py" + (" --quick" if args.quick else "")
    lines = [
        f"`{command}` — one query at a time, top {K}, dimension {DIM}, {n_queries} queries per size and data set "
        f"(not stored vectors) after {WARM_UP} warm-up queries; {total_s:.0f} s in all.",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}. The machine is "
        f"shared with other jobs right now: load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(1 / 5 / 15 min), so the percentiles carry their noise.",
        "",
        f"Recall@{K} is against exact float32 search over the **original float32 vectors** (the index stores "
        "float16). Exact = today's EmbeddingIndex (the baseline, same run); approximate = faiss IVF, 8-bit "
        f"scalar quantiser, {RERANK_CANDIDATES} candidates re-scored exactly in float32 (similarity/index.py).",
        "Data: *random* = random unit vectors (an IVF's worst case); *galaxies* = "
        f"{made['n_base']:,} synthetic galaxies ({made['classes']} classes, {GALAXY_SIZE} px) embedded by the "
        f"embedding network after {made['pretrain_s']:.0f} s of SimCLR pre-training ({made['epochs']} epochs on "
        f"{PRETRAIN_IMAGES:,} of them; not trained on volunteers' answers), then N vectors drawn as one of those embeddings "
        f"plus Gaussian noise of norm ≈ {noise:.3f} (their median nearest-neighbour distance), re-normalised.",
        "",
        "| data | vectors | exact p50 / p95 | IVF + re-rank p50 / p95 | p95 ratio exact ÷ IVF | recall@15 exact / IVF "
        "(vs float32 originals) | IVF recall@15 vs exact index | IVF build | lists / probed | memory: float16 matrix + IVF |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows + crossover:
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['exact_p50']:.2f} / {r['exact_p95']:.2f} ms | "
            f"{r['approx_p50']:.2f} / {r['approx_p95']:.2f} ms | {r['speedup_p95']:.1f}× | "
            f"{r['exact_recall']:.3f} / {r['approx_recall']:.3f} | {r['approx_vs_exact']:.3f} | {r['build_s']:.1f} s | {r['nlist']} / {r['nprobe']} | "
            f"{r['matrix_mb']:.0f} + {r['ivf_mb']:.0f} MB |"
        )
    sweep_row = next((r for r in rows if r["sweep"]), None)
    if sweep_row:
        lines += [
            "",
            f"nprobe at {sweep_row['n']:,} galaxy vectors ({sweep_row['nlist']} lists): "
            + "; ".join(
                f"{p}: p95 {b:.2f} ms, recall {c:.3f} (vs exact index {d:.3f})"
                for p, _, b, c, d in sweep_row["sweep"]
            )
            + ".",
        ]
    big = {r["data"]: r for r in rows if r["n"] == sizes[-1]}
    g = big["galaxies"]
    goals = [
        (
            "p95 < 5 ms per query at 1,000,000 (galaxies)",
            g["n"] == 1_000_000 and g["approx_p95"] < 5.0,
            f"{g['approx_p95']:.2f} ms",
        ),
        (
            "p95 < 5 ms per query at 1,000,000 (random)",
            big["random"]["n"] == 1_000_000 and big["random"]["approx_p95"] < 5.0,
            f"{big['random']['approx_p95']:.2f} ms",
        ),
        (
            "recall@15 ≥ 0.95 (galaxies)",
            g["n"] == 1_000_000 and g["approx_recall"] >= 0.95,
            f"{g['approx_recall']:.3f}",
        ),
        (
            "recall@15 ≥ 0.95 (random)",
            big["random"]["n"] == 1_000_000 and big["random"]["approx_recall"] >= 0.95,
            f"{big['random']['approx_recall']:.3f}",
        ),
        (
            "build ≤ 120 s at 1,000,000",
            g["n"] == 1_000_000 and max(g["build_s"], big["random"]["build_s"]) <= 120,
            f"{max(g['build_s'], big['random']['build_s']):.0f} s",
        ),
    ]
    lines += [
        "",
        "Goals at 1,000,000 in this run: "
        + "; ".join(f"{t}: **{'met' if ok else 'not met'}** ({v})" for t, ok, v in goals)
        + ".",
    ]
    if crossover:
        galaxy_rows = sorted((r for r in crossover + rows if r["data"] == "galaxies"), key=lambda r: r["n"])
        slower = [r["n"] for r in galaxy_rows if r["exact_p95"] > r["approx_p95"]]
        lines.append(
            "Crossover (galaxies): exact search's p95 is above the IVF's from "
            + (f"{min(slower):,} vectors on" if slower else "none of the sizes measured")
            + " in this run; exact p50 by size: "
            + ", ".join(f"{r['n']:,}: {r['exact_p50']:.2f} ms" for r in galaxy_rows)
            + f". Below the threshold (similarity.index.APPROX_MIN_N = {APPROX_MIN_N:,}, "
            "SKYVOTE_SIMILARITY_APPROX_MIN) search stays exact, which never misses; it is set where exact search "
            "became clearly slower than the IVF in these runs (its jump in median comes from torch's two-thread "
            "matrix–vector product on a busy machine and from re-scoring the near-ties of a crowded embedding)."
        )
    lines += [
        "Reading the recall columns: on the galaxy embeddings the IVF finds what today's exact index finds "
        "(its recall against the exact index is the cost of the approximation), and both miss the same few "
        "neighbours of the float32 originals: the index stores float16 vectors, and crowded neighbours "
        "(cosines within about 10⁻³ of each other) swap places after rounding. Random unit vectors in 128 "
        "dimensions have no near neighbours at all (a random query's 15th neighbour is barely closer than "
        "an average vector), which no list-based index can find without scanning most lists; real "
        "embeddings are not like that, so the goal is judged on the galaxy embeddings.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        replace_section(SECTION, body, DOC)
        print(f"wrote {SECTION!r} in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
