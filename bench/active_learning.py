"""Active-learning benchmark on synthetic ZTF-like triplets → "## Active learning" in docs/benchmarks.md.

    nice -n 10 .venv/bin/python bench/active_learning.py [simulate options]   # full spec, writes the doc
    nice -n 10 .venv/bin/python bench/active_learning.py --quick              # minutes; prints only

``--pool realistic`` (10 % real, the ZTF campaign's bogus mix, half the reals faint, crowd labels) and
``--pool balanced`` (half real, the original setting) each own a "### " subsection of the section, so
re-running one leaves the other's numbers alone; each writes its own figure and JSON.

Same code and options as ``python -m mlcore simulate`` (mlcore.simulation): start from 100 random
labels, acquire 100 per round, retrain (warm start) every round, measure test ROC AUC; strategies
random, entropy, BALD and BALD + k-center diversity; ≥ 3 seeds; once with the true labels and once
with Dawid–Skene labels from 5 simulated volunteers per triplet. Writes the learning-curve figure to
docs/img/active_learning.png (+ .svg) and all runs to bench/out/active_learning.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdoc import replace_section  # noqa: E402

from mlcore.cli import build_parser, simulation_configs  # noqa: E402
from mlcore.simulation import _stderr_log, load_results, report, run_and_report, summarise  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Active learning"
PLOT = ROOT / "docs" / "img" / "active_learning"
RESULTS = ROOT / "bench" / "out" / "active_learning.json"
# One "### " subsection per pool; matched by these heading prefixes.
SUBSECTIONS = {
    "realistic": "### Realistic pool",
    "balanced": "### Balanced pool",
}
SUBSECTION_TITLES = {
    "realistic": "### Realistic pool: 10 % real, ZTF bogus mix, faint reals, crowd labels",
    "balanced": "### Balanced pool: half real, uniform subtypes (the original setting)",
}
INTRO = (
    "Two synthetic pools, the same code path (`mlcore.simulation`, `--pool`): the realistic one, on "
    "which the ≥ 3× goal is judged, and the original balanced one. Details of both pools: "
    "[synthetic-data.md](synthetic-data.md#active-learning-pools)."
)
QUICK = [
    "--pool-size", "3000", "--test-size", "1000", "--max-labels", "500", "--seeds", "0,1",
    "--candidates", "1000", "--first-round-steps", "80", "--steps-per-round", "15",
]  # fmt: skip


def _reach_table(summary: dict, target: float) -> dict[str, float | None]:
    return {name: entry["reach"][str(target)]["median"] for name, entry in summary.items()}


def verdict(result: dict) -> tuple[str, float]:
    """Best strategy's saving over random per label source and target (medians over seeds).

    Returns the markdown lines and the best ratio found (a lower bound where random never got there).
    """
    lines, best_ratio = [], 0.0
    for config, summary in zip(result["configs"], result["summaries"], strict=True):
        cap = config["max_labels"]
        source = "true labels" if config["label_source"] == "truth" else "crowd labels"
        for target in config["targets"]:
            reach = _reach_table(summary, target)
            random_n = reach.get("random")
            others = {k: v for k, v in reach.items() if k != "random" and v is not None}
            if not others:
                lines.append(f"- {source}, AUC {target}: no active strategy reached it within {cap} labels.")
                continue
            best = min(others, key=others.get)
            if random_n is None:
                ratio = cap / others[best]
                lines.append(
                    f"- {source}, AUC {target}: {best} needed {others[best]:.0f} labels; random did not get there "
                    f"within {cap} (≥ {ratio:.1f}× fewer)."
                )
            else:
                ratio = random_n / others[best]
                lines.append(
                    f"- {source}, AUC {target}: {best} needed {others[best]:.0f} labels vs {random_n:.0f} for "
                    f"random ({ratio:.1f}× fewer)."
                )
            best_ratio = max(best_ratio, ratio)
    return "\n".join(lines), best_ratio


def random_final_comparison(result: dict) -> str:
    """Labels each strategy needed (seed-mean curve) to match random's mean AUC at its last round."""
    lines = []
    for config, summary in zip(result["configs"], result["summaries"], strict=True):
        if "random" not in summary:
            continue
        source = "true labels" if config["label_source"] == "truth" else "crowd labels"
        rnd = summary["random"]
        goal, n_random = rnd["curve_mean_auc"][-1], rnd["curve_n_labels"][-1]
        parts = []
        for name, entry in summary.items():
            if name == "random":
                continue
            curve = zip(entry["curve_n_labels"], entry["curve_mean_auc"], strict=True)
            reached = [n for n, auc in curve if auc >= goal]
            parts.append(
                f"{name} {reached[0]} ({n_random / reached[0]:.1f}× fewer)" if reached else f"{name} never"
            )
        lines.append(
            f"- {source}: random's mean test AUC after {n_random} labels, {goal:.4f}, was matched by "
            + ", ".join(parts)
            + "."
        )
    return "\n".join(lines)


def deviations(config: dict, environment: dict) -> str:
    """What this run changed from the issue's full setting (so the numbers are read correctly)."""
    notes = []
    if config["max_labels"] < 3000:
        notes.append(f"labels capped at {config['max_labels']:,} instead of 3,000")
    if config["pool_size"] < 20_000 or config["test_size"] < 5_000:
        notes.append(f"pool {config['pool_size']:,} and test set {config['test_size']:,}")
    if len(config["seeds"]) < 3:
        notes.append(f"{len(config['seeds'])} seed(s) instead of 3")
    if config["candidates_per_round"]:
        notes.append(
            f"each round scores {config['candidates_per_round']:,} random unlabelled triplets, not the whole pool"
        )
    if config["precision"] != "float32":
        notes.append(f"{config['precision']} autocast for training and scoring (faster on this CPU)")
    text = f"Wall time {environment['wall_seconds'] / 60:.0f} min"
    text += f" with {environment.get('jobs', 1)} worker process(es)." if environment.get("jobs") else "."
    if notes:
        text += " Deviations from the issue's full setting, to fit a 2-core machine: "
        text += "; ".join(notes) + "."
    return text


def target_note(result: dict) -> str:
    """Which targets random reached within the budget on every seed (a ratio needs random to get there)."""
    parts = []
    for config, summary in zip(result["configs"], result["summaries"], strict=True):
        per_seed = summary.get("random", {}).get("reach", {})
        reached = [
            t
            for t in config["targets"]
            if all(n is not None for n in per_seed.get(str(t), {}).get("per_seed", [None]))
        ]
        missed = [t for t in config["targets"] if t not in reached]
        text = f"Random reached AUC {', '.join(map(str, reached)) or '—'} within {config['max_labels']:,} labels on every seed"
        if missed:
            text += f", not {', '.join(map(str, missed))} (ratios there are lower bounds or missing)"
        parts.append(text + ".")
    return " ".join(parts) + " "


def easy_target_note(result: dict) -> str:
    """Where random itself needs ≤ 3× the initial labels, a 3× saving is impossible by construction."""
    config = result["configs"][0]
    easy = []
    for cfg, summary in zip(result["configs"], result["summaries"], strict=True):
        for target in cfg["targets"]:
            n_random = summary.get("random", {}).get("reach", {}).get(str(target), {}).get("median")
            if n_random is not None and n_random < 3 * cfg["initial_labels"] + cfg["batch_size"]:
                easy.append(f"AUC {target} ({'true' if cfg['label_source'] == 'truth' else 'crowd'} labels)")
    if not easy:
        return ""
    return (
        f"Random sampling already reaches {', '.join(easy)} with {3 * config['initial_labels']} labels or fewer, so a "
        f"3× saving there would need fewer labels than the initial random {config['initial_labels']}; the gap "
        "between active and random sampling grows with the target AUC. "
    )


def _paths(pool: str) -> tuple[Path, Path]:
    """Figure stem and results JSON of a pool (the balanced pool keeps the original names)."""
    if pool == "balanced":
        return PLOT, RESULTS
    return PLOT.with_name(f"{PLOT.name}_{pool}"), RESULTS.with_name(f"{RESULTS.stem}_{pool}.json")


def replace_subsection(pool: str, body: str, doc: Path = DOC) -> None:
    """Write one pool's "### " subsection of the section, keeping the other pool's subsection as it is.

    Text of the section that sits under no "### " heading (an older single-pool layout) is kept as the
    balanced pool's subsection, which is what it measured.
    """
    text = doc.read_text() if doc.exists() else ""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    old = []
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        old = lines[start + 1 : end]
    blocks: dict[str, list[str]] = {}
    current = None
    for line in old:
        if line.startswith("### "):
            current = next((k for k, prefix in SUBSECTIONS.items() if line.startswith(prefix)), line)
            blocks[current] = [line]
        elif current is not None:
            blocks[current].append(line)
        elif line.strip() and line.strip() != INTRO:
            blocks.setdefault("balanced", [SUBSECTION_TITLES["balanced"], ""]).append(line)
    blocks[pool] = [SUBSECTION_TITLES[pool], "", *body.strip("\n").splitlines(), ""]
    ordered = [k for k in SUBSECTIONS if k in blocks] + [k for k in blocks if k not in SUBSECTIONS]
    out = [INTRO, ""]
    for key in ordered:
        block = blocks[key]
        while block and not block[-1].strip():
            block.pop()
        out += [*block, ""]
    replace_section(SECTION, "\n".join(out), doc)


def pool_description(config: dict) -> str:
    if config.get("pool", "balanced") == "realistic":
        return (
            f"realistic pool: 10 % real; bogus subtypes at the ZTF labelling campaign's shares (masked bright "
            f"stars 65 %, yin-yang bad subtractions 19 %, ghosts 9 %, satellite streaks and flashes 5 %, cosmic "
            f"rays and hot pixels 1 % each); half the reals faint (SNR 3–6, at the detection limit) and "
            f"{config['hard_fraction']:.0%} of the bogus deliberately hard"
        )
    return (
        f"balanced pool: half real, uniform subtypes, {config['hard_fraction']:.0%} deliberately hard cases"
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--quick", action="store_true", help="small preset; prints, does not write the doc")
    own.add_argument("--no-write", action="store_true", help="print only")
    own.add_argument("--from-json", help="re-render the doc section from a saved results JSON (no rerun)")
    mine, rest = own.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        print("bench options: --quick, --no-write, --from-json PATH; simulate options:")
    simulate_argv = ["simulate", *(QUICK if mine.quick else []), "--targets", "0.98,0.99,0.995", *rest]
    args = build_parser().parse_args(simulate_argv)
    plot_stem, results = _paths(args.pool)
    json_path = args.json or str(results.with_name(f"{results.stem}_quick.json") if mine.quick else results)
    plot_path = None if mine.quick else (args.plot or str(plot_stem))
    if mine.no_write:
        # "Print only": the committed plot and the full run's results (--from-json) stay untouched.
        plot_path = args.plot
        if not args.json:
            json_path = str(Path(tempfile.mkdtemp(prefix="active_learning-")) / "results.json")
    if mine.from_json:
        targets = tuple(float(t) for t in args.targets.split(","))
        saved_targets = load_results(mine.from_json)[0][0].targets
        configs, per_config, environment = load_results(mine.from_json, targets)
        if configs[0].pool != args.pool:  # the saved run decides which pool's figure and subsection
            plot_stem, results = _paths(configs[0].pool)
            if plot_path is not None and not args.plot:
                plot_path = str(plot_stem)
        command = environment.get("command", "")
        if targets != saved_targets:  # say how the tables were made from the run
            command += (
                f" && .venv/bin/python bench/active_learning.py --from-json {os.path.relpath(mine.from_json, ROOT)}"
                f" --targets {args.targets}"
            )
        markdown = report(configs, per_config, environment, plot_path=plot_path)
    else:
        command = "nice -n 10 .venv/bin/python bench/active_learning.py " + " ".join(argv)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        configs = simulation_configs(args)
        log = None if args.quiet else _stderr_log
        markdown = run_and_report(
            configs,
            json_path=json_path,
            plot_path=plot_path,
            log=log,
            command=command.strip(),
            jobs=args.jobs,
        )
        configs, per_config, environment = load_results(json_path, configs[0].targets)
    print(markdown)
    if mine.quick or mine.no_write:
        return 0
    result = {
        "configs": [c.to_dict() for c in configs],
        "summaries": [summarise(runs, c.targets) for c, runs in zip(configs, per_config, strict=True)],
    }
    config = result["configs"][0]
    pool = config.get("pool", "balanced")
    verdict_lines, best_ratio = verdict(result)
    body = "\n".join(
        [
            f"Measured {environment.get('date', 'on a date the results do not record')}. "
            f"Reproduce: `{command.strip()}` (the same options work with `python -m mlcore simulate`; "
            f"`--from-json {os.path.relpath(results, ROOT)}` re-renders this subsection without rerunning). "
            f"Device: {environment['cpu']}, torch {environment['torch']}, "
            f"{'CUDA ' + environment['cuda'] if environment['cuda'] else 'CPU only'}.",
            "",
            f"Setup: synthetic pool of {config['pool_size']:,} and a fixed test set of {config['test_size']:,} "
            f"triplets drawn alike (mlcore.synth, {pool_description(config)}); start from "
            f"{config['initial_labels']} random labels, acquire {config['batch_size']} per round up to "
            f"{config['max_labels']:,}; each round scores a random subset of {config['candidates_per_round']:,} "
            f"unlabelled triplets (Gal et al. 2017 do the same), BALD uses T = {config['mc_samples']} MC-dropout "
            f"samples of the dense head, diversity = greedy k-center on the 256-d penultimate features among the "
            f"top {config['diversity_top_m']} by BALD, balanced = entropy ranked separately on each side of "
            f"p = 0.5 and interleaved half and half (mlcore.acquisition.class_balanced). Training: {config['first_round_steps']} Adam steps "
            f"(batch {config['train_batch_size']}) from scratch in round one, then at least "
            f"{config['steps_per_round']} steps per round in whole epochs (one epoch once there are more than "
            f"{config['steps_per_round'] * config['train_batch_size']:,} labels), warm-started from the previous "
            "round's weights, flips/90° rotations, "
            f"{config['precision']} autocast, no validation split (every label goes into training). "
            "Test AUC after every round; 'labels to AUC x' is the first round at which the test AUC reached x.",
            "",
            "Every run is seeded (data, initial labels, candidate subsets, dropout masks, training order), so "
            "re-running the command on the same kind of CPU gives the same AUC values, whatever the machine's "
            "load (only the times change). A different CPU can give slightly different values: bfloat16 "
            "matrix kernels round differently on AMX, AVX512-BF16 or plain AVX-512 hardware, and each "
            "difference changes which triplets later rounds pick.",
            "",
            markdown.strip(),
            "",
            f"![Active-learning curves](img/{Path(plot_path or plot_stem).name}.png)",
            "",
            "Best strategy against random (goal: ≥ 3× fewer labels for the same AUC):",
            "",
            verdict_lines,
            "",
            "Same comparison on the seed-averaged curves, at the AUC random ends with:",
            "",
            random_final_comparison(result),
            "",
            f"Goal (best strategy ≥ 3× fewer labels than random): **{'met' if best_ratio >= 3 else 'not met'}** "
            f"in this measurement (best ratio {best_ratio:.1f}×). "
            + target_note(result)
            + easy_target_note(result)
            + deviations(config, environment),
        ]
    )
    if pool == "realistic" and any(c["label_source"] == "crowd" for c in result["configs"]):
        body += (
            "\n\nCrowd labels: Dawid–Skene P(real) from simulated volunteers whose sensitivities are drawn "
            "from 0.77–0.99 and specificities from 0.87–0.996, the range of volunteer skills measured in "
            "Space Warps (Marshall et al. 2016, MNRAS 455, 1171) and Supernova Hunters (Wright et al. 2017, "
            "MNRAS 472, 1315), with 5 % random spammers and 2 % 'always real' clickers (mlcore.crowd)."
        )
    replace_subsection(pool, body, DOC)
    print(f"wrote {SUBSECTIONS[pool]!r} of {SECTION!r} in {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
