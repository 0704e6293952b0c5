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
    "light_curve_figure",
    "BAND_COLOURS",
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


def _draw_learning_curves(ax, curves, targets, ylabel, title, ylim, note=""):
    for name, (n_labels, mean, std) in curves.items():
        n_labels, mean = np.asarray(n_labels), np.asarray(mean)
        # A marker on every measurement: a curve of one point (a first model) is otherwise invisible.
        (line,) = ax.plot(n_labels, mean, marker="o", markersize=4, label=name)
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
    if note:
        ax.text(0.5, 0.92, note, transform=ax.transAxes, ha="center", va="top", color="grey")


def learning_curve_figure(
    curves: Mapping[str, tuple[Sequence, Sequence, Sequence | None]],
    *,
    targets: Sequence[float] = (),
    ylabel: str = "test ROC AUC",
    title: str = "Active learning",
    ylim: tuple[float, float] | None = None,
    note: str = "",
) -> Figure:
    """Metric against number of labels; curves maps name → (n_labels, mean, std or None); `note`
    is written across the plot (say, why there is no line yet)."""
    fig, ax = _figure(6.0, 4.2)
    _draw_learning_curves(ax, curves, targets, ylabel, title, ylim, note)
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


# The bands' conventional colours (u violet, g green, r red, i orange-brown, z grey, y black); ZTF's
# g, r and i use the same ones.
BAND_COLOURS = {
    "u": "#7b2cbf",
    "g": "#2ca02c",
    "r": "#d62728",
    "i": "#c46210",
    "z": "#7f7f7f",
    "y": "#000000",
}
BAND_ORDER = ("u", "g", "r", "i", "z", "y")
_AB_ZERO_POINT_NJY = 31.4


def _point_mag(point: Mapping) -> tuple[str, float | None, float | None]:
    """(how to draw it, magnitude, error) of one light-curve point: "detection", "forced" (a measured
    flux without a detection) or "limit" (an upper limit: not detected, fainter than the magnitude)."""
    kind = point.get("kind")
    mag, mag_err = point.get("mag"), point.get("mag_err")
    flux, flux_err = point.get("flux_njy"), point.get("flux_err_njy")
    if kind == "limit":
        if mag is None and flux_err:
            mag = _AB_ZERO_POINT_NJY - 2.5 * np.log10(5.0 * float(flux_err))
        return "limit", mag, None
    if kind == "forced":
        # A forced measurement below 3σ says only "fainter than this": drawn as a 5σ upper limit.
        if flux is None or flux_err is None or float(flux) <= 3.0 * float(flux_err):
            limit = _AB_ZERO_POINT_NJY - 2.5 * np.log10(5.0 * float(flux_err)) if flux_err else mag
            return "limit", limit, None
        if mag is None:
            mag = _AB_ZERO_POINT_NJY - 2.5 * np.log10(float(flux))
        return "forced", mag, mag_err
    if mag is None and flux:
        mag = _AB_ZERO_POINT_NJY - 2.5 * np.log10(abs(float(flux)))
        if flux_err and mag_err is None:
            mag_err = 1.0857 * float(flux_err) / abs(float(flux))
    return "detection", mag, mag_err


def light_curve_figure(points: Sequence[Mapping], *, width: float = 3.4, height: float = 2.52) -> Figure:
    """A small light curve: magnitude (axis inverted: brighter is up) against days before the current
    detection, one colour per band; detections as filled circles with error bars, forced photometry
    as open circles, upper limits as open downward triangles; the current detection ringed in black.

    points: dicts with mjd, band, kind ("detection", "limit", "forced"), mag, mag_err, flux_njy,
    flux_err_njy and "current" on the current detection (Subject.light_curve).
    """
    fig = Figure(figsize=(width, height), layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_facecolor("#f6f8fa")
    usable = [p for p in points if isinstance(p, Mapping) and p.get("mjd") is not None]
    current = next((p for p in usable if p.get("current")), None)
    now = float(current["mjd"]) if current else max((float(p["mjd"]) for p in usable), default=0.0)
    seen_bands = []
    for band in sorted(
        {str(p.get("band", "")) for p in usable},
        key=lambda b: (BAND_ORDER.index(b) if b in BAND_ORDER else 6, b),
    ):
        colour = BAND_COLOURS.get(band, "#1f77b4")
        groups: dict[str, list] = {"detection": [], "forced": [], "limit": []}
        for p in usable:
            if str(p.get("band", "")) != band or p is current:
                continue
            how, mag, err = _point_mag(p)
            if mag is not None and np.isfinite(mag):
                groups[how].append((float(p["mjd"]) - now, float(mag), float(err) if err else 0.0))
        if any(groups.values()) or (current is not None and current.get("band") == band):
            seen_bands.append(band)
        if groups["detection"]:
            x, y, e = zip(*groups["detection"], strict=True)
            ax.errorbar(x, y, yerr=e, fmt="o", ms=4, color=colour, elinewidth=0.8, capsize=0)
        if groups["forced"]:
            x, y, e = zip(*groups["forced"], strict=True)
            ax.errorbar(x, y, yerr=e, fmt="o", ms=4, mfc="none", color=colour, elinewidth=0.6, capsize=0)
        if groups["limit"]:
            x, y, _ = zip(*groups["limit"], strict=True)
            ax.plot(x, y, linestyle="none", marker="v", ms=5, mfc="none", mec=colour, mew=0.9)
    if current is not None:
        how, mag, err = _point_mag(current)
        if mag is not None and np.isfinite(mag):
            colour = BAND_COLOURS.get(str(current.get("band", "")), "#1f77b4")
            ax.errorbar([0.0], [mag], yerr=[err or 0.0], fmt="o", ms=9, color=colour, mec="black", mew=1.8,
                        elinewidth=1.2, capsize=0, zorder=5)  # fmt: skip
        ax.axvline(0.0, color="#444444", linestyle=":", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("days before this detection", fontsize=8)
    ax.set_ylabel("magnitude (AB)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    handles = [
        ax.plot([], [], linestyle="none", marker="o", ms=4, color=BAND_COLOURS.get(b, "#1f77b4"), label=b)[0]
        for b in seen_bands
    ]
    handles.append(
        ax.plot([], [], linestyle="none", marker="v", ms=5, mfc="none", mec="#444444", label="limit")[0]
    )
    ax.legend(handles=handles, fontsize=6, ncol=min(len(handles), 4), loc="best", handletextpad=0.1,
              columnspacing=0.6, framealpha=0.7)  # fmt: skip
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
