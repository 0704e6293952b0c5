"""Seeded generator of ZTF-like real/bogus triplets (science, reference, difference).

Everything is pure numpy/scipy and vectorised over a chunk of subjects: sources are rendered as small
stamps and scattered into the images with ``np.bincount``, so 20,000 triplets take seconds, not minutes.

The physics, in the order the images are built (details in docs/synthetic-data.md):

* **Photometric scale.** ZTF-like zero point ``magzpsci`` 25.9–26.4 (ADU, per exposure), so a 20th magnitude
  point source has a few hundred ADU and a 15th magnitude star tens of thousands; ~1 arcsec per pixel.
* **PSF.** Moffat profiles, ``beta`` 2.5–4.5 and science FWHM 1.5–4 px. The reference (template) is a deeper
  co-add with different, usually better seeing (FWHM 0.6–0.95 × science in 85 % of subjects, 0.95–1.1 × otherwise).
* **Field.** Background stars (Poisson count per cutout, magnitudes 15–21.5 with dN/dm ∝ 10^0.3m) and
  galaxies (PSF-softened elliptical exponential discs, 18–21.5 mag), identical in science and reference.
* **Noise.** Sky 120–350 ADU; gain ~6.2 e-/ADU and read noise ~8 e-, Gaussian approximation of Poisson noise
  (the sky alone is >500 e-, where the approximation is excellent). The reference noise is that of a
  co-add of 4–15 exposures (matching the noise of real ZTF templates).
* **Subtraction.** difference = science − PSF-matched reference − sky. The matched reference is the reference
  scene rendered with the science PSF (i.e. the reference convolved to the science seeing), with the small
  imperfections a real subtraction leaves — a flux-scale error, a registration error and a PSF-width error per
  image — plus the reference noise smoothed by the matching kernel. Saturated pixels (35k–60k ADU) and their
  neighbours are NaN in the science and difference images (and in the reference where it saturates).

Subtypes (see ``SUBTYPE_DESCRIPTIONS``) add a central object or artefact; ``hard_fraction`` makes a share of
subjects deliberately ambiguous (faint sources near the detection limit, subtle dipoles, faint ghosts ...)
so that a classifier cannot reach AUC 1.0 trivially.

The generator is deterministic for a given ``(n, seed, real_fraction, hard_fraction, size, subtypes)`` (and
``subtype_weights``, ``hard_fraction_real``, ``rare`` where given; left at their defaults they change nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

REAL_SUBTYPES = ("new_point_source", "variable_star", "nuclear_transient")
BOGUS_SUBTYPES = (
    "masked_bright_star",
    "cosmic_ray",
    "bad_subtraction",
    "ghost",
    "satellite_streak",
    "hot_pixel",
)
ALL_SUBTYPES = REAL_SUBTYPES + BOGUS_SUBTYPES
# Rare real subtypes, planted only on request (``generate_triplets(..., rare={...})``), never part of
# the regular mix, so existing seeds give exactly what they always gave.
RARE_SUBTYPES = ("nuclear_flare_dipole",)
# Bogus subtypes in the proportions of the ZTF real/bogus labelling campaign behind braai (Duev et al.
# 2019, MNRAS 489, 3582): masked bright stars 1,526, yin-yang bad subtractions 437, dementors/ghosts 207,
# satellites 89 plus satellite flashes 32 (both drawn as streaks; the "hard" streaks are short glints),
# cosmic rays 28. The campaign gives no count for hot pixels: they get the cosmic rays' 28 (an assumption).
# Pass as ``subtype_weights`` to ``generate_triplets``; the real subtypes stay uniform.
ZTF_BOGUS_WEIGHTS: dict[str, float] = {
    "masked_bright_star": 1526.0,
    "bad_subtraction": 437.0,
    "ghost": 207.0,
    "satellite_streak": 89.0 + 32.0,
    "cosmic_ray": 28.0,
    "hot_pixel": 28.0,
}

SUBTYPE_DESCRIPTIONS: dict[str, str] = {
    "new_point_source": (
        "A new star-like point of light appears in the science image where the reference shows nothing, "
        "leaving a round, positive blob the size of the other stars in the difference image."
    ),
    "variable_star": (
        "A star that is present in both the science and reference images has changed brightness, leaving a "
        "round, star-shaped positive (brighter) or negative (fainter) blob in the difference image."
    ),
    "nuclear_transient": (
        "A new point source sits on the bright core of a galaxy, so the difference image shows a clean round "
        "blob where the galaxy itself has subtracted away."
    ),
    "masked_bright_star": (
        "A very bright, saturated star whose core has been masked (blank pixels) and whose imperfect "
        "subtraction leaves rings or spokes around the hole."
    ),
    "cosmic_ray": (
        "A particle hit in the science image only: a very sharp dot or short streak of a few pixels, "
        "much smaller and harder-edged than a star."
    ),
    "bad_subtraction": (
        "The science and reference images were slightly misaligned, so a star or galaxy core leaves a "
        "'yin-yang' dipole: a positive half next to a negative half."
    ),
    "ghost": (
        "A diffuse ring or doughnut of light (a 'dementor') caused by a reflection of a bright star inside "
        "the telescope optics, with no star-like core."
    ),
    "satellite_streak": (
        "A straight line of light crossing the science image, left by a satellite or a piece of space debris."
    ),
    "hot_pixel": (
        "A single defective detector pixel or column that is much brighter than its neighbours, with no "
        "star-like profile around it."
    ),
}
# Kept apart from SUBTYPE_DESCRIPTIONS, which the field guide shows for the regular subtypes.
RARE_SUBTYPE_DESCRIPTIONS: dict[str, str] = {
    "nuclear_flare_dipole": (
        "A flare on the core of a bright galaxy whose subtraction was also slightly misaligned: a round "
        "positive blob sitting on a positive/negative 'yin-yang' residual of the galaxy's core."
    ),
}

_GAIN_E_PER_ADU = 6.2
_READ_NOISE_E = 8.0
_CHUNK = 512  # subjects rendered together; bounds memory (~60 MB) and keeps results independent of n


@dataclass
class SynthBatch:
    """A batch of synthetic triplets.

    images: float32 (N, 3, size, size), channels science, reference (template), difference; NaN where masked.
    labels: int8 (N,), 1 = real, 0 = bogus.
    subtypes: one of REAL_SUBTYPES / BOGUS_SUBTYPES per subject.
    metadata: ZTF-candidate-like dicts (JSON-serialisable floats, ints and strings).
    """

    images: np.ndarray
    labels: np.ndarray
    subtypes: list[str]
    metadata: list[dict]

    def __len__(self) -> int:
        return len(self.subtypes)


# ---------------------------------------------------------------------------------------------------------
# Profiles and stamp rendering
# ---------------------------------------------------------------------------------------------------------


def moffat_alpha(fwhm: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Moffat core width alpha for a given FWHM and beta (FWHM = 2 alpha sqrt(2^(1/beta) - 1))."""
    return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / np.asarray(beta)) - 1.0))


def moffat_peak(flux, fwhm, beta) -> np.ndarray:
    """Central surface brightness (ADU/px) of a Moffat source with total ``flux``."""
    alpha = moffat_alpha(fwhm, beta)
    return np.asarray(flux) * (np.asarray(beta) - 1.0) / (np.pi * alpha**2)


def _render(
    out: np.ndarray,
    img: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    half: int,
    profile,
) -> None:
    """Add sources into ``out`` (n_img, size, size) in place.

    Each source is evaluated on a (2*half+1)^2 stamp around its nearest pixel by ``profile(dx, dy, sel)``,
    which receives pixel-centre offsets of shape (S, W, 1) / (S, 1, W) and returns (S, W, W) values.
    """
    if len(img) == 0:
        return
    n_img, size, _ = out.shape
    d = np.arange(-half, half + 1)
    cx = np.rint(x).astype(np.int64)
    cy = np.rint(y).astype(np.int64)
    px = cx[:, None] + d[None, :]
    py = cy[:, None] + d[None, :]
    dx = (px - x[:, None]).astype(np.float32)[:, None, :]
    dy = (py - y[:, None]).astype(np.float32)[:, :, None]
    vals = profile(dx, dy)
    inside = ((py >= 0) & (py < size))[:, :, None] & ((px >= 0) & (px < size))[:, None, :]
    flat = img[:, None, None] * (size * size) + py[:, :, None] * size + px[:, None, :]
    out += np.bincount(flat[inside], weights=vals[inside], minlength=n_img * size * size).reshape(out.shape)


def _moffat_profile(flux, fwhm, beta):
    alpha = moffat_alpha(fwhm, beta).astype(np.float32)
    beta = np.asarray(beta, dtype=np.float32)
    norm = (np.asarray(flux) * (beta - 1.0) / (np.pi * alpha**2)).astype(np.float32)
    inv_a2 = (1.0 / alpha**2)[:, None, None]
    b = beta[:, None, None]
    n = norm[:, None, None]

    def profile(dx, dy):
        return n * np.exp(-b * np.log1p((dx * dx + dy * dy) * inv_a2))

    return profile


def _galaxy_profile(flux, scale, q, phi, soften):
    """Elliptical exponential disc softened by the PSF: I ∝ exp(-sqrt(r_ell^2 + s^2) / h), normalised on the stamp."""
    c = np.cos(phi).astype(np.float32)[:, None, None]
    s = np.sin(phi).astype(np.float32)[:, None, None]
    inv_q = (1.0 / q).astype(np.float32)[:, None, None]
    h = np.asarray(scale, dtype=np.float32)[:, None, None]
    s2 = (np.asarray(soften, dtype=np.float32) ** 2)[:, None, None]
    f = np.asarray(flux, dtype=np.float32)[:, None, None]

    def profile(dx, dy):
        u = dx * c + dy * s
        v = (dy * c - dx * s) * inv_q
        val = np.exp(-np.sqrt(u * u + v * v + s2) / h)
        return f * val / val.sum(axis=(1, 2), keepdims=True)

    return profile


def _gauss_profile(flux, sigma, q, phi):
    """Elliptical Gaussian with total ``flux``, major-axis width ``sigma`` and axis ratio ``q``."""
    c = np.cos(phi).astype(np.float32)[:, None, None]
    s = np.sin(phi).astype(np.float32)[:, None, None]
    sig = np.asarray(sigma, dtype=np.float32)[:, None, None]
    qq = np.asarray(q, dtype=np.float32)[:, None, None]
    norm = (np.asarray(flux) / (2 * np.pi * np.asarray(sigma) ** 2 * np.asarray(q))).astype(np.float32)[
        :, None, None
    ]

    def profile(dx, dy):
        u = (dx * c + dy * s) / sig
        v = (dy * c - dx * s) / (sig * qq)
        return norm * np.exp(-0.5 * (u * u + v * v))

    return profile


# ---------------------------------------------------------------------------------------------------------
# Scene description: every source carries its science flux, reference flux and matched-reference tweaks
# ---------------------------------------------------------------------------------------------------------


class _Sources:
    """Columnar list of sources for one chunk, appended group by group."""

    fields = ("img", "x", "y", "f_sci", "f_ref", "kind", "scale", "q", "phi", "half")

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in self.fields}

    def add(self, img, x, y, f_sci, f_ref, kind=0, scale=1.0, q=1.0, phi=0.0, half=9):
        img = np.asarray(img, dtype=np.int64)
        n = len(img)
        if n == 0:
            return
        values = dict(
            img=img, x=x, y=y, f_sci=f_sci, f_ref=f_ref, kind=kind, scale=scale, q=q, phi=phi, half=half
        )
        for k, v in values.items():
            self.parts[k].append(np.broadcast_to(np.asarray(v), (n,)).copy())

    def table(self) -> dict[str, np.ndarray]:
        return {
            k: (
                np.concatenate(v)
                if v
                else np.zeros(0, dtype=np.int64 if k in ("img", "kind", "half") else float)
            )
            for k, v in self.parts.items()
        }


def _render_scene(
    src, n_img, size, fwhm, beta, flux_key, dxy=None, fwhm_scale=None, flux_scale=None, soften=None
):
    """Render all sources with per-image PSF (fwhm, beta arrays of length n_img)."""
    out = np.zeros((n_img, size, size), dtype=np.float64)
    flux_all = src[flux_key]
    for kind in (0, 1):
        for half in np.unique(src["half"]):
            sel = (src["kind"] == kind) & (src["half"] == half) & (flux_all != 0)
            if not sel.any():
                continue
            img = src["img"][sel]
            x = src["x"][sel].astype(float)
            y = src["y"][sel].astype(float)
            flux = flux_all[sel].astype(float)
            fw = fwhm[img].astype(float)
            if dxy is not None:
                x = x + dxy[0][sel]
                y = y + dxy[1][sel]
            if fwhm_scale is not None:
                fw = fw * fwhm_scale[sel]
            if flux_scale is not None:
                flux = flux * flux_scale[sel]
            if kind == 0:
                prof = _moffat_profile(flux, fw, beta[img])
            else:
                soft = fw / 2.355 if soften is None else soften[img]
                prof = _galaxy_profile(flux, src["scale"][sel], src["q"][sel], src["phi"][sel], soft)
            _render(out, img, x, y, int(half), prof)
    return out


def _mag_to_flux(mag, zp):
    return 10.0 ** (0.4 * (zp - mag))


def _flux_to_mag(flux, zp):
    return zp - 2.5 * np.log10(flux)


def _powerlaw_mags(rng, n, lo, hi, slope=0.3):
    """Magnitudes with dN/dm ∝ 10^(slope m) on [lo, hi] (inverse-CDF sampling)."""
    u = rng.random(n)
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


# ---------------------------------------------------------------------------------------------------------
# Chunk generator
# ---------------------------------------------------------------------------------------------------------


def _generate_chunk(
    rng: np.random.Generator, subtype_idx: np.ndarray, hard: np.ndarray, out: np.ndarray
) -> dict:
    """Render one chunk of subjects into ``out`` (n, 3, size, size) float32; returns observing conditions."""
    size = out.shape[-1]
    n = len(subtype_idx)
    names = np.asarray(ALL_SUBTYPES)[subtype_idx]
    is_ = {name: names == name for name in ALL_SUBTYPES}
    centre = (size - 1) / 2.0
    idx = np.arange(n)

    # --- observing conditions per subject -----------------------------------------------------------
    fid = rng.choice([1, 2, 3], size=n, p=[0.4, 0.5, 0.1])
    zp = np.where(fid == 1, 26.3, np.where(fid == 2, 26.15, 25.9)) + rng.normal(0, 0.08, n)
    fwhm_sci = rng.uniform(1.5, 4.0, n)
    beta_sci = rng.uniform(2.5, 4.5, n)
    better = rng.random(n) < 0.85
    fwhm_ref = fwhm_sci * np.where(better, rng.uniform(0.6, 0.95, n), rng.uniform(0.95, 1.1, n))
    fwhm_ref = np.maximum(fwhm_ref, 1.2)
    beta_ref = rng.uniform(2.5, 4.5, n)
    sky_sci = rng.uniform(120.0, 350.0, n)
    sky_ref = sky_sci * rng.uniform(0.9, 1.1, n)
    n_coadd = rng.integers(4, 16, n)
    rn_adu2 = (_READ_NOISE_E / _GAIN_E_PER_ADU) ** 2
    sigma_sky = np.sqrt(sky_sci / _GAIN_E_PER_ADU + rn_adu2)  # science background noise, ADU
    sat = rng.uniform(35000.0, 60000.0, n)
    # Image-level subtraction imperfections (flux scale, registration, PSF width of the matching kernel).
    img_eps = rng.normal(0.0, 0.004, n)
    img_shift = rng.normal(0.0, 0.03, (2, n))
    img_eta = rng.normal(0.0, 0.01, n)
    # Noise-equivalent area of the science PSF (Gaussian approximation), for SNR → flux conversions.
    sig_psf = fwhm_sci / 2.355
    flux_noise = sigma_sky * np.sqrt(4.0 * np.pi * sig_psf**2)

    # Central position of the candidate (cutouts are centred on the detection, to sub-pixel accuracy).
    cx = centre + rng.uniform(-0.5, 0.5, n)
    cy = centre + rng.uniform(-0.5, 0.5, n)

    src = _Sources()

    # --- background stars and galaxies --------------------------------------------------------------
    density = np.clip(rng.lognormal(np.log(3.0), 0.7, n), 0, 25)
    k_star = rng.poisson(density)
    img = np.repeat(idx, k_star)
    m = len(img)
    bx = rng.uniform(-4, size + 3, m)
    by = rng.uniform(-4, size + 3, m)
    # Keep the centre for the candidate itself: push stars out of the central 5 px.
    r = np.hypot(bx - cx[img], by - cy[img])
    push = r < 6.0
    ang = rng.uniform(0, 2 * np.pi, m)
    bx = np.where(push, cx[img] + rng.uniform(6, 20, m) * np.cos(ang), bx)
    by = np.where(push, cy[img] + rng.uniform(6, 20, m) * np.sin(ang), by)
    bmag = _powerlaw_mags(rng, m, 15.0, 21.5)
    bflux = _mag_to_flux(bmag, zp[img])
    bright = bmag < 17.0
    src.add(img[bright], bx[bright], by[bright], bflux[bright], bflux[bright], half=18)
    src.add(img[~bright], bx[~bright], by[~bright], bflux[~bright], bflux[~bright], half=9)

    k_gal = rng.poisson(0.7, n)
    img = np.repeat(idx, k_gal)
    m = len(img)
    gx = rng.uniform(-4, size + 3, m)
    gy = rng.uniform(-4, size + 3, m)
    r = np.hypot(gx - cx[img], gy - cy[img])
    ang = rng.uniform(0, 2 * np.pi, m)
    push = r < 10.0
    gx = np.where(push, cx[img] + rng.uniform(10, 25, m) * np.cos(ang), gx)
    gy = np.where(push, cy[img] + rng.uniform(10, 25, m) * np.sin(ang), gy)
    gflux = _mag_to_flux(rng.uniform(18.0, 21.5, m), zp[img])
    src.add(
        img, gx, gy, gflux, gflux, kind=1,
        scale=rng.uniform(0.8, 3.0, m), q=rng.uniform(0.3, 1.0, m), phi=rng.uniform(0, np.pi, m), half=14,
    )  # fmt: skip

    def snr_flux(sel, lo_easy, hi_easy, lo_hard, hi_hard):
        """Flux (ADU) for a target difference-image SNR, log-uniform; hard subjects get the low range."""
        k = int(sel.sum())
        lo = np.where(hard[sel], lo_hard, lo_easy)
        hi = np.where(hard[sel], hi_hard, hi_easy)
        snr = np.exp(rng.uniform(np.log(lo), np.log(hi), k))
        return snr * flux_noise[sel]

    # --- real: new point source ---------------------------------------------------------------------
    sel = is_["new_point_source"]
    if sel.any():
        f = snr_flux(sel, 8.0, 150.0, 3.0, 6.0)
        src.add(idx[sel], cx[sel], cy[sel], f, 0.0)
        # A third have a faint host galaxy a few pixels away (supernova in the outskirts); it subtracts away.
        ii = idx[sel][rng.random(int(sel.sum())) < 0.35]
        k = len(ii)
        ang = rng.uniform(0, 2 * np.pi, k)
        off = rng.uniform(3.0, 8.0, k)
        hflux = _mag_to_flux(rng.uniform(17.5, 20.5, k), zp[ii])
        src.add(
            ii, cx[ii] + off * np.cos(ang), cy[ii] + off * np.sin(ang), hflux, hflux, kind=1,
            scale=rng.uniform(1.5, 4.0, k), q=rng.uniform(0.3, 1.0, k), phi=rng.uniform(0, np.pi, k), half=16,
        )  # fmt: skip

    # --- real: variable star ------------------------------------------------------------------------
    sel = is_["variable_star"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        f0 = _mag_to_flux(rng.uniform(14.5, 19.5, k), zp[ii])
        df = snr_flux(sel, 8.0, 100.0, 3.5, 6.0)
        sign = np.where(rng.random(k) < 0.6, 1.0, -1.0)
        df = np.where(sign < 0, -np.minimum(df, 0.8 * f0), df)  # a fading star cannot go below zero flux
        src.add(ii, cx[ii], cy[ii], f0 + df, f0, half=18)

    # --- real: nuclear transient --------------------------------------------------------------------
    sel = is_["nuclear_transient"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        hflux = _mag_to_flux(rng.uniform(15.5, 19.0, k), zp[ii])
        gxn = cx[ii] + rng.uniform(-0.3, 0.3, k)
        gyn = cy[ii] + rng.uniform(-0.3, 0.3, k)
        src.add(
            ii, gxn, gyn, hflux, hflux, kind=1,
            scale=rng.uniform(1.2, 4.0, k), q=rng.uniform(0.4, 1.0, k), phi=rng.uniform(0, np.pi, k), half=20,
        )  # fmt: skip
        # A compact bulge makes the galaxy core visibly peaked.
        bulge = hflux * rng.uniform(0.1, 0.4, k)
        src.add(ii, gxn, gyn, bulge, bulge, half=12)
        f = snr_flux(sel, 8.0, 100.0, 3.0, 6.0)
        src.add(ii, cx[ii], cy[ii], f, 0.0)
        # Hard: the bright host leaves a mild subtraction residual under the faint transient.
        img_eta[ii] = np.where(hard[ii], rng.normal(0, 0.03, k), img_eta[ii])

    # --- bogus: masked bright (saturated) star -----------------------------------------------------------
    sel = is_["masked_bright_star"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        over = np.where(hard[ii], rng.uniform(1.1, 2.5, k), np.exp(rng.uniform(np.log(2.0), np.log(30.0), k)))
        peak = sat[ii] * over
        f = peak / moffat_peak(1.0, fwhm_sci[ii], beta_sci[ii])
        src.add(ii, cx[ii], cy[ii], f, f, half=24)
        # Imperfect PSF matching of a bright star leaves rings and spokes around the mask.
        mism = np.where(hard[ii], rng.uniform(0.015, 0.04, k), rng.uniform(0.04, 0.12, k))
        img_eta[ii] = mism * rng.choice([-1.0, 1.0], k)
        img_eps[ii] = rng.normal(0, 0.02, k)

    # --- bogus: bad subtraction (yin-yang dipole) ---------------------------------------------------------
    sel = is_["bad_subtraction"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        shift = np.where(hard[ii], rng.uniform(0.1, 0.3, k), rng.uniform(0.4, 1.5, k))
        ang = rng.uniform(0, 2 * np.pi, k)
        img_shift[0, ii] = shift * np.cos(ang)
        img_shift[1, ii] = shift * np.sin(ang)
        # Hard ones also have a flux-scale error that makes the dipole lopsided (mostly positive).
        img_eps[ii] = np.where(hard[ii], -rng.uniform(0.03, 0.12, k), rng.normal(0, 0.02, k))
        mag = np.where(hard[ii], rng.uniform(16.0, 19.0, k), rng.uniform(14.0, 18.5, k))
        f = _mag_to_flux(mag, zp[ii])
        on_galaxy = rng.random(k) < 0.3
        star = ~on_galaxy
        src.add(ii[star], cx[ii][star], cy[ii][star], f[star], f[star], half=18)
        g = ii[on_galaxy]
        kg = len(g)
        src.add(
            g, cx[g], cy[g], 3 * f[on_galaxy], 3 * f[on_galaxy], kind=1,
            scale=rng.uniform(0.8, 2.0, kg), q=rng.uniform(0.5, 1.0, kg), phi=rng.uniform(0, np.pi, kg), half=16,
        )  # fmt: skip
        src.add(g, cx[g], cy[g], f[on_galaxy], f[on_galaxy], half=12)

    # Matched-reference per-source tweaks follow the image-level ones.
    tab = src.table()
    simg = tab["img"]
    dxy = (img_shift[0][simg], img_shift[1][simg])
    fwhm_scale = 1.0 + img_eta[simg]
    flux_scale = 1.0 + img_eps[simg]

    sci_model = _render_scene(tab, n, size, fwhm_sci, beta_sci, "f_sci")
    ref_model = _render_scene(tab, n, size, fwhm_ref, beta_ref, "f_ref")
    matched_model = _render_scene(
        tab, n, size, fwhm_sci, beta_sci, "f_ref", dxy=dxy, fwhm_scale=fwhm_scale, flux_scale=flux_scale
    )

    # --- artefacts that exist only in the science exposure ------------------------------------------------
    artefact = np.zeros((n, size, size), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    sel = is_["cosmic_ray"] & ~hard
    if sel.any():
        # A knife-sharp track of 1–8 pixels (charge deposited along the particle's path).
        k = int(sel.sum())
        ii = idx[sel]
        length = rng.uniform(0.0, 7.0, k)
        total = rng.uniform(20.0, 400.0, k) * sigma_sky[ii]
        ang = rng.uniform(0, np.pi, k)
        steps = 16
        t = np.linspace(-0.5, 0.5, steps)[None, :] * length[:, None]
        px = np.rint(cx[ii][:, None] + t * np.cos(ang)[:, None]).astype(np.int64)
        py = np.rint(cy[ii][:, None] + t * np.sin(ang)[:, None]).astype(np.int64)
        w = np.broadcast_to((total / steps)[:, None], px.shape)
        flat = np.repeat(np.arange(k), steps) * size * size + (py * size + px).ravel()
        hits = np.bincount(flat, weights=w.ravel(), minlength=k * size * size).reshape(k, size, size)
        spread = rng.uniform(0.0, 0.08, k)  # a little charge diffusion into the 4 neighbours
        neighbours = ndimage.convolve(
            hits, np.array([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]], float), mode="constant"
        )
        artefact[ii] += hits * (1 - spread[:, None, None]) + neighbours * (spread / 4)[:, None, None]
    sel = is_["cosmic_ray"] & hard
    if sel.any():
        # Hard: a faint, compact hit blurred by charge diffusion — narrower than the PSF, but not by much.
        k = int(sel.sum())
        ii = idx[sel]
        _render(
            artefact, ii, cx[ii], cy[ii], 5,
            _gauss_profile(snr_flux(sel, 1, 1, 4.0, 9.0), rng.uniform(0.45, 0.8, k), rng.uniform(0.6, 1.0, k),
                           rng.uniform(0, np.pi, k)),
        )  # fmt: skip

    sel = is_["hot_pixel"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        hx = np.rint(cx[ii]).astype(np.int64)
        hy = np.rint(cy[ii]).astype(np.int64)
        column = (rng.random(k) < 0.3) & ~hard[ii]
        level = np.where(hard[ii], rng.uniform(4.0, 9.0, k), np.exp(rng.uniform(np.log(15), np.log(600), k)))
        level = level * sigma_sky[ii]
        col_level = rng.uniform(3.0, 25.0, k) * sigma_sky[ii]
        y_start = rng.integers(0, size // 2, k)
        for j in range(k):  # k is small (1/9 of a chunk) and each step is a slice assignment
            if column[j]:
                artefact[ii[j], y_start[j] :, hx[j]] += col_level[j]
            else:
                artefact[ii[j], hy[j], hx[j]] += level[j]
                if hard[ii[j]] and rng.random() < 0.6:  # inter-pixel crosstalk lights up the 4 neighbours
                    y0, y1, x0, x1 = (
                        max(hy[j] - 1, 0),
                        min(hy[j] + 2, size),
                        max(hx[j] - 1, 0),
                        min(hx[j] + 2, size),
                    )
                    artefact[ii[j], y0:y1, hx[j]] += rng.uniform(0.1, 0.35) * level[j]
                    artefact[ii[j], hy[j], x0:x1] += rng.uniform(0.1, 0.35) * level[j]

    sel = is_["ghost"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        # Hard ghosts are small and faint: a broad, soft blob rather than a clear doughnut.
        radius = np.where(hard[ii], rng.uniform(1.0, 3.0, k), rng.uniform(5.0, 14.0, k))
        width = np.where(hard[ii], rng.uniform(1.5, 3.0, k), rng.uniform(1.5, 4.0, k))
        amp = np.where(hard[ii], rng.uniform(1.5, 3.5, k), rng.uniform(3.0, 12.0, k)) * sigma_sky[ii]
        ang = rng.uniform(0, 2 * np.pi, k)
        off = rng.uniform(0, 1, k) * radius
        gx0 = cx[ii] + off * np.cos(ang)
        gy0 = cy[ii] + off * np.sin(ang)
        rr = np.sqrt((xx[None] - gx0[:, None, None]) ** 2 + (yy[None] - gy0[:, None, None]) ** 2)
        ring = np.exp(-0.5 * ((rr - radius[:, None, None]) / width[:, None, None]) ** 2)
        # A faint, lopsided inner haze makes the donut look like a diffuse reflection, not a sharp ring.
        haze = 0.25 * np.exp(-0.5 * (rr / (radius[:, None, None] + width[:, None, None])) ** 2)
        artefact[ii] += amp[:, None, None] * (ring + haze)

    sel = is_["satellite_streak"]
    if sel.any():
        k = int(sel.sum())
        ii = idx[sel]
        ang = rng.uniform(0, np.pi, k)
        off = rng.uniform(-2.0, 2.0, k)
        sig = (fwhm_sci[ii] / 2.355)[:, None, None]
        peak = np.where(hard[ii], rng.uniform(0.8, 2.0, k), np.exp(rng.uniform(np.log(3), np.log(40), k)))
        peak = (peak * sigma_sky[ii])[:, None, None]
        nx, ny = -np.sin(ang)[:, None, None], np.cos(ang)[:, None, None]
        dist = (
            (xx[None] - cx[ii][:, None, None]) * nx
            + (yy[None] - cy[ii][:, None, None]) * ny
            - off[:, None, None]
        )
        along = (xx[None] - cx[ii][:, None, None]) * ny - (yy[None] - cy[ii][:, None, None]) * nx
        glint = 1.0 + 0.3 * np.sin(
            along / rng.uniform(3, 15, k)[:, None, None] + rng.uniform(0, 6.3, k)[:, None, None]
        )
        profile = np.exp(-0.5 * (dist / sig) ** 2)
        artefact[ii] += peak * glint * profile
        # Hard: the streak is barely visible except for a short glint (a tumbling satellite) at the centre.
        flash = (
            np.where(hard[ii], rng.uniform(2.0, 5.0, k), 0.0)[:, None, None] * sigma_sky[ii][:, None, None]
        )
        flash_len = rng.uniform(1.5, 3.0, k)[:, None, None]
        artefact[ii] += flash * profile * np.exp(-0.5 * (along / flash_len) ** 2)

    # --- noise (float32 from here on: the output precision, and half the memory traffic) ---------------------
    f32 = np.float32
    sci_signal = (sky_sci[:, None, None] + sci_model + artefact).astype(f32)
    del sci_model, artefact
    sci = out[:, 0]
    np.maximum(sci_signal, 0, out=sci)
    sci *= f32(1 / _GAIN_E_PER_ADU)
    sci += f32(rn_adu2)
    np.sqrt(sci, out=sci)
    sci *= rng.standard_normal((n, size, size), dtype=f32)
    sci += sci_signal

    ref_signal = (sky_ref[:, None, None] + ref_model).astype(f32)
    del ref_model
    var_ref = (np.maximum(ref_signal, 0) * f32(1 / _GAIN_E_PER_ADU) + f32(rn_adu2)) / n_coadd[
        :, None, None
    ].astype(f32)
    ref_noise = np.sqrt(var_ref) * rng.standard_normal((n, size, size), dtype=f32)
    ref = out[:, 1]
    np.add(ref_signal, ref_noise, out=ref)

    # The matching kernel (Gaussian of width sqrt(sigma_sci^2 - sigma_ref^2)) smooths the reference noise.
    k_sigma = np.sqrt(np.maximum((fwhm_sci / 2.355) ** 2 - (fwhm_ref / 2.355) ** 2, 0.2**2))
    diff = out[:, 2]
    for j in range(n):
        ndimage.gaussian_filter(ref_noise[j], k_sigma[j], mode="nearest", output=diff[j])
    diff += matched_model.astype(f32)
    diff += (sky_sci + rng.normal(0, 0.3, n)).astype(f32)[:, None, None]  # sky estimate, slightly off
    np.subtract(sci, diff, out=diff)

    # --- saturation masks ------------------------------------------------------------------------------------
    sat_mask = sci_signal > sat[:, None, None]
    ref_mask = ref_signal > (sat * rng.uniform(0.8, 1.0, n))[:, None, None]
    bleed = rng.integers(0, 7, n)
    square = np.ones((3, 3), bool)
    for j in np.flatnonzero(sat_mask.any(axis=(1, 2))):  # only the few saturated subjects
        mask = ndimage.binary_dilation(sat_mask[j], structure=square)
        if bleed[j]:  # charge bleeds along CCD columns
            mask = ndimage.binary_dilation(mask, structure=np.ones((2 * bleed[j] + 1, 1), bool))
        sci[j][mask] = np.nan
        diff[j][mask] = np.nan
    for j in np.flatnonzero(ref_mask.any(axis=(1, 2))):
        ref[j][ndimage.binary_dilation(ref_mask[j], structure=square)] = np.nan

    conditions = dict(
        fid=fid, zp=zp, fwhm_sci=fwhm_sci, fwhm_ref=fwhm_ref, beta_sci=beta_sci, sky_sci=sky_sci,
        cx=cx, cy=cy, sigma_sky=sigma_sky,
    )  # fmt: skip
    return conditions


# ---------------------------------------------------------------------------------------------------------
# Candidate-like measurements on the difference image
# ---------------------------------------------------------------------------------------------------------


def _measure(images, cond, size):
    """PSF-fit flux, second-moment shape and masking near the centre of each difference image."""
    n = images.shape[0]
    half = 6
    d = np.arange(-half, half + 1)
    ix = np.rint(cond["cx"]).astype(int)
    iy = np.rint(cond["cy"]).astype(int)
    px = np.clip(ix[:, None] + d[None, :], 0, size - 1)
    py = np.clip(iy[:, None] + d[None, :], 0, size - 1)
    stamp = images[np.arange(n)[:, None, None], 2, py[:, :, None], px[:, None, :]].astype(np.float64)
    finite = np.isfinite(stamp)
    stamp0 = np.where(finite, stamp, 0.0)
    dx = (px - cond["cx"][:, None])[:, None, :]
    dy = (py - cond["cy"][:, None])[:, :, None]
    prof = _moffat_profile(np.ones(n), cond["fwhm_sci"], cond["beta_sci"])(
        dx.astype(np.float32), dy.astype(np.float32)
    )
    prof = np.where(finite, prof, 0.0)
    p2 = (prof**2).sum(axis=(1, 2))
    p2 = np.where(p2 > 0, p2, np.nan)
    flux = (prof * stamp0).sum(axis=(1, 2)) / p2
    flux = np.nan_to_num(flux)
    sigma_diff = cond["sigma_sky"] * 1.05
    flux_err = sigma_diff / np.sqrt(np.nan_to_num(p2, nan=1e-6))

    # Second moments of the positive (or, for negative detections, negated) residual, Gaussian-windowed.
    sgn = np.where(flux >= 0, 1.0, -1.0)[:, None, None]
    win = np.exp(-0.5 * (dx**2 + dy**2) / 3.0**2)
    w = np.maximum(sgn * stamp0, 0) * win
    wsum = w.sum(axis=(1, 2)) + 1e-9
    mx = (w * dx).sum(axis=(1, 2)) / wsum
    my = (w * dy).sum(axis=(1, 2)) / wsum
    cxx = (w * (dx - mx[:, None, None]) ** 2).sum(axis=(1, 2)) / wsum
    cyy = (w * (dy - my[:, None, None]) ** 2).sum(axis=(1, 2)) / wsum
    cxy = (w * (dx - mx[:, None, None]) * (dy - my[:, None, None])).sum(axis=(1, 2)) / wsum
    tr = cxx + cyy
    disc = np.sqrt(np.maximum((cxx - cyy) ** 2 / 4 + cxy**2, 0))
    l1 = np.maximum(tr / 2 + disc, 1e-3)
    l2 = np.maximum(tr / 2 - disc, 1e-3)
    nbad = (
        ~np.isfinite(images[:, 2, :, :][np.arange(n)[:, None, None], py[:, 2:-2, None], px[:, None, 2:-2]])
    ).sum(axis=(1, 2))
    return dict(
        flux=flux,
        flux_err=flux_err,
        fwhm=2.355 * np.sqrt((l1 + l2) / 2),
        elong=np.sqrt(l1 / l2),
        nbad=nbad,
    )


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def _check_subtypes(subtypes, allowed=ALL_SUBTYPES):
    """The requested subtypes, deduplicated, each one of `allowed` (the generator's own list)."""
    if subtypes is None:
        return list(allowed)
    if isinstance(subtypes, str):
        subtypes = [subtypes]
    subtypes = list(dict.fromkeys(subtypes))
    unknown = [s for s in subtypes if s not in allowed]
    if unknown or not subtypes:
        raise ValueError(f"unknown subtype(s) {unknown}; choose from {', '.join(allowed)}")
    return subtypes


def generate_triplets(
    n: int,
    seed: int = 0,
    real_fraction: float = 0.5,
    hard_fraction: float = 0.0,
    size: int = 63,
    subtypes: list[str] | None = None,
    rare: dict[str, float] | None = None,
    subtype_weights: dict[str, float] | None = None,
    hard_fraction_real: float | None = None,
) -> SynthBatch:
    """Generate ``n`` ZTF-like (science, reference, difference) triplets.

    n: number of subjects (0 gives an empty batch).
    seed: everything is drawn from ``np.random.default_rng(seed)`` and per-chunk children of it.
    real_fraction: share of real subjects (rounded to a whole number, then shuffled). Ignored where
        ``subtypes`` contains only one class.
    hard_fraction: share of subjects drawn from the "hard" parameter ranges (real sources at SNR 3–6,
        dipoles from 0.1–0.3 px misregistration, faint compact ghosts, cosmic rays blurred to nearly PSF width,
        streaks visible only as a glint, weakly saturated stars...). 0 gives an easy, cleanly separable set;
        0.3–0.5 gives a test set on which a small CNN needs 1000+ labels to approach AUC 0.98–0.99 (measured
        during development: AUC 0.965 at 0.5 with 2,000 labels and 15 epochs, still improving).
    size: cutout side in pixels (ZTF: 63). At least 21.
    subtypes: restrict to these subtypes (uniform within each class); default all.
    rare: plant rare subtypes (``RARE_SUBTYPES``), e.g. ``{"nuclear_flare_dipole": 0.001}``: that share
        of the subjects (``round(share × n)``, at least one) is replaced, at seeded positions, by the rare
        kind (label real). Default none: the batch is exactly what it is without the option.
        ``nuclear_flare_dipole``: a ``nuclear_transient`` (a point source on a 15.5–19 mag galaxy core)
        whose host is also misregistered by 0.4–1.2 px, so the flare sits on a dipole.
    subtype_weights: relative frequency of subtypes within their class (e.g. ``ZTF_BOGUS_WEIGHTS``);
        a class none of whose subtypes is named stays uniform, a named class gives unnamed subtypes 0.
    hard_fraction_real: share of *real* subjects from the hard ranges (faint sources at SNR 3–6, near the
        5σ detection limit), where it should differ from the bogus ones'; default ``hard_fraction``.
    """
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    if size < 21:
        raise ValueError(f"size must be at least 21 pixels, got {size}")
    if hard_fraction_real is not None and not 0.0 <= hard_fraction_real <= 1.0:
        raise ValueError(f"hard_fraction_real must be in [0, 1], got {hard_fraction_real}")
    chosen = _check_subtypes(subtypes)
    real_types = [s for s in chosen if s in REAL_SUBTYPES]
    bogus_types = [s for s in chosen if s in BOGUS_SUBTYPES]
    real_p = _class_weights(real_types, subtype_weights)
    bogus_p = _class_weights(bogus_types, subtype_weights)

    rng = np.random.default_rng(seed)
    if not real_types:
        n_real = 0
    elif not bogus_types:
        n_real = n
    else:
        n_real = int(round(n * real_fraction))
    labels = np.zeros(n, dtype=np.int8)
    labels[:n_real] = 1
    labels = labels[rng.permutation(n)]
    sub = np.empty(n, dtype=np.int64)
    real_idx = np.array([ALL_SUBTYPES.index(s) for s in real_types], dtype=np.int64)
    bogus_idx = np.array([ALL_SUBTYPES.index(s) for s in bogus_types], dtype=np.int64)
    if n_real:
        sub[labels == 1] = rng.choice(real_idx, size=n_real, p=real_p)
    if n - n_real:
        sub[labels == 0] = rng.choice(bogus_idx, size=n - n_real, p=bogus_p)
    # One uniform draw per subject whatever the per-class shares, so the defaults reproduce old seeds.
    hard_real = hard_fraction if hard_fraction_real is None else hard_fraction_real
    hard = rng.random(n) < np.where(labels == 1, hard_real, hard_fraction)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    metadata: list[dict] = []
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    children = np.random.SeedSequence(seed).spawn(n_chunks + 1)
    meta_rng = np.random.default_rng(children[-1])
    for c in range(n_chunks):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        chunk_rng = np.random.default_rng(children[c])
        imgs = images[lo:hi]
        cond = _generate_chunk(chunk_rng, sub[lo:hi], hard[lo:hi], imgs)
        metadata.extend(
            _metadata(meta_rng, imgs, cond, labels[lo:hi], hard[lo:hi], sub[lo:hi], size, lo, seed)
        )
    batch = SynthBatch(
        images=images, labels=labels, subtypes=[ALL_SUBTYPES[i] for i in sub], metadata=metadata
    )
    if rare:
        _plant_rare(batch, rare, seed, hard_real, size)
    return batch


def _class_weights(types: list[str], weights: dict[str, float] | None) -> np.ndarray | None:
    """Probabilities over one class's subtypes from ``subtype_weights`` (None: uniform)."""
    if weights is None:
        return None
    unknown = [k for k in weights if k not in ALL_SUBTYPES]
    if unknown:
        raise ValueError(f"subtype_weights names unknown subtype(s) {unknown}")
    if not any(t in weights for t in types):
        return None
    w = np.array([float(weights.get(t, 0.0)) for t in types])
    if not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"subtype_weights must be non-negative with a positive sum per class, got {weights}")
    return w / w.sum()


def _plant_rare(
    batch: SynthBatch, rare: dict[str, float], seed: int, hard_fraction: float, size: int
) -> None:
    """Replace seeded positions of ``batch`` by rare subtypes (in place). Draws from its own generator,
    so everything not replaced is identical to the batch without ``rare``."""
    n = len(batch)
    bad = [k for k in rare if k not in RARE_SUBTYPES]
    if bad or any(not 0.0 <= float(v) <= 1.0 for v in rare.values()):
        raise ValueError(
            f"rare must map subtypes from {', '.join(RARE_SUBTYPES)} to shares in [0, 1]; got {rare}"
        )
    counts = {k: (max(1, int(round(float(v) * n))) if v > 0 else 0) for k, v in rare.items()}
    total = sum(counts.values())
    if total > n:
        raise ValueError(f"rare shares ask for {total} subjects out of {n}")
    if total == 0:
        return
    rng = np.random.default_rng([seed, 0x6A4E])
    positions = rng.choice(n, size=total, replace=False)
    base = generate_triplets(
        total,
        seed=int(rng.integers(2**31 - 1)),
        hard_fraction=hard_fraction,
        size=size,
        subtypes=["nuclear_transient"],
    )
    kinds = [k for k, c in counts.items() for _ in range(c)]
    for j, (pos, kind) in enumerate(zip(positions, kinds, strict=True)):
        img = base.images[j].copy()
        ref = np.nan_to_num(img[1], nan=0.0)
        host = ref - np.median(ref)
        # A misregistered reference: the host's core leaves a positive/negative pair under the flare.
        shift = rng.uniform(0.4, 1.2)
        angle = rng.uniform(0, 2 * np.pi)
        dipole = (
            ndimage.shift(host, (shift * np.sin(angle), shift * np.cos(angle)), order=1, mode="nearest")
            - host
        )
        img[2] = img[2] + dipole.astype(np.float32)
        batch.images[pos] = img
        batch.labels[pos] = 1
        batch.subtypes[pos] = kind
        meta = dict(base.metadata[j])
        meta["objectId"] = batch.metadata[pos]["objectId"]
        meta["candid"] = batch.metadata[pos]["candid"]
        meta["rare"] = kind
        batch.metadata[pos] = meta


def _metadata(rng, imgs, cond, labels, hard, sub, size, offset, seed) -> list[dict]:
    n = len(labels)
    if n == 0:
        return []
    meas = _measure(imgs, cond, size)
    flux = meas["flux"]
    err = meas["flux_err"]
    # Every alert is a detection: a PSF flux below 3 sigma (e.g. the empty middle of a ghost) is reported at 3 sigma.
    absflux = np.maximum(np.abs(flux), 3 * err)
    zp = cond["zp"]
    magpsf = _flux_to_mag(absflux, zp)
    sigmapsf = 1.0857 * err / absflux
    diffmaglim = _flux_to_mag(5 * err, zp)
    # ZTF surveys dec > -31; uniform on the sphere within that band.
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-31)), 1, n)))
    jd = rng.uniform(2458200.5, 2460700.5, n)
    # Stand-ins for the pipeline's classifier scores: informative but imperfect, worse on hard subjects.
    strength = np.where(hard, 0.6, 2.0)
    logit = strength * (2 * labels - 1) + rng.normal(0, 1.0, n)
    rb = 1 / (1 + np.exp(-logit))
    drb = 1 / (1 + np.exp(-(1.5 * logit + rng.normal(0, 0.7, n))))
    out = []
    for j in range(n):
        out.append(
            {
                "objectId": f"ZTFsyn{seed % 100000:05d}{offset + j:07d}",
                "candid": int(offset + j),
                "ra": round(float(ra[j]), 6),
                "dec": round(float(dec[j]), 6),
                "jd": round(float(jd[j]), 6),
                "fid": int(cond["fid"][j]),
                "magpsf": round(float(magpsf[j]), 4),
                "sigmapsf": round(float(sigmapsf[j]), 4),
                "diffmaglim": round(float(diffmaglim[j]), 4),
                "magzpsci": round(float(zp[j]), 4),
                "isdiffpos": "t" if flux[j] >= 0 else "f",
                "fwhm": round(float(meas["fwhm"][j]), 3),
                "elong": round(float(meas["elong"][j]), 3),
                "nbad": int(meas["nbad"][j]),
                "seeratio": round(float(cond["fwhm_sci"][j] / cond["fwhm_ref"][j]), 3),
                "sky": round(float(rng.normal(0, 0.3)), 3),
                "rb": round(float(rb[j]), 4),
                "drb": round(float(drb[j]), 4),
                "difficulty": "hard" if hard[j] else "easy",
                "synthetic": "true",
            }
        )
    return out


def generate_one(subtype: str, seed: int = 0, size: int = 63) -> tuple[np.ndarray, dict]:
    """One easy example of ``subtype`` for the field guide: (float32 (3, size, size) image, metadata)."""
    batch = generate_triplets(1, seed=seed, size=size, subtypes=[subtype])
    meta = dict(batch.metadata[0])
    meta["subtype"] = subtype
    return batch.images[0], meta
