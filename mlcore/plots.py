"""Matplotlib figures for model reports: ROC curve, reliability diagram, active-learning curves.

Uses the object-oriented API with the Agg canvas (no pyplot, no global backend switch, no display
needed), so it is safe in Celery workers and web processes. ``save_figure`` writes PNG and SVG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlcore.metrics import reliability_bins, roc_auc, roc_curve

__all__ = [
    "roc_figure",
    "reliability_figure",
    "learning_curve_figure",
    "learning_curve_panels",
    "save_figure",
]


def _figure(width: float = 5.0, height: float = 4.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def roc_figure(curves: Mapping[str, tuple[Sequence, Sequence]], *, log_fpr: bool = False) -> Figure:
    """ROC curves; curves maps a legend name to (y_true, p_real). Marks FPR = 1% (Brink et al. 2013)."""
    fig, ax = _figure()
    for name, (y_true, p_real) in curves.items():
        curve = roc_curve(y_true, p_real)
        ax.plot(curve.fpr, curve.tpr, label=f"{name} (AUC {roc_auc(y_true, p_real):.4f})")
    ax.axvline(0.01, color="grey", linestyle=":", linewidth=1, label="FPR 1%")
    if log_fpr:
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1)
    else:
        ax.plot([0, 1], [0, 1], color="lightgrey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (bogus called real)")
    ax.set_ylabel("true positive rate (real kept)")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def reliability_figure(y_true, p_real, n_bins: int = 15, name: str = "model") -> Figure:
    """Reliability diagram: observed real fraction against mean predicted P(real) per bin, with counts."""
    centres, mean_p, observed, counts = reliability_bins(y_true, p_real, n_bins)
    fig, ax = _figure()
    filled = counts > 0
    ax.plot([0, 1], [0, 1], color="lightgrey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.plot(mean_p[filled], observed[filled], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted P(real)")
    ax.set_ylabel("observed fraction real")
    ax.set_title("Reliability diagram")
    counts_ax = ax.twinx()
    counts_ax.bar(centres, counts, width=1.0 / n_bins, alpha=0.15, color="grey")
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("triplets per bin")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def _draw_learning_curves(ax, curves, targets, ylabel, title, ylim):
    for name, (n_labels, mean, std) in curves.items():
        n_labels, mean = np.asarray(n_labels), np.asarray(mean)
        (line,) = ax.plot(n_labels, mean, label=name)
        if std is not None:
            std = np.asarray(std)
            ax.fill_between(n_labels, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for target in targets:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("labelled triplets")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")


def learning_curve_figure(
    curves: Mapping[str, tuple[Sequence, Sequence, Sequence | None]],
    *,
    targets: Sequence[float] = (),
    ylabel: str = "test ROC AUC",
    title: str = "Active learning",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Metric against number of labels; curves maps name → (n_labels, mean, std or None)."""
    fig, ax = _figure(6.0, 4.2)
    _draw_learning_curves(ax, curves, targets, ylabel, title, ylim)
    return fig


def learning_curve_panels(
    panels: Mapping[str, Mapping[str, tuple[Sequence, Sequence, Sequence | None]]],
    *,
    targets: Sequence[float] = (),
    ylabel: str = "test ROC AUC",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Side-by-side learning-curve panels (e.g. true labels | crowd labels); panels maps title → curves."""
    fig = Figure(figsize=(6.0 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        _draw_learning_curves(ax, curves, targets, ylabel, title, ylim)
    return fig


def save_figure(
    fig: Figure, path_stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg")
) -> list[str]:
    """Save as <path_stem>.png and <path_stem>.svg (a suffix on path_stem is replaced); return the paths."""
    stem = os.fspath(path_stem)
    root, ext = os.path.splitext(stem)
    if ext.lower().lstrip(".") in {"png", "svg", "pdf"}:
        stem = root
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        fig.savefig(
            path, dpi=120 if fmt == "png" else None, metadata={"Date": None} if fmt == "svg" else None
        )
        paths.append(path)
    return paths
