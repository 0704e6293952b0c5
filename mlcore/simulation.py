"""Active-learning simulation on synthetic ZTF-like triplets (used by bench/active_learning.py and
``python -m mlcore simulate``).

One run: a fixed synthetic pool and test set; start from ``initial_labels`` random labels; each
round train (warm-started from the previous round's weights), measure test ROC AUC, score the
unlabelled pool and acquire ``batch_size`` more labels with the strategy; stop at ``max_labels``
(or, optionally, once the test AUC reached ``stop_at_auc``). Labels are either the ground truth or
P(real) aggregated by Dawid–Skene from simulated volunteers (mlcore.crowd).

Two pools (``SimulationConfig.pool``, see ``POOLS``): "balanced" — half real, uniform subtypes, the
same hard share in both classes (the original setting, same data for the same seeds) — and
"realistic" — 10 % real, the bogus subtypes at the ZTF labelling campaign's shares, half of the reals
faint (SNR 3–6, near the detection limit). Pool and test set are drawn alike.

The training, scoring and acquisition calls are exactly the library's (train_classifier, score,
and select_batch, i.e. the first k of mlcore.acquisition.rank_pool's order, which is the web
learning loop's ranking), so the simulation measures what the web learning loop does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlcore.acquisition import STRATEGY_NAMES, parse_strategy, select_batch

__all__ = [
    "POOLS",
    "pool_options",
    "average_precision",
    "SimulationConfig",
    "RunResult",
    "simulate",
    "simulate_many",
    "prepare_data",
    "labels_to_reach",
    "summarise",
    "render_markdown",
    "run_and_report",
    "report",
    "load_results",
]


# Generator options per pool (mlcore.synth.generate_triplets; hard_fraction comes from the config).
# "realistic": the raw ZTF candidate stream is dominated by bogus detections (Duev et al. 2019, MNRAS 489,
# 3582, the braai paper); 10 % real (bogus:real 9:1) is our assumption, on the easy side; bogus subtypes at the labelling campaign's shares (mlcore.synth.ZTF_BOGUS_WEIGHTS); half
# of the reals faint, near the 5σ limit, since most transients are found close to it.
POOLS: dict[str, dict] = {
    "balanced": {"real_fraction": 0.5, "hard_fraction_real": None, "subtype_weights": None},
    "realistic": {"real_fraction": 0.1, "hard_fraction_real": 0.5, "subtype_weights": "ztf"},
}


def pool_options(pool: str) -> dict:
    """generate_triplets keyword arguments (besides n, seed, hard_fraction) for a pool name."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")
    options = dict(POOLS[pool])
    if options["subtype_weights"] == "ztf":
        from mlcore.synth import ZTF_BOGUS_WEIGHTS

        options["subtype_weights"] = ZTF_BOGUS_WEIGHTS
    return options


@dataclass(frozen=True)
class SimulationConfig:
    pool_size: int = 20_000
    test_size: int = 5_000
    hard_fraction: float = 0.3  # share of deliberately ambiguous triplets, pool and test alike
    initial_labels: int = 100
    batch_size: int = 100
    max_labels: int = 3_000
    strategies: tuple[str, ...] = ("random", "entropy", "bald", "bald+diversity")
    seeds: tuple[int, ...] = (0, 1, 2)
    label_source: str = "truth"  # or "crowd": Dawid–Skene P(real) from votes_per_item volunteers
    votes_per_item: int = 5
    # Each round scores a random subset of the unlabelled pool (as Gal et al. 2017 do), which bounds
    # the cost of a round; None scores the whole pool.
    candidates_per_round: int | None = 2_000
    mc_samples: int = 20
    diversity_top_m: int = 500
    exploration: float = 0.0
    first_round_steps: int = 150  # gradient steps when training from scratch on the initial labels
    steps_per_round: int = 25  # gradient steps per later round, warm-started from the previous weights
    train_batch_size: int = 64
    learning_rate: float = 1e-3
    precision: str = "float32"
    stop_at_auc: float | None = None
    targets: tuple[float, ...] = (0.98, 0.99)
    data_seed: int = 2024
    pool: str = "balanced"  # a key of POOLS

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}; choose from {', '.join(POOLS)}")
        unknown = [s for s in self.strategies if s not in STRATEGY_NAMES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)}")
        if self.label_source not in {"truth", "crowd"}:
            raise ValueError(f"label_source must be 'truth' or 'crowd', got {self.label_source!r}")
        if not 0 < self.initial_labels <= self.max_labels <= self.pool_size:
            raise ValueError("need 0 < initial_labels ≤ max_labels ≤ pool_size")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    strategy: str
    seed: int
    label_source: str
    n_labels: list[int] = field(default_factory=list)
    test_auc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    label_accuracy: float | None = None  # share of acquired soft labels on the right side of 0.5
    pool: str = "balanced"
    test_ap: list[float] = field(default_factory=list)  # average precision for the real class per round

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SimulationData:
    pool: np.ndarray  # preprocessed (N, 3, 63, 63) float32
    pool_truth: np.ndarray
    test: np.ndarray
    test_truth: np.ndarray
    seconds: float


def _generate_prepared(n: int, seed: int, hard_fraction: float, chunk: int = 2_000, pool: str = "balanced"):
    """Synthetic triplets, preprocessed chunk by chunk so raw and prepared copies never coexist in full."""
    from mlcore.prep import preprocess_batch
    from mlcore.synth import generate_triplets

    options = pool_options(pool)
    images = np.empty((n, 3, 63, 63), dtype=np.float32)
    labels = np.empty(n, dtype=np.int8)
    for i, start in enumerate(range(0, n, chunk)):
        size = min(chunk, n - start)
        batch = generate_triplets(size, seed=seed * 10_000 + i, hard_fraction=hard_fraction, **options)
        images[start : start + size] = preprocess_batch(batch.images)
        labels[start : start + size] = batch.labels
    return images, labels


def prepare_data(config: SimulationConfig) -> SimulationData:
    started = time.perf_counter()
    pool, pool_truth = _generate_prepared(
        config.pool_size, config.data_seed, config.hard_fraction, pool=config.pool
    )
    test, test_truth = _generate_prepared(
        config.test_size, config.data_seed + 1, config.hard_fraction, pool=config.pool
    )
    return SimulationData(pool, pool_truth, test, test_truth, time.perf_counter() - started)


def _train_round(images, targets, init_model, steps: int, config: SimulationConfig, seed: int):
    from mlcore.data import TripletArrayDataset
    from mlcore.train import TrainConfig, train_classifier

    epochs = max(1, math.ceil(steps * config.train_batch_size / len(targets)))
    train_config = TrainConfig(
        epochs=epochs,
        batch_size=config.train_batch_size,
        learning_rate=config.learning_rate,
        val_fraction=0.0,  # every label is precious: no held-out split inside the loop
        seed=seed,
        patience=epochs + 1,
        restore_best=False,
        precision=config.precision,
    )
    dataset = TripletArrayDataset(images, preprocessed=True)
    result = train_classifier(
        dataset, targets, init_model=init_model, train_config=train_config, data_hash=""
    )
    return result.model


def _one_run(data: SimulationData, soft_labels: np.ndarray, strategy: str, seed: int, config: SimulationConfig,
             progress: Callable[[str], None] | None) -> RunResult:  # fmt: skip
    from mlcore.data import TripletArrayDataset
    from mlcore.metrics import roc_auc
    from mlcore.score import score

    started = time.perf_counter()
    rng = np.random.default_rng([config.data_seed, seed])
    n_pool = len(data.pool)
    labeled = rng.choice(n_pool, size=config.initial_labels, replace=False)
    is_labeled = np.zeros(n_pool, dtype=bool)
    is_labeled[labeled] = True
    base, diversity = parse_strategy(strategy)
    test_ds = TripletArrayDataset(data.test, preprocessed=True)
    run = RunResult(strategy=strategy, seed=seed, label_source=config.label_source, pool=config.pool)
    model = None
    round_no = 0
    while True:
        steps = config.first_round_steps if model is None else config.steps_per_round
        model = _train_round(
            data.pool[labeled], soft_labels[labeled], model, steps, config, seed * 1000 + round_no
        )
        p_test = score(model, test_ds, 512, features=False, precision=config.precision).p_real
        auc = roc_auc(data.test_truth, p_test)
        run.n_labels.append(len(labeled))
        run.test_auc.append(auc)
        run.test_ap.append(average_precision(data.test_truth, p_test))
        if progress is not None:
            progress(
                f"{config.label_source} {strategy} seed {seed}: {len(labeled)} labels → test AUC {auc:.4f}"
            )
        reached = config.stop_at_auc is not None and auc >= config.stop_at_auc
        if reached or len(labeled) >= config.max_labels:
            break
        unlabeled = np.flatnonzero(~is_labeled)
        if config.candidates_per_round and len(unlabeled) > config.candidates_per_round:
            candidates = np.sort(rng.choice(unlabeled, size=config.candidates_per_round, replace=False))
        else:
            candidates = unlabeled
        k = min(config.batch_size, config.max_labels - len(labeled), len(candidates))
        if base == "random" and not diversity:  # nothing to score
            picked = select_batch(
                "random", k, n_pool=len(candidates), exploration=config.exploration, rng=rng
            )
        else:
            result = score(
                model,
                TripletArrayDataset(data.pool[candidates], preprocessed=True),
                512,
                mc_samples=config.mc_samples if base == "bald" else 0,
                features=diversity,
                seed=int(rng.integers(2**31)),
                precision=config.precision,
            )
            labeled_features = None
            if diversity:
                labeled_features = score(
                    model,
                    TripletArrayDataset(data.pool[labeled], preprocessed=True),
                    512,
                    precision=config.precision,
                ).features
            picked = select_batch(
                strategy,
                k,
                p_real=result.p_real,
                bald_scores=result.bald,
                features=result.features,
                labeled_features=labeled_features,
                top_m=config.diversity_top_m,
                exploration=config.exploration,
                rng=rng,
            )
        new = candidates[picked.indices]
        is_labeled[new] = True
        labeled = np.concatenate([labeled, new])
        round_no += 1
    hard_soft = soft_labels[labeled] >= 0.5
    run.label_accuracy = float(np.mean(hard_soft == (data.pool_truth[labeled] == 1)))
    run.seconds = time.perf_counter() - started
    return run


def average_precision(y_true, p_real) -> float:
    """Average precision of the real class (area under precision–recall, step-wise: the mean of the
    precision at each real's rank; tied scores count as one threshold). What matters when reals are rare."""
    y = np.asarray(y_true).reshape(-1) >= 0.5
    p = np.asarray(p_real, dtype=np.float64).reshape(-1)
    if len(y) != len(p) or not y.any():
        raise ValueError("need as many scores as labels and at least one real")
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p) - 1]  # end of each group of tied scores
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / y.sum()
    return float(np.sum(precision * recall_gain))


def soft_labels_for(config: SimulationConfig, data: SimulationData) -> np.ndarray:
    """The labels a run trains on: the truth, or Dawid–Skene P(real) from simulated volunteers."""
    if config.label_source == "crowd":
        from mlcore.crowd import aggregate_soft_labels

        soft = aggregate_soft_labels(
            data.pool_truth.astype(np.int8), config.votes_per_item, seed=config.data_seed
        )
        return np.asarray(soft, dtype=np.float64)
    return data.pool_truth.astype(np.float64)


def simulate(
    config: SimulationConfig,
    progress: Callable[[str], None] | None = None,
    data: SimulationData | None = None,
) -> list[RunResult]:
    """Run every (strategy, seed) of the config in this process; returns one RunResult per run."""
    data = data or prepare_data(config)
    soft = soft_labels_for(config, data)
    return [
        _one_run(data, soft, strategy, seed, config, progress)
        for seed in config.seeds
        for strategy in config.strategies
    ]


# Filled by the parent before forking workers: (data, soft labels) per config index, shared copy-on-write.
_SHARED: dict[int, tuple[SimulationData, np.ndarray]] = {}


def _stderr_log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _worker(task) -> tuple[int, RunResult]:
    import torch

    index, config, strategy, seed, threads, verbose = task
    torch.set_num_threads(threads)
    data, soft = _SHARED[index]
    return index, _one_run(data, soft, strategy, seed, config, _stderr_log if verbose else None)


def simulate_many(
    configs: Sequence[SimulationConfig],
    *,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
) -> list[list[RunResult]]:
    """Run several configs; with jobs > 1 the (config, seed, strategy) runs go to forked single-thread workers."""
    datasets: list[tuple[SimulationData, np.ndarray]] = []
    cache: list[tuple[SimulationConfig, SimulationData]] = []
    for config in configs:
        data = next((d for c, d in cache if _same_data(c, config)), None)
        if data is None:
            if log:
                log(f"generating {config.pool_size} pool + {config.test_size} test triplets …")
            data = prepare_data(config)
            cache.append((config, data))
            if log:
                log(f"data ready in {data.seconds:.1f}s")
        datasets.append((data, soft_labels_for(config, data)))
    results: list[list[RunResult]] = [[] for _ in configs]
    if jobs <= 1:
        for index, config in enumerate(configs):
            data, soft = datasets[index]
            for seed in config.seeds:
                for strategy in config.strategies:
                    results[index].append(_one_run(data, soft, strategy, seed, config, log))
        return results

    import multiprocessing

    _SHARED.clear()
    _SHARED.update(enumerate(datasets))
    tasks = [
        (index, config, strategy, seed, 1, log is not None)
        for index, config in enumerate(configs)
        for seed in config.seeds
        for strategy in config.strategies
    ]
    # Seed by seed (a run cut short still has whole seeds), slow strategies first within a seed, so the
    # last task to finish is a short one.
    tasks.sort(key=lambda t: (t[3], "random" in t[2], t[1].label_source))
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for index, run in pool.imap_unordered(_worker, tasks):
            results[index].append(run)
    _SHARED.clear()
    order = {
        (s, r): i for i, (s, r) in enumerate((s, r) for s in configs[0].seeds for r in configs[0].strategies)
    }
    for runs in results:
        runs.sort(key=lambda run: order.get((run.seed, run.strategy), 0))
    return results


def labels_to_reach(run: RunResult, target: float) -> int | None:
    """Fewest labels at which the run's test AUC was ≥ target (None if it never was)."""
    for n, auc in zip(run.n_labels, run.test_auc, strict=True):
        if auc >= target:
            return n
    return None


def summarise(runs: Sequence[RunResult], targets: Sequence[float]) -> dict:
    """Per strategy: labels to reach each target (per seed, median), final AUC, time; plus seed-mean curves."""
    by_strategy: dict[str, list[RunResult]] = {}
    for run in runs:
        by_strategy.setdefault(run.strategy, []).append(run)
    summary = {}
    for strategy, group in by_strategy.items():
        entry = {
            "seeds": [r.seed for r in group],
            "reach": {},
            "seconds": float(sum(r.seconds for r in group)),
        }
        for target in targets:
            per_seed = [labels_to_reach(r, target) for r in group]
            reached = [n for n in per_seed if n is not None]
            median = float(np.median(reached)) if len(reached) == len(per_seed) else None
            entry["reach"][str(target)] = {"per_seed": per_seed, "median": median}
        # Seed-mean learning curve on the label counts all seeds share (runs may stop early).
        shortest = min(len(r.n_labels) for r in group)
        entry["curve_n_labels"] = group[0].n_labels[:shortest]
        aucs = np.array([r.test_auc[:shortest] for r in group])
        entry["curve_mean_auc"] = aucs.mean(axis=0).tolist()
        entry["curve_std_auc"] = aucs.std(axis=0).tolist()
        entry["final_auc_mean"] = float(np.mean([r.test_auc[-1] for r in group]))
        aps = [r.test_ap[-1] for r in group if r.test_ap]
        entry["final_ap_mean"] = float(np.mean(aps)) if len(aps) == len(group) else None
        entry["max_labels"] = max(r.n_labels[-1] for r in group)
        accuracies = [r.label_accuracy for r in group if r.label_accuracy is not None]
        entry["label_accuracy"] = float(np.mean(accuracies)) if accuracies else None
        summary[strategy] = entry
    return summary


def _same_data(a: SimulationConfig, b: SimulationConfig) -> bool:
    keys = ("pool_size", "test_size", "hard_fraction", "data_seed", "pool")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def _format_reach(entry: dict, target: float, cap: int) -> str:
    reach = entry["reach"][str(target)]
    per_seed = ", ".join(str(n) if n is not None else f">{cap}" for n in reach["per_seed"])
    median = f"{reach['median']:.0f}" if reach["median"] is not None else f">{cap}"
    return f"{median} ({per_seed})"


def _ratio_vs_random(summary: dict, strategy: str, target: float, cap: int) -> str:
    """How many times fewer labels than random (median over seeds); '≥' when random never got there."""
    if strategy == "random" or "random" not in summary:
        return "—"
    mine = summary[strategy]["reach"][str(target)]["median"]
    theirs = summary["random"]["reach"][str(target)]["median"]
    if mine is None:
        return "n/a (not reached)"
    if theirs is None:
        return f"≥ {cap / mine:.1f}×"
    return f"{theirs / mine:.1f}×"


def render_markdown(results: list[tuple[SimulationConfig, dict]]) -> str:
    """Tables of labels needed per strategy and label source (what docs/benchmarks.md shows)."""
    lines = []
    for config, summary in results:
        cap = config.max_labels
        with_ap = any(e.get("final_ap_mean") is not None for e in summary.values())
        lines.append(
            f"**{'Realistic pool, l' if config.pool == 'realistic' else 'L'}abels: {'ground truth' if config.label_source == 'truth' else f'Dawid–Skene P(real) from {config.votes_per_item} simulated volunteers'}** "
            f"(median over seeds {', '.join(map(str, config.seeds))}; per-seed values in brackets)"
        )
        lines.append("")
        header = "| strategy |"
        rule = "| --- |"
        for target in config.targets:
            header += f" labels to AUC {target} | vs random |"
            rule += " ---: | ---: |"
        header += " mean test AUC at the last round |"
        rule += " ---: |"
        if with_ap:
            header += " mean test AP (real) at the last round |"
            rule += " ---: |"
        header += " labels at the last round | run time (s, all seeds) |"
        rule += " ---: | ---: |"
        lines += [header, rule]
        for strategy, entry in summary.items():
            row = f"| {strategy} |"
            for target in config.targets:
                row += f" {_format_reach(entry, target, cap)} | {_ratio_vs_random(summary, strategy, target, cap)} |"
            row += f" {entry['final_auc_mean']:.4f} |"
            if with_ap:
                ap = entry.get("final_ap_mean")
                row += f" {ap:.4f} |" if ap is not None else " — |"
            row += f" {entry['max_labels']} | {entry['seconds']:.0f} |"
            lines.append(row)
        if config.label_source == "crowd":
            accuracy = [e["label_accuracy"] for e in summary.values() if e["label_accuracy"] is not None]
            if accuracy:
                lines.append("")
                lines.append(
                    f"Aggregated crowd labels agreed with the truth (P(real) on the right side of 0.5) for "
                    f"{100 * min(accuracy):.1f}–{100 * max(accuracy):.1f} % of the labelled triplets, depending on strategy."
                )
        lines.append("")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (benchmarks record it with their numbers)."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_and_report(
    configs: Sequence[SimulationConfig],
    *,
    json_path: str | None = None,
    plot_path: str | None = None,
    log: Callable[[str], None] | None = None,
    command: str = "",
    jobs: int = 1,
) -> str:
    """Run each config (sharing generated data where possible); write JSON/plot; return the markdown tables."""
    import os

    import torch

    started = time.perf_counter()
    per_config = simulate_many(configs, jobs=jobs, log=log)
    elapsed = time.perf_counter() - started
    environment = {
        "torch": torch.__version__,
        "threads": 1 if jobs > 1 else torch.get_num_threads(),
        "jobs": jobs,
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "wall_seconds": round(elapsed, 1),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),  # UTC day the run finished
        "command": command,
    }
    return report(configs, per_config, environment, json_path=json_path, plot_path=plot_path)


def report(
    configs: Sequence[SimulationConfig],
    per_config: Sequence[Sequence[RunResult]],
    environment: dict,
    *,
    json_path: str | None = None,
    plot_path: str | None = None,
) -> str:
    """Summaries → markdown tables (returned), optional JSON with every run, optional learning-curve figure."""
    import json
    import os

    results = [
        (config, summarise(runs, config.targets)) for config, runs in zip(configs, per_config, strict=True)
    ]
    markdown = render_markdown(results)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as handle:
            json.dump(
                {
                    "environment": environment,
                    "configs": [c.to_dict() for c in configs],
                    "summaries": [s for _, s in results],
                    "runs": [r.to_dict() for runs in per_config for r in runs],
                },
                handle,
                indent=1,
            )
    if plot_path:
        from mlcore.plots import learning_curve_panels, save_figure

        panels = {}
        for config, summary in results:
            title = (
                "ground-truth labels"
                if config.label_source == "truth"
                else f"crowd labels ({config.votes_per_item} votes)"
            )
            if config.pool != "balanced":
                title = f"{config.pool} pool, {title}"
            panels[title] = {
                name: (e["curve_n_labels"], e["curve_mean_auc"], e["curve_std_auc"])
                for name, e in summary.items()
            }
        low = min(min(e["curve_mean_auc"]) for _, s in results for e in s.values())
        fig = learning_curve_panels(panels, targets=configs[0].targets, ylim=(max(0.5, low - 0.01), 1.0))
        save_figure(fig, plot_path)
    jobs = environment.get("jobs", 1)
    parallel = (
        f"{jobs} worker processes × 1 torch thread" if jobs > 1 else f"{environment['threads']} torch threads"
    )
    return markdown + f"\nWall time {environment['wall_seconds'] / 60:.1f} min ({parallel}).\n"


def load_results(json_path: str, targets: Sequence[float] | None = None):
    """Read a JSON written by run_and_report → (configs, runs per config, environment); targets may be changed."""
    import json

    with open(json_path) as handle:
        saved = json.load(handle)
    configs = []
    for raw in saved["configs"]:
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        if targets is not None:
            raw["targets"] = tuple(targets)
        configs.append(SimulationConfig(**raw))
    per_config: list[list[RunResult]] = [[] for _ in configs]
    for raw in saved["runs"]:
        raw.setdefault("pool", "balanced")
        index = next(
            i
            for i, c in enumerate(configs)
            if c.label_source == raw["label_source"] and c.pool == raw["pool"]
        )
        per_config[index].append(RunResult(**raw))
    return configs, per_config, saved["environment"]
