"""Similarity quality: held-out agreement of the embedding against the number of similarity votes.

    nice -n 10 .venv/bin/python bench/similarity_quality.py              # full run (writes docs/benchmarks.md)
    .venv/bin/python bench/similarity_quality.py --quick --no-write      # one seed, 200 and 500 votes
    nice -n 10 .venv/bin/python bench/similarity_quality.py --seeds 1    # one seed (half as long)

Synthetic galaxy and nebula cutouts (mlcore.galaxies, 7 hidden classes) and simulated volunteers
(mlcore.galaxies.simulate_answer: a candidate of the comparison's class is chosen with probability
0.9, another with 0.03) answering "which of these 15 are similar?" tasks with random candidates.
For each seed: one SimCLR pretraining on all cutouts (the product's first round), then from it
triplet fine-tuning on 100, 200, 500, 1000 and 2000 votes (mlcore.embedding_train, the product's code).
Every embedding is scored on the same held-out answers (tasks never trained on): pairwise agreement
with its 95 % bootstrap interval over held-out tasks (mlcore.embedding_train.bootstrap_agreement),
against, in the same run, random unit vectors (expected 0.5) and the same network with random
weights (untrained). Writes the "## Similarity quality" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

from mlcore.simulation import cpu_name  # noqa: E402

SECTION = "## Similarity quality"
N_CANDIDATES = 15


def make_answers(classes, n: int, rng: np.random.Generator, first_task: int = 0):
    """n answers, one per task: a random comparison and 15 random other cutouts."""
    from mlcore.embedding_train import Answer
    from mlcore.galaxies import simulate_answer

    answers, tasks = [], []
    ids = np.arange(len(classes))
    for t in range(n):
        comparison = int(rng.integers(len(classes)))
        candidates = rng.choice(ids[ids != comparison], size=N_CANDIDATES, replace=False).tolist()
        chosen = simulate_answer(classes[comparison], [classes[c] for c in candidates], rng)
        answers.append(Answer(comparison, tuple(candidates), frozenset(candidates[p] for p in chosen)))
        tasks.append(first_task + t)
    return answers, tasks


def score(embeddings, answers, tasks, seed: int) -> dict:
    from mlcore.embedding_train import agreement_counts, bootstrap_agreement

    row_of = {i: i for i in range(len(embeddings))}
    return bootstrap_agreement(*agreement_counts(embeddings, row_of, answers), groups=tasks, seed=seed)


def run_seed(seed: int, args, log) -> list[dict]:
    import torch

    from mlcore.embedding_model import EmbeddingConfig, EmbeddingNet, embed, prepare_images
    from mlcore.embedding_train import TrainSettings, train_embedding
    from mlcore.galaxies import generate_cutouts

    batch = generate_cutouts(args.cutouts, seed=seed, size=args.cutout_size)
    images = prepare_images(list(batch.images), args.input_size)
    ids = list(range(len(images)))
    rng = np.random.default_rng(seed + 1000)
    heldout, heldout_tasks = make_answers(batch.classes, args.heldout, rng, first_task=10**6)
    pool, _ = make_answers(batch.classes, max(args.votes), rng)
    config = EmbeddingConfig(input_size=args.input_size)
    rows = []

    random_vectors = np.random.default_rng(seed).normal(size=(len(images), config.embedding_dim))
    random_vectors /= np.linalg.norm(random_vectors, axis=1, keepdims=True)
    rows.append(
        {"model": "random vectors", "votes": 0, **score(random_vectors, heldout, heldout_tasks, seed)}
    )
    torch.manual_seed(seed)
    untrained = EmbeddingNet(config).eval()
    rows.append(
        {
            "model": "untrained network",
            "votes": 0,
            **score(embed(untrained, images, device="cpu"), heldout, heldout_tasks, seed),
        }
    )
    log(f"seed {seed}: random {_cell(rows[0])}, untrained {_cell(rows[1])}")

    started = time.perf_counter()
    pretrained = train_embedding(
        images,
        ids,
        [],
        settings=TrainSettings(
            pretrain_epochs=args.pretrain_epochs,
            finetune_epochs=0,
            seed=seed,
            device="cpu",
            time_budget_s=1e9,
        ),
        config=config,
    )
    state = pretrained.model.state_dict()
    rows.append(
        {
            "model": f"SimCLR pretraining ({_epochs(args.pretrain_epochs)})",
            "votes": 0,
            "train_s": time.perf_counter() - started,
            **score(pretrained.embeddings, heldout, heldout_tasks, seed),
        }
    )
    log(f"seed {seed}: pretrained {_cell(rows[-1])} ({rows[-1]['train_s']:.0f} s)")
    for n_votes in args.votes:
        started = time.perf_counter()
        result = train_embedding(
            images,
            ids,
            pool[:n_votes],
            settings=TrainSettings(
                pretrain_epochs=0,
                finetune_epochs=args.finetune_epochs,
                seed=seed,
                device="cpu",
                time_budget_s=1e9,
            ),
            config=config,
            init_state={k: v.clone() for k, v in state.items()},
        )
        rows.append(
            {
                "model": f"+ fine-tuning ({_epochs(args.finetune_epochs)})",
                "votes": n_votes,
                "train_s": time.perf_counter() - started,
                **score(result.embeddings, heldout, heldout_tasks, seed),
            }
        )
        log(f"seed {seed}: {n_votes} votes → {_cell(rows[-1])} ({rows[-1]['train_s']:.0f} s)")
    for row in rows:
        row["seed"] = seed
    return rows


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _cell(row) -> str:
    return f"**{row['agreement']:.3f}** ({row['low']:.3f}–{row['high']:.3f})"


def table(results: dict[int, list[dict]]) -> str:
    seeds = sorted(results)
    header = "| model | votes | " + " | ".join(f"seed {s}: agreement (95 % interval)" for s in seeds) + " |"
    lines = [header, "| --- | --- | " + " | ".join("---" for _ in seeds) + " |"]
    for i, row in enumerate(results[seeds[0]]):
        cells = " | ".join(_cell(results[s][i]) for s in seeds)
        lines.append(f"| {row['model']} | {row['votes'] or '—'} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed, 200 and 500 votes, fewer epochs")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cutouts", type=int, default=300)
    parser.add_argument("--cutout-size", type=int, default=48)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=200, help="held-out answers (one per task)")
    parser.add_argument("--votes", type=int, nargs="+", default=[100, 200, 500, 1000, 2000])
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.votes, args.pretrain_epochs, args.finetune_epochs = 1, [200, 500], 2, 1
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)))
    started = time.perf_counter()
    results = {seed: run_seed(seed, args, lambda line: print(line, flush=True)) for seed in range(args.seeds)}
    took = time.perf_counter() - started
    command = "nice -n 10 .venv/bin/python bench/similarity_quality.py " + " ".join(argv or sys.argv[1:])
    command = command.replace(" --no-write", "").strip()
    body = "\n".join(
        [
            f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()} ({os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, CPU only, shared with other jobs), Python "
            f"{platform.python_version()}, torch {torch.__version__}; run time {took:.0f} s.",
            "",
            f"{args.cutouts} synthetic cutouts ({args.cutout_size} px, 7 hidden classes, embedded at "
            f"{args.input_size} px), simulated volunteers (hit rate 0.9, false alarms 0.03) answering tasks "
            f"of 15 random candidates. Every row is scored on the same {args.heldout} held-out answers (one per "
            "task, never trained on): pairwise agreement, the share of (chosen, not chosen) pairs the "
            "embedding orders like the volunteer, with its 95 % bootstrap interval over held-out tasks. "
            "Baselines in the same run: random unit vectors (expected 0.5) and the same network with random "
            f"weights. Fine-tuning starts from the same SimCLR pretraining ({_epochs(args.pretrain_epochs)}) "
            f"for every number of votes, {_epochs(args.finetune_epochs)} each (mlcore.embedding_train, the "
            "product's code with smaller images and fewer epochs than a round's 64 px, 15 + 8 epochs).",
            "",
            table(results),
            "",
        ]
    )
    print(body)
    if not args.no_write:
        replace_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
