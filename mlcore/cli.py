"""Command line: ``python -m mlcore train|score|evaluate|simulate``.

Inputs are .npy arrays of triplets, (N, 3, 63, 63) channels-first or (N, 63, 63, 3) channels-last
(recognised automatically, or forced with --layout), and labels as .npy (N,) or .csv (a column
named p_real, label, target or real; else the first column; an optional 'weight' column).
Bad input ends with exit status 2 and a one-line "error: ..." message, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing problem; printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------- inputs


def _require_file(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise CliError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise CliError(f"{what} is a directory, expected a file: {path}")
    return path


def load_images(path: str, layout: str = "auto") -> np.ndarray:
    """Memory-mapped (N, 3, H, W) view of a .npy file (channels-last is transposed lazily)."""
    from mlcore.prep import TripletShapeError, as_channels_first_batch

    _require_file(path, "images file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"{path} is not a .npy array of numbers ({exc})") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise CliError(f"{path} is an .npz archive; expected a single .npy array")
    if array.ndim == 3:  # a single triplet
        array = array[None]
    try:
        images = as_channels_first_batch(array, layout)
    except (TripletShapeError, ValueError) as exc:
        raise CliError(f"{path}: {exc}") from None
    if images.shape[2] < 8 or images.shape[3] < 8:
        raise CliError(f"{path}: cutouts of {images.shape[2]}×{images.shape[3]} pixels are too small")
    return images


_LABEL_COLUMNS = ("p_real", "label", "target", "real", "y")


def load_labels(path: str, n_expected: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (P(real) in [0, 1]) and optional weights from .npy or .csv."""
    _require_file(path, "labels file")
    weights = None
    if path.endswith(".npy"):
        try:
            labels = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CliError(f"{path} is not a .npy array of numbers ({exc})") from None
        if labels.ndim == 2 and labels.shape[1] == 2:
            labels = labels[:, 1]  # (N, 2) probabilities (bogus, real)
        labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
        if labels.ndim != 1:
            raise CliError(f"{path}: expected labels of shape (N,), got {labels.shape}")
    else:
        labels, weights = _read_label_csv(path)
    try:
        labels = labels.astype(np.float64)
    except (TypeError, ValueError):
        raise CliError(f"{path}: labels must be numbers") from None
    if not np.all(np.isfinite(labels)) or labels.min(initial=0) < 0 or labels.max(initial=0) > 1:
        raise CliError(f"{path}: labels must be 0/1 or P(real) in [0, 1], without missing values")
    if n_expected is not None and len(labels) != n_expected:
        raise CliError(f"{path} has {len(labels)} labels but the images file has {n_expected} triplets")
    return labels, weights


def load_weights(path: str, n_expected: int) -> np.ndarray:
    """Per-triplet weights from .npy (N,) or .csv (a 'weight' column, else the first column)."""
    _require_file(path, "weights file")
    if path.endswith(".npy"):
        try:
            weights = np.load(path, allow_pickle=False).astype(np.float64).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise CliError(f"{path} is not a .npy array of numbers ({exc})") from None
    else:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
        header = [cell.strip().lower() for cell in rows[0]] if rows else []
        has_header = any(not _is_number(cell) for cell in header)
        column = header.index("weight") if "weight" in header else 0
        try:
            weights = np.array([float(row[column]) for row in rows[1 if has_header else 0 :]])
        except (ValueError, IndexError) as exc:
            raise CliError(f"{path}: unreadable weight row ({exc})") from None
    if len(weights) != n_expected:
        raise CliError(f"{path} has {len(weights)} weights but there are {n_expected} triplets")
    if not np.all(np.isfinite(weights)) or weights.min(initial=0) < 0:
        raise CliError(f"{path}: weights must be finite and non-negative")
    return weights


def _read_label_csv(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise CliError(f"{path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    has_header = any(not _is_number(cell) for cell in header)
    body = rows[1:] if has_header else rows
    label_col, weight_col = 0, None
    if has_header:
        named = [c for c in _LABEL_COLUMNS if c in header]
        label_col = header.index(named[0]) if named else 0
        weight_col = header.index("weight") if "weight" in header else None
    try:
        labels = np.array([float(row[label_col]) for row in body])
        weights = np.array([float(row[weight_col]) for row in body]) if weight_col is not None else None
    except (ValueError, IndexError) as exc:
        raise CliError(f"{path}: unreadable label row ({exc})") from None
    return labels, weights


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _tqdm_progress(description: str, quiet: bool):
    """A progress(fraction, message) callback drawing a tqdm bar on stderr, and a closer."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(
        total=1000,
        desc=description,
        unit="‰",
        file=sys.stderr,
        leave=True,
        bar_format="{l_bar}{bar}| {postfix}",
    )

    def progress(fraction: float, message: str):
        bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return progress, bar.close


def _set_threads(threads: int | None):
    if threads:
        import torch

        torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from mlcore.checkpoint import save_checkpoint
    from mlcore.models import ModelConfig
    from mlcore.train import TrainConfig, train_classifier

    _set_threads(args.threads)
    images = load_images(args.images, args.layout)
    labels, csv_weights = load_labels(args.labels, len(images))
    weights = load_weights(args.weights, len(images)) if args.weights else csv_weights
    if args.out and os.path.isdir(args.out):
        raise CliError(f"--out is a directory, expected a checkpoint file name: {args.out}")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        patience=args.patience,
        early_stopping=args.early_stopping,
        time_budget_s=args.time_budget,
        augment=not args.no_augment,
        device=args.device,
        precision=args.precision,
    )
    progress, close = _tqdm_progress("train", args.quiet)
    try:
        result = train_classifier(
            np.asarray(images),
            labels,
            sample_weights=weights,
            model_config=ModelConfig(),
            train_config=config,
            progress=progress,
        )
    finally:
        close()
    summary = result.summary()
    summary.pop("history")
    sha = save_checkpoint(
        args.out,
        result.model,
        training_data_hash=result.training_data_hash,
        metadata={
            "train_config": config.to_dict(),
            "result": summary,
            "images": os.path.basename(args.images),
        },
    )
    summary.update(checkpoint=args.out, state_sha256=sha, training_data_hash=result.training_data_hash)
    print(json.dumps(summary, indent=2))
    return 0


def _write_scores(path: str, result) -> None:
    columns = {"p_real": result.p_real, "entropy": result.entropy}
    if result.bald is not None:
        columns["bald"] = result.bald
        columns["p_real_mc"] = result.p_real_mc
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"output directory does not exist: {directory}")
    if path.endswith(".npz"):
        arrays = dict(columns)
        if result.features is not None:
            arrays["features"] = result.features
        np.savez_compressed(path, **arrays)
    elif path.endswith(".npy"):
        np.save(path, result.p_real)
    elif path.endswith(".csv"):
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", *columns])
            for i in range(len(result.p_real)):
                writer.writerow([i, *(f"{float(col[i]):.6g}" for col in columns.values())])
    else:
        raise CliError(f"--out must end in .csv, .npz or .npy: {path}")


def _score_checkpoint(args, images, features: bool):
    from mlcore.checkpoint import load_checkpoint
    from mlcore.score import score

    _require_file(args.checkpoint, "checkpoint")
    loaded = load_checkpoint(args.checkpoint, device=args.device)
    progress, close = _tqdm_progress("score", args.quiet)
    try:
        return score(
            loaded.model,
            images,
            args.batch_size,
            mc_samples=getattr(args, "mc_samples", 0),
            features=features,
            precision=args.precision,
            progress=progress,
        )
    finally:
        close()


def cmd_score(args) -> int:
    _set_threads(args.threads)
    images = load_images(args.images, args.layout)
    if not args.out.endswith((".csv", ".npz", ".npy")):
        raise CliError(f"--out must end in .csv, .npz or .npy: {args.out}")
    started = time.perf_counter()
    result = _score_checkpoint(args, images, features=args.features)
    seconds = time.perf_counter() - started
    _write_scores(args.out, result)
    print(
        json.dumps(
            {"scored": len(result), "out": args.out, "seconds": round(seconds, 3),
             "triplets_per_s": round(len(result) / max(seconds, 1e-9), 1)}
        )
    )  # fmt: skip
    return 0


def _load_scores(path: str) -> np.ndarray:
    _require_file(path, "scores file")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            if "p_real" not in archive:
                raise CliError(f"{path} has no 'p_real' array")
            return archive["p_real"].astype(np.float64)
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False).astype(np.float64).reshape(-1)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "p_real" not in reader.fieldnames:
            raise CliError(f"{path} has no 'p_real' column")
        return np.array([float(row["p_real"]) for row in reader])


def cmd_evaluate(args) -> int:
    from mlcore.metrics import evaluate
    from mlcore.plots import reliability_figure, roc_figure, save_figure

    _set_threads(args.threads)
    if bool(args.scores) == bool(args.checkpoint):
        raise CliError("give either --scores, or --checkpoint with --images")
    if args.checkpoint:
        if not args.images:
            raise CliError("--checkpoint needs --images")
        images = load_images(args.images, args.layout)
        p_real = _score_checkpoint(args, images, features=False).p_real
    else:
        p_real = _load_scores(args.scores)
    labels, _ = load_labels(args.labels, len(p_real))
    if len(np.unique(labels >= 0.5)) < 2:
        raise CliError(f"{args.labels}: evaluation needs both real and bogus examples")
    report = evaluate(labels, p_real, threshold=args.threshold)
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        files = save_figure(roc_figure({"model": (labels, p_real)}), os.path.join(args.plots, "roc"))
        files += save_figure(
            roc_figure({"model": (labels, p_real)}, log_fpr=True), os.path.join(args.plots, "roc_log")
        )
        files += save_figure(reliability_figure(labels, p_real), os.path.join(args.plots, "reliability"))
        report["plots"] = files
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


def simulation_configs(args) -> list:
    """SimulationConfig per label source from parsed 'simulate' arguments (shared with bench/active_learning.py)."""
    from mlcore.acquisition import STRATEGY_NAMES
    from mlcore.simulation import SimulationConfig

    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise CliError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)}")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        targets = tuple(float(t) for t in args.targets.split(",") if t.strip())
    except ValueError:
        raise CliError(
            "--seeds must be comma-separated integers and --targets comma-separated numbers"
        ) from None
    sources = ("truth", "crowd") if args.labels == "both" else (args.labels,)
    return [
        SimulationConfig(
            pool_size=args.pool_size,
            test_size=args.test_size,
            hard_fraction=args.hard_fraction,
            initial_labels=args.initial_labels,
            batch_size=args.batch_size,
            max_labels=args.max_labels,
            strategies=strategies,
            seeds=seeds,
            label_source=source,
            votes_per_item=args.votes_per_item,
            candidates_per_round=args.candidates or None,
            mc_samples=args.mc_samples,
            exploration=args.exploration,
            first_round_steps=args.first_round_steps,
            steps_per_round=args.steps_per_round,
            precision=args.precision,
            stop_at_auc=args.stop_at_auc,
            targets=targets,
            data_seed=args.data_seed,
            pool=args.pool,
        )
        for source in sources
    ]


def cmd_simulate(args) -> int:
    from mlcore.simulation import run_and_report

    _set_threads(args.threads)
    configs = simulation_configs(args)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    markdown = run_and_report(
        configs, json_path=args.json, plot_path=args.plot, log=log, command=args.command_line, jobs=args.jobs
    )
    print(markdown)
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore",
        description="Real/bogus classifier for ZTF-like triplets: train, score, evaluate, simulate active learning.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,score,evaluate,simulate}")

    def common(p, images_required=True):
        p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                       help="array layout of --images (default: recognise (N,3,H,W) vs (N,H,W,3))")  # fmt: skip
        p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu or cuda")
        p.add_argument(
            "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a VGG6 and save a checkpoint")
    p.add_argument("--images", required=True, help=".npy of triplets, (N,3,63,63) or (N,63,63,3)")
    p.add_argument("--labels", required=True, help=".npy (N,) or .csv with P(real) per triplet (0/1 or soft)")
    p.add_argument(
        "--weights", help="optional per-triplet weights (.npy or .csv); a 'weight' csv column also works"
    )
    p.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--early-stopping", choices=("val_loss", "val_auc"), default="val_loss")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--no-augment", action="store_true", help="no flip/90° rotation augmentation")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score triplets with a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, help=".csv (index,p_real,entropy[,bald,p_real_mc]), .npz or .npy")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mc-samples", type=int, default=0, help="MC-dropout samples for BALD (e.g. 20)")
    p.add_argument("--features", action="store_true", help="also store penultimate features (.npz only)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", help="metrics (AUC, FPR/FNR, EER, MDR@1%%FPR, ECE) and plots")
    p.add_argument("--labels", required=True)
    p.add_argument("--scores", help="scores from 'score' (.csv/.npz/.npy)")
    p.add_argument("--checkpoint", help="score --images with this checkpoint instead of --scores")
    p.add_argument("--images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--plots", help="directory for roc/reliability .png and .svg")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "simulate", help="active-learning simulation on synthetic triplets (bench/active_learning.py)"
    )
    p.add_argument("--pool-size", type=int, default=20_000)
    p.add_argument("--test-size", type=int, default=5_000)
    p.add_argument("--hard-fraction", type=float, default=0.3)
    p.add_argument("--initial-labels", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100, help="labels acquired per round")
    p.add_argument("--max-labels", type=int, default=3_000)
    p.add_argument("--strategies", default="random,entropy,bald,bald+diversity")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--labels", choices=("truth", "crowd", "both"), default="both")
    p.add_argument("--votes-per-item", type=int, default=5)
    p.add_argument(
        "--candidates", type=int, default=2_000, help="unlabelled triplets scored per round (0: all)"
    )
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument("--exploration", type=float, default=0.0)
    p.add_argument("--first-round-steps", type=int, default=150)
    p.add_argument("--steps-per-round", type=int, default=25)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--stop-at-auc", type=float, default=None)
    p.add_argument("--targets", default="0.98,0.99", help="test AUCs to report labels-needed for")
    p.add_argument("--data-seed", type=int, default=2024)
    p.add_argument(
        "--pool",
        choices=("balanced", "realistic"),
        default="balanced",
        help="synthetic pool: balanced (half real) or realistic (10%% real, ZTF bogus mix, faint reals)",
    )
    p.add_argument("--json", help="write all runs and the summary here")
    p.add_argument("--plot", help="learning-curve figure path stem (.png and .svg)")
    p.add_argument(
        "--jobs", type=int, default=1, help="worker processes (each single-threaded); 1 = in-process"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "python -m mlcore " + " ".join(argv if argv is not None else sys.argv[1:])
    from mlcore.checkpoint import CheckpointError
    from mlcore.prep import TripletShapeError
    from mlcore.train import TrainingError

    try:
        return args.func(args)
    except (
        CliError,
        CheckpointError,
        TripletShapeError,
        TrainingError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
