"""A subject's light curve as a small plot beside its cutouts, rendered once into storage.

Subject.light_curve holds the object's earlier photometry and the current detection (oldest first:
mjd, band, flux_njy, flux_err_njy, mag, mag_err, kind, and "current" on this detection). The classify
page runs under a strict Content-Security-Policy (no inline scripts or styles), so the plot is a PNG
(mlcore.plots.light_curve_figure: per band in the conventional colours, upper limits as open downward
triangles, the current detection ringed, magnitudes inverted). It is drawn the first time anyone
needs it, saved next to the subject's other PNGs (media for public projects, private storage for
private ones) and recorded as the subject's "light_curve" image, so it is served, access-checked, by
the same image view (core.views_files) and never drawn again: its name carries a hash of the points,
so only changed photometry (or a new look, PLOT_VERSION) draws a new one.

A subject without history (no light curve, or only the current detection) has no plot; a workflow
can turn the plot off (Workflow.show_light_curve).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math

log = logging.getLogger(__name__)

ROLE = "light_curve"
# Bump when the plot's look changes: every subject then gets a new one the next time it is shown.
PLOT_VERSION = 1
BANDS = ("u", "g", "r", "i", "z", "y")
WIDTH_PX, HEIGHT_PX = 340, 252


def points_of(subject) -> list[dict]:
    """The subject's light-curve points that can be drawn (dicts with a finite mjd), oldest first."""
    usable = []
    for point in subject.light_curve or []:
        if not isinstance(point, dict):
            continue
        try:
            mjd = float(point.get("mjd"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(mjd):
            usable.append(point)
    return sorted(usable, key=lambda p: float(p["mjd"]))


def has_history(points: list[dict]) -> bool:
    """Whether there is anything to plot besides the current detection."""
    return any(not p.get("current") for p in points)


def _mag(point: dict) -> float | None:
    value = point.get("mag")
    if value is None and point.get("kind") == "detection" and point.get("flux_njy"):
        value = 31.4 - 2.5 * math.log10(abs(float(point["flux_njy"])))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _days(n: float) -> str:
    n = round(n)
    return f"{n} day" if n == 1 else f"{n} days"


def describe(points: list[dict]) -> str:
    """The plot in words, for its alt text: what was seen, in which bands, over how long, and how
    this detection compares with the brightest earlier one."""
    current = next((p for p in points if p.get("current")), None)
    earlier = [p for p in points if p is not current]
    now = float(current["mjd"]) if current else float(points[-1]["mjd"]) if points else 0.0
    detections = [p for p in earlier if p.get("kind") == "detection"]
    limits = [p for p in earlier if p.get("kind") == "limit"]
    forced = [p for p in earlier if p.get("kind") == "forced"]
    bands = sorted(
        {str(p.get("band", "")) for p in points if p.get("band")},
        key=lambda b: (BANDS.index(b) if b in BANDS else len(BANDS), b),
    )
    parts = []
    counts = []
    if detections:
        counts.append(f"{len(detections)} earlier detection{'s' if len(detections) != 1 else ''}")
    if limits:
        counts.append(f"{len(limits)} upper limit{'s' if len(limits) != 1 else ''} (not detected)")
    if forced:
        counts.append(f"{len(forced)} forced measurement{'s' if len(forced) != 1 else ''}")
    span = now - float(earlier[0]["mjd"]) if earlier else 0.0
    head = "Light curve: " + (", ".join(counts) if counts else "no earlier points")
    if earlier:
        head += f" over the {_days(span)} before this detection"
    if bands:
        head += f", in {'/'.join(bands)}"
    parts.append(head + ".")
    if current is not None and _mag(current) is not None:
        parts.append(f"This detection: {current.get('band', '?')} {_mag(current):.1f} mag.")
    brightest = min(
        ((m, p) for p in detections if (m := _mag(p)) is not None), default=None, key=lambda t: t[0]
    )
    if brightest is not None:
        mag, point = brightest
        parts.append(
            f"Brightest earlier detection: {point.get('band', '?')} {mag:.1f} mag, "
            f"{_days(now - float(point['mjd']))} before."
        )
    elif earlier:
        parts.append("Nothing was detected here before.")
    return " ".join(parts)


def plot_name(subject, points: list[dict]) -> str:
    digest = hashlib.sha256(json.dumps(points, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"subjects/{subject.project_id}/png/{subject.pk}-{ROLE}-v{PLOT_VERSION}-{digest}.png"


def render_png(points: list[dict]) -> bytes:
    from mlcore.plots import light_curve_figure

    fig = light_curve_figure(points, width=WIDTH_PX / 100, height=HEIGHT_PX / 100)
    buffer = io.BytesIO()
    # Twice the displayed size, for sharp lines on high-density screens.
    fig.savefig(buffer, format="png", dpi=200, metadata={"Software": None})
    return buffer.getvalue()


def render_light_curve(subject, *, force: bool = False) -> str | None:
    """Draw the subject's light curve into storage once and record it as its "light_curve" image.

    Returns the stored name, or None when there is no history to draw. Idempotent: a plot of the same
    points is reused. Call it at ingest (or from a batch job) to keep the first page view fast.
    """
    from django.core.files.base import ContentFile

    from core.models import Subject
    from core.storage import delete_stored, stored_exists, subject_storage

    points = points_of(subject)
    if not has_history(points):
        return None
    name = plot_name(subject, points)
    images = dict(subject.images or {})
    if not force and images.get(ROLE) == name:
        return name  # recorded: trusted like the cutouts' PNGs (no storage round trip per page view)
    if force or not stored_exists(name):
        png = render_png(points)
        delete_stored(name)
        saved = subject_storage(subject.project).save(name, ContentFile(png))
    else:
        saved = name
    stale = images.get(ROLE)
    # Merge into what is stored now: a re-render of the cutouts may have written images meanwhile.
    current = Subject.objects.filter(pk=subject.pk).values_list("images", flat=True).first() or {}
    current = {**current, ROLE: saved}
    Subject.objects.filter(pk=subject.pk).update(images=current)
    subject.images = current
    if stale and stale != saved:
        delete_stored(stale)
    return saved


def light_curve_for_page(subject, workflow=None) -> dict | None:
    """{"url", "alt"} of the plot to show beside the cutouts, or None: the workflow turned it off, the
    subject has no history, or drawing it failed (logged; the page is shown without it)."""
    if subject is None or (workflow is not None and not getattr(workflow, "show_light_curve", True)):
        return None
    points = points_of(subject)
    if not has_history(points):
        return None
    try:
        render_light_curve(subject)
    except Exception:  # a broken light curve must not break classifying
        log.exception("light curve of subject %s could not be drawn", subject.pk)
        return None
    url = subject.image_url(ROLE)
    if not url:
        return None
    return {"url": url, "alt": describe(points), "width": WIDTH_PX, "height": HEIGHT_PX}
