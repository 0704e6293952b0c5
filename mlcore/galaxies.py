"""Seeded generator of galaxy-like and nebula-like cutouts for the similarity task.

Each cutout has a hidden class (stored as the subject's ``truth_subtype``, never shown to
volunteers) so simulated volunteers can answer "which of these are similar?" and the
embedding can be evaluated. Classes (``CLASSES``):

* ``elliptical`` — astropy.modeling ``Sersic2D`` with n 3–5, ellipticity 0–0.45;
* ``disk`` — face-on to inclined exponential disk (Sersic n≈1, ellipticity 0.15–0.6) + a small bulge;
* ``edge_on`` — thin disk (ellipticity 0.78–0.9) crossed by a dust lane, with a small bulge;
* ``spiral`` — exponential disk modulated by 2 or 3 logarithmic arms (pitch 12–30°), bulge, inclined;
* ``merger`` — two overlapping galaxies and a curved tidal tail;
* ``star_cluster`` — 25–160 point sources with a Plummer-like radial profile;
* ``nebula`` — a log-normal field of power-law (1/f^β) noise under a smooth envelope: filaments, no centre.

Rare classes (``RARE_CLASSES``), never drawn unless asked for, for the rare-gems benchmark
(bench/gems.py): ``generate_cutouts(..., rare={"ring": 0.001, "lens_arc": 0.001})`` plants exactly
``round(share × n)`` of each (at least one for a positive share) among the ``classes`` mix. Without
``rare`` the output for a seed is what it always was.

* ``ring`` — a ring galaxy: a compact core and a bright, knotty, inclined ring (radius 18–32 % of the
  cutout, width 2–4 %) with a dark gap between them (Hoag's object, collisional rings);
* ``lens_arc`` — a strong gravitational lens: a red elliptical (Sersic n 3–4.5) with one or two thin
  tangential arcs at the Einstein radius (15–28 % of the cutout) spanning 50–160°, and often a
  faint counter-image on the opposite side;
* ``merger`` — the regular ``merger`` class above; pass ``classes`` without it to make mergers rare.

Every cutout then gets its own seeing (Gaussian PSF, σ 0.6–2.2 px at 96 px), 0–3 foreground stars,
a brightness scale and Gaussian sky noise (σ 4–25 % of the half-light isophote), so the same class looks different
from cutout to cutout, as in a real archive.

Size: 96 px by default — large enough that arms, lanes and tails are visible after the 252 px
upscaling of the volunteer page, small enough that 600 cutouts take about a second and the
embedding trains on a CPU. Geometry scales with ``size``, so 64 or 128 work too.

Deterministic for a given ``(n, seed, size, classes)``. Pure numpy/scipy/astropy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.modeling.models import Sersic2D
from scipy import ndimage

__all__ = [
    "CLASSES",
    "RARE_CLASSES",
    "RARE_CLASS_DESCRIPTIONS",
    "CLASS_DESCRIPTIONS",
    "GalaxyBatch",
    "generate_cutouts",
    "render_cutout",
    "near_duplicate",
    "simulate_answer",
]

CLASSES = ("elliptical", "disk", "edge_on", "spiral", "merger", "star_cluster", "nebula")
CLASS_DESCRIPTIONS = {
    "elliptical": "A smooth, featureless oval or round glow, brightest in the middle.",
    "disk": "A flat, fairly round or oval disk with a small bright centre and no arms.",
    "edge_on": "A disk seen from the side: a thin bright streak, often split by a dark dust lane.",
    "spiral": "A disk with two or three curved arms winding out from a bright centre.",
    "merger": "Two galaxies touching or overlapping, often with a faint curved tail.",
    "star_cluster": "Many separate point-like stars crowded towards the middle.",
    "nebula": "Wispy clouds and filaments filling the frame, with no single centre.",
}
RARE_CLASSES = ("ring", "lens_arc", "merger")
# Kept apart from CLASS_DESCRIPTIONS (one per regular class); "merger" is described there.
RARE_CLASS_DESCRIPTIONS = {
    "ring": "A bright ring of knots around a small core, with a dark gap between them.",
    "lens_arc": "A round galaxy with thin curved arcs hugging it: light bent by a gravitational lens.",
}
DEFAULT_SIZE = 96


@dataclass
class GalaxyBatch:
    images: np.ndarray  # (N, size, size) float32, sky-subtracted flux with noise
    classes: list[str]
    params: list[dict]

    def __len__(self) -> int:
        return len(self.classes)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return x, y


def _centre(rng: np.random.Generator, size: int, jitter: float = 0.04) -> tuple[float, float]:
    c = (size - 1) / 2.0
    return c + rng.normal(0, jitter * size), c + rng.normal(0, jitter * size)


def _sersic(x, y, *, amplitude, r_eff, n, x0, y0, ellip, theta) -> np.ndarray:
    return Sersic2D(amplitude=amplitude, r_eff=r_eff, n=n, x_0=x0, y_0=y0, ellip=ellip, theta=theta)(x, y)


def _rotated(x, y, x0, y0, theta, ellip):
    """Coordinates along the major (u) and minor (v) axes; v stretched by 1/(1-ellip) (inclination)."""
    dx, dy = x - x0, y - y0
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    u = dx * cos_t + dy * sin_t
    v = (-dx * sin_t + dy * cos_t) / max(1e-3, 1.0 - ellip)
    return u, v


def _elliptical(rng, x, y, size):
    x0, y0 = _centre(rng, size)
    p = {
        "n": float(rng.uniform(2.5, 4.5)),
        "r_eff": float(rng.uniform(0.1, 0.18) * size),
        "ellip": float(rng.uniform(0.0, 0.45)),
        "theta": float(rng.uniform(0, np.pi)),
    }
    img = _sersic(
        x, y, amplitude=1.0, r_eff=p["r_eff"], n=p["n"], x0=x0, y0=y0, ellip=p["ellip"], theta=p["theta"]
    )
    return img, p


def _peak_normalised(img: np.ndarray) -> np.ndarray:
    return img / max(float(np.max(img)), 1e-12)


def _bulge(x, y, x0, y0, r_eff, theta, peak):
    """A compact n=2 bulge with the given peak (relative to a peak-normalised disk)."""
    bulge = _sersic(x, y, amplitude=1.0, r_eff=r_eff, n=2.0, x0=x0, y0=y0, ellip=0.1, theta=theta)
    return peak * _peak_normalised(bulge)


def _disk(rng, x, y, size):
    x0, y0 = _centre(rng, size)
    p = {
        "r_eff": float(rng.uniform(0.12, 0.2) * size),
        "ellip": float(rng.uniform(0.15, 0.6)),
        "theta": float(rng.uniform(0, np.pi)),
        "bulge": float(rng.uniform(0.3, 1.0)),
    }
    img = _sersic(
        x, y, amplitude=1.0, r_eff=p["r_eff"], n=1.0, x0=x0, y0=y0, ellip=p["ellip"], theta=p["theta"]
    )
    img = _peak_normalised(img) + _bulge(x, y, x0, y0, 0.03 * size, p["theta"], p["bulge"])
    return img, p


def _edge_on(rng, x, y, size):
    x0, y0 = _centre(rng, size)
    p = {
        "r_eff": float(rng.uniform(0.16, 0.26) * size),
        "ellip": float(rng.uniform(0.78, 0.9)),
        "theta": float(rng.uniform(0, np.pi)),
        "dust_lane": float(rng.uniform(0.4, 0.85)),
    }
    img = _sersic(
        x, y, amplitude=1.0, r_eff=p["r_eff"], n=1.0, x0=x0, y0=y0, ellip=p["ellip"], theta=p["theta"]
    )
    _, v = _rotated(x, y, x0, y0, p["theta"], 0.0)
    width = 0.012 * size
    img = _peak_normalised(img) * (1.0 - p["dust_lane"] * np.exp(-0.5 * (v / width) ** 2))
    img = img + _bulge(x, y, x0, y0, 0.03 * size, p["theta"], 0.4)
    return img, p


def _spiral(rng, x, y, size):
    x0, y0 = _centre(rng, size)
    p = {
        "arms": int(rng.choice([2, 2, 3])),
        "pitch_deg": float(rng.uniform(12, 30)),
        "scale": float(rng.uniform(0.08, 0.13) * size),
        "ellip": float(rng.uniform(0.0, 0.5)),
        "theta": float(rng.uniform(0, np.pi)),
        "phase": float(rng.uniform(0, 2 * np.pi)),
        "arm_contrast": float(rng.uniform(0.7, 0.95)),
        "winding": float(rng.choice([-1.0, 1.0])),
    }
    u, v = _rotated(x, y, x0, y0, p["theta"], p["ellip"])
    r = np.hypot(u, v) + 1e-6
    phi = np.arctan2(v, u)
    disk = np.exp(-r / p["scale"])
    arg = (
        p["arms"] * (phi - p["winding"] * np.log(r / p["scale"]) / np.tan(np.radians(p["pitch_deg"])))
        + p["phase"]
    )
    arms = 1.0 + p["arm_contrast"] * np.cos(arg)
    # Arms sharpen with a power so they read as arms, not as a faint ripple.
    img = _peak_normalised(disk * (arms / (1 + p["arm_contrast"])) ** 2.5)
    img = img + _bulge(x, y, x0, y0, 0.025 * size, p["theta"], float(rng.uniform(0.5, 1.2)))
    return img, p


def _merger(rng, x, y, size):
    c = (size - 1) / 2.0
    angle = rng.uniform(0, 2 * np.pi)
    sep = rng.uniform(0.12, 0.22) * size
    x1, y1 = c + 0.5 * sep * np.cos(angle), c + 0.5 * sep * np.sin(angle)
    x2, y2 = c - 0.5 * sep * np.cos(angle), c - 0.5 * sep * np.sin(angle)
    p = {
        "separation": float(sep),
        "flux_ratio": float(rng.uniform(0.35, 1.0)),
        "tail": float(rng.uniform(0.06, 0.16)),
    }
    g1 = _sersic(
        x,
        y,
        amplitude=1.0,
        r_eff=0.09 * size,
        n=float(rng.uniform(1, 2.5)),
        x0=x1,
        y0=y1,
        ellip=float(rng.uniform(0, 0.5)),
        theta=float(rng.uniform(0, np.pi)),
    )
    g2 = _sersic(
        x,
        y,
        amplitude=p["flux_ratio"],
        r_eff=0.08 * size,
        n=float(rng.uniform(1, 2.5)),
        x0=x2,
        y0=y2,
        ellip=float(rng.uniform(0, 0.5)),
        theta=float(rng.uniform(0, np.pi)),
    )
    # Tidal tail: Gaussian blobs along an arc leaving the first galaxy.
    tail = np.zeros_like(x)
    bend = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.4)
    for t in np.linspace(0.2, 1.0, 12):
        a = angle + bend * t
        tx = x1 + t * 0.38 * size * np.cos(a)
        ty = y1 + t * 0.38 * size * np.sin(a)
        tail += np.exp(-0.5 * ((x - tx) ** 2 + (y - ty) ** 2) / (0.02 * size) ** 2)
    img = _peak_normalised(g1) + p["flux_ratio"] * _peak_normalised(g2) + p["tail"] * _peak_normalised(tail)
    return img, p


def _point_sources(shape, xs, ys, fluxes) -> np.ndarray:
    """Sum of delta functions at sub-pixel positions (bilinear split); the seeing blur makes them stars."""
    img = np.zeros(shape, dtype=np.float64)
    h, w = shape
    ix, iy = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - ix, ys - iy
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        px, py = ix + dx, iy + dy
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        np.add.at(img, (py[ok], px[ok]), (fluxes * weight)[ok])
    return img


def _star_cluster(rng, x, y, size):
    n_stars = int(rng.integers(25, 160))
    a = rng.uniform(0.06, 0.14) * size
    # Plummer radii: r = a / sqrt(u^(-2/3) - 1); capped so stars stay inside the frame.
    u = rng.uniform(0.02, 0.98, n_stars)
    r = np.minimum(a / np.sqrt(u ** (-2.0 / 3.0) - 1.0), 0.47 * size)
    phi = rng.uniform(0, 2 * np.pi, n_stars)
    cx, cy = _centre(rng, size)
    fluxes = rng.pareto(1.5, n_stars) + 1.0
    img = _point_sources(x.shape, cx + r * np.cos(phi), cy + r * np.sin(phi), fluxes)
    # A faint unresolved glow of the fainter members.
    img = img + 0.02 * fluxes.sum() / (2 * np.pi * a**2) * np.exp(
        -0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / a**2
    )
    return img, {"n_stars": n_stars, "core_radius": float(a)}


def _nebula(rng, x, y, size):
    beta = float(rng.uniform(2.6, 3.6))
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.fftfreq(size)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) * k ** (-beta / 2.0)
    spectrum[0, 0] = 0.0
    field = np.real(np.fft.ifft2(spectrum))
    field = (field - field.mean()) / (field.std() + 1e-12)
    contrast = float(rng.uniform(0.8, 1.4))
    img = np.exp(contrast * field)
    # A broad, off-centre envelope: the cloud fills the frame but fades on one side.
    ex, ey = rng.uniform(0.2, 0.8, 2) * size
    env = np.exp(-0.5 * ((x - ex) ** 2 + (y - ey) ** 2) / (rng.uniform(0.35, 0.6) * size) ** 2)
    return img * env, {"beta": beta, "contrast": contrast}


def _ring(rng, x, y, size):
    x0, y0 = _centre(rng, size, jitter=0.02)
    p = {
        "ring_radius": float(rng.uniform(0.18, 0.32) * size),
        "ring_width": float(rng.uniform(0.02, 0.04) * size),
        "ellip": float(rng.uniform(0.0, 0.5)),
        "theta": float(rng.uniform(0, np.pi)),
        "core": float(rng.uniform(0.4, 1.0)),
        "knots": int(rng.integers(4, 12)),
    }
    u, v = _rotated(x, y, x0, y0, p["theta"], p["ellip"])
    r = np.hypot(u, v)
    ring = np.exp(-0.5 * ((r - p["ring_radius"]) / p["ring_width"]) ** 2)
    # Star-forming knots along the ring make it clumpy, as in real collisional rings.
    phase = np.arctan2(v, u)
    clumps = np.zeros_like(x)
    for a in rng.uniform(-np.pi, np.pi, p["knots"]):
        clumps += np.exp(-0.5 * ((np.angle(np.exp(1j * (phase - a)))) / 0.15) ** 2)
    ring = ring * (0.6 + 0.8 * clumps / max(float(clumps.max()), 1e-12))
    core = _bulge(x, y, x0, y0, 0.035 * size, p["theta"], p["core"])
    return _peak_normalised(ring) + core, p


def _lens_arc(rng, x, y, size):
    x0, y0 = _centre(rng, size, jitter=0.02)
    p = {
        "einstein_radius": float(rng.uniform(0.15, 0.28) * size),
        "n_arcs": int(rng.choice([1, 2], p=[0.6, 0.4])),
        "arc_brightness": float(rng.uniform(0.3, 0.8)),
        "lens_ellip": float(rng.uniform(0.0, 0.3)),
    }
    theta = float(rng.uniform(0, np.pi))
    lens = _sersic(
        x,
        y,
        amplitude=1.0,
        r_eff=float(rng.uniform(0.06, 0.1) * size),
        n=float(rng.uniform(3.0, 4.5)),
        x0=x0,
        y0=y0,
        ellip=p["lens_ellip"],
        theta=theta,
    )
    r = np.hypot(x - x0, y - y0)
    phase = np.arctan2(y - y0, x - x0)
    width = float(rng.uniform(0.012, 0.022) * size)
    arcs = np.zeros_like(x)
    centre_angle = float(rng.uniform(-np.pi, np.pi))
    for k in range(p["n_arcs"]):
        a = centre_angle + k * np.pi + rng.normal(0, 0.3)
        span = np.deg2rad(rng.uniform(50, 160)) / 2.0
        dphi = np.angle(np.exp(1j * (phase - a)))
        along = np.exp(-0.5 * (dphi / (0.55 * span)) ** 4)
        radius = p["einstein_radius"] * (1.0 + rng.normal(0, 0.04))
        arcs += (
            (1.0 if k == 0 else rng.uniform(0.4, 0.9)) * along * np.exp(-0.5 * ((r - radius) / width) ** 2)
        )
    if p["n_arcs"] == 1 and rng.random() < 0.7:
        # The faint counter-image of a single arc, opposite it and closer in.
        a = centre_angle + np.pi
        cx, cy = x0 + 0.6 * p["einstein_radius"] * np.cos(a), y0 + 0.6 * p["einstein_radius"] * np.sin(a)
        arcs += 0.35 * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / width**2)
    img = _peak_normalised(lens) + p["arc_brightness"] * _peak_normalised(arcs)
    return img, p


def _half_light_level(img: np.ndarray) -> float:
    values = np.sort(img.ravel())[::-1]
    cumulative = np.cumsum(values)
    return float(values[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


_RENDERERS = {
    "elliptical": _elliptical,
    "disk": _disk,
    "edge_on": _edge_on,
    "spiral": _spiral,
    "merger": _merger,
    "star_cluster": _star_cluster,
    "nebula": _nebula,
    "ring": _ring,
    "lens_arc": _lens_arc,
}


def render_cutout(kind: str, rng: np.random.Generator, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, dict]:
    """One cutout of class `kind`: (size, size) float32 and its parameters (seeing, noise, ... included)."""
    if kind not in _RENDERERS:
        raise ValueError(f"unknown class {kind!r}; choose from {', '.join(CLASSES)}")
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    x, y = _grid(size)
    img, params = _RENDERERS[kind](rng, x, y, size)
    img = img / max(float(np.max(img)), 1e-12)
    # Foreground stars: unrelated to the class, as in any real field.
    n_fg = int(rng.integers(0, 4))
    if n_fg:
        stars = _point_sources(
            img.shape,
            rng.uniform(0, size - 1, n_fg),
            rng.uniform(0, size - 1, n_fg),
            rng.uniform(0.5, 3.0, n_fg),
        )
        img = img + stars
    seeing = float(rng.uniform(0.6, 2.2) * size / DEFAULT_SIZE)
    img = ndimage.gaussian_filter(img, seeing, mode="constant")
    brightness = float(rng.uniform(0.5, 2.0))
    img = img / max(float(np.max(img)), 1e-12) * brightness
    # Noise relative to the half-light isophote (the level above which half the flux lies), so the
    # body of every object, not only its core, stands 4–25σ above the sky whatever its profile.
    noise = float(rng.uniform(0.04, 0.25) * _half_light_level(img))
    img = img + rng.normal(0.0, noise, img.shape)
    params = {
        **params,
        "seeing_sigma_px": seeing,
        "noise_sigma": noise,
        "brightness": brightness,
        "foreground_stars": n_fg,
    }
    return img.astype(np.float32), params


def generate_cutouts(
    n: int,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    classes: Sequence[str] = CLASSES,
    rare: dict[str, float] | None = None,
) -> GalaxyBatch:
    """`n` cutouts with classes drawn in equal shares (shuffled). Deterministic for fixed arguments.

    ``rare`` (default none) plants rare classes: ``{"ring": 0.001, "lens_arc": 0.005}`` makes
    ``round(share × n)`` cutouts of each (at least one where the share is positive and n allows), the
    rest shared equally by ``classes``, all shuffled together. Without it the output is unchanged.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in _RENDERERS]
    if unknown or not classes:
        raise ValueError(f"unknown classes {unknown}; choose from {', '.join(CLASSES)}")
    rng = np.random.default_rng(seed)
    if rare:
        bad = [c for c in rare if c not in _RENDERERS]
        if bad or any(not 0.0 <= float(v) <= 1.0 for v in rare.values()):
            raise ValueError(
                f"rare must map classes from {', '.join(_RENDERERS)} to shares in [0, 1]; got {rare}"
            )
        planted: list[str] = []
        for kind, share in rare.items():
            count = int(round(float(share) * n))
            if share > 0:
                count = max(count, 1)
            planted += [kind] * count
        if len(planted) > n:
            raise ValueError(f"rare shares ask for {len(planted)} cutouts out of {n}")
        labels = [classes[i % len(classes)] for i in range(n - len(planted))] + planted
    else:
        labels = [classes[i % len(classes)] for i in range(n)]
    rng.shuffle(labels)
    images = np.empty((n, size, size), dtype=np.float32)
    params: list[dict] = []
    for i, kind in enumerate(labels):
        images[i], p = render_cutout(kind, rng, size)
        params.append(p)
    return GalaxyBatch(images=images, classes=list(labels), params=params)


def near_duplicate(image: np.ndarray, rng: np.random.Generator, noise_scale: float = 0.3) -> np.ndarray:
    """The same object observed again: rotated by a multiple of 90°, maybe mirrored, with fresh sky
    noise of `noise_scale` × the image's own noise level (1.4826 × MAD): a slightly noisier copy."""
    image = np.asarray(image, dtype=np.float32)
    out = np.rot90(image, k=int(rng.integers(0, 4)), axes=(0, 1))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    finite = out[np.isfinite(out)]
    sigma = 1.4826 * float(np.median(np.abs(finite - np.median(finite)))) if finite.size else 0.0
    out = out + rng.normal(0.0, noise_scale * sigma, out.shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def simulate_answer(
    comparison_class: str,
    candidate_classes: Sequence[str],
    rng: np.random.Generator,
    hit_rate: float = 0.9,
    false_alarm_rate: float = 0.03,
) -> list[int]:
    """Positions a simulated volunteer marks as similar: same hidden class with probability `hit_rate`,
    another class with probability `false_alarm_rate`. An empty list means "no images are similar"."""
    chosen = []
    for position, kind in enumerate(candidate_classes):
        p = hit_rate if kind == comparison_class else false_alarm_rate
        if rng.random() < p:
            chosen.append(position)
    return chosen
