"""Seeded generator of Rubin-like alert stamps, and synthetic light curves for Rubin and ZTF subjects.

Rubin (LSST) alerts differ from ZTF's in ways a model and a volunteer notice (docs/synthetic-data.md):

* **Pixels and sizes.** 0.2″ per pixel, square stamps of 30–70 pixels (the size follows the source's
  footprint), seeing 0.5–1.2″ (2.5–6 pixels FWHM).
* **Units.** Calibrated fluxes in nJy per pixel (AB magnitude = 31.4 − 2.5 log10 f), on
  background-subtracted images (the sky is ~0), with a variance plane per stamp (nJy²).
* **Orientation.** Stamps are in detector orientation; each has a WCS whose CD matrix is rotated by
  the camera's angle on the sky (returned per stamp: ``metadata["cd"]``, ``metadata["rotation_deg"]``).
* **Bogus types.** Out-of-focus "doughnut" stars (pupil images with the central obscuration, seen in
  early commissioning), bright satellite streaks, dipoles from misregistration, cosmic rays.

Real types are ZTF's (``mlcore.synth``): a new point source, a variable star, a nuclear transient.
Images are built the same way (Moffat PSFs, a field of stars and galaxies, a PSF-matched template with
small subtraction errors, Gaussian noise with source shot noise) and share its rendering helpers.
Every subject also gets a light curve (``synthetic_light_curve``), the same function gives ZTF
subjects theirs (``ztf_light_curves``).

Deterministic for a given (n, seed, real_fraction, hard_fraction, subtypes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mlcore.synth import _check_subtypes, _measure, _powerlaw_mags, _render_scene, _Sources

__all__ = [
    "RUBIN_PIXEL_SCALE",
    "RUBIN_BANDS",
    "REAL_SUBTYPES",
    "BOGUS_SUBTYPES",
    "ALL_SUBTYPES",
    "SUBTYPE_DESCRIPTIONS",
    "AB_ZERO_POINT_NJY",
    "RubinBatch",
    "generate_rubin",
    "flux_to_mag",
    "mag_to_flux",
    "synthetic_light_curve",
    "ztf_light_curves",
    "alert_packet",
]

RUBIN_PIXEL_SCALE = 0.2  # arcsec per pixel
RUBIN_BANDS = ("u", "g", "r", "i", "z", "y")
_BAND_SHARE = (0.05, 0.15, 0.3, 0.3, 0.15, 0.05)
# Single-visit 5σ point-source depths (AB), roughly the survey's design values.
_DEPTH_5SIGMA = {"u": 23.9, "g": 25.0, "r": 24.7, "i": 24.0, "z": 23.3, "y": 22.1}
AB_ZERO_POINT_NJY = 31.4  # m_AB = 31.4 − 2.5 log10(f / nJy)
MIN_STAMP, MAX_STAMP = 30, 70
_FRAME = 71  # rendered at this size, each stamp cropped around its candidate
_CHUNK = 256

REAL_SUBTYPES = ("new_point_source", "variable_star", "nuclear_transient")
BOGUS_SUBTYPES = ("doughnut", "satellite_streak", "dipole", "cosmic_ray")
ALL_SUBTYPES = REAL_SUBTYPES + BOGUS_SUBTYPES

SUBTYPE_DESCRIPTIONS: dict[str, str] = {
    "new_point_source": "A new star-like point of light where the template shows nothing.",
    "variable_star": "A star present in both images has changed brightness: a round positive or negative blob.",
    "nuclear_transient": "A new point source on the bright core of a galaxy that otherwise subtracts away.",
    "doughnut": (
        "An out-of-focus star: a ring of light with a dark centre (the telescope's pupil and its central "
        "obscuration), over the negative imprint of the in-focus star in the template."
    ),
    "satellite_streak": "A straight, often very bright line crossing the science image: a satellite's trail.",
    "dipole": (
        "Science and template slightly misaligned: a positive half next to a negative half on a star or "
        "galaxy core."
    ),
    "cosmic_ray": "A particle hit: a few knife-sharp pixels, much sharper than a star.",
}


@dataclass
class RubinBatch:
    """Synthetic Rubin-like alert stamps.

    stamps: float32 (3, s, s) per subject (science, template, difference; nJy per pixel, NaN masked),
        s = 30–70 and different per subject.
    variances: float32 (3, s, s) per subject: the variance planes (nJy²), NaN where masked.
    labels: int8 (N,), 1 = real. subtypes: one of ALL_SUBTYPES per subject.
    metadata: DIASource-like dicts (JSON-serialisable), with the WCS (``cd``, ``rotation_deg``,
        ``pixel_scale``), the stamp size and the survey ("rubin").
    light_curves: one list of points per subject (see synthetic_light_curve).
    """

    stamps: list[np.ndarray]
    variances: list[np.ndarray]
    labels: np.ndarray
    subtypes: list[str]
    metadata: list[dict]
    light_curves: list[list[dict]]

    def __len__(self) -> int:
        return len(self.subtypes)


def mag_to_flux(mag) -> np.ndarray:
    """AB magnitude → nJy."""
    return 10.0 ** (0.4 * (AB_ZERO_POINT_NJY - np.asarray(mag, dtype=np.float64)))


def flux_to_mag(flux) -> np.ndarray:
    """nJy → AB magnitude (NaN for flux ≤ 0)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, AB_ZERO_POINT_NJY - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def _rotation_cd(theta_deg: float, scale_arcsec: float) -> list[list[float]]:
    """CD matrix (degrees per pixel) of a stamp rotated by theta on the sky, east to the left."""
    theta = math.radians(theta_deg)
    s = scale_arcsec / 3600.0
    return [[-s * math.cos(theta), s * math.sin(theta)], [s * math.sin(theta), s * math.cos(theta)]]


def _annulus(rr: np.ndarray, r_in: np.ndarray, r_out: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """A flat ring between r_in and r_out with soft edges (the pupil seen through the seeing)."""
    outer = 1.0 / (1.0 + np.exp((rr - r_out) / edge))
    inner = 1.0 / (1.0 + np.exp((r_in - rr) / edge))
    return outer * inner


def _generate_chunk(rng: np.random.Generator, subtype_idx: np.ndarray, hard: np.ndarray, sizes: np.ndarray):
    """Render one chunk at _FRAME px: (images (n, 3, F, F), variances (n, 3, F, F), conditions)."""
    size = _FRAME
    n = len(subtype_idx)
    names = np.asarray(ALL_SUBTYPES)[subtype_idx]
    is_ = {name: names == name for name in ALL_SUBTYPES}
    idx = np.arange(n)

    band_index = rng.choice(len(RUBIN_BANDS), size=n, p=_BAND_SHARE)
    depth = np.array([_DEPTH_5SIGMA[RUBIN_BANDS[b]] for b in band_index]) + rng.normal(0, 0.25, n)
    seeing = rng.uniform(0.5, 1.2, n)  # arcsec
    fwhm_sci = seeing / RUBIN_PIXEL_SCALE
    beta_sci = rng.uniform(2.5, 4.5, n)
    fwhm_ref = np.maximum(fwhm_sci * rng.uniform(0.7, 1.0, n), 2.2)
    beta_ref = rng.uniform(2.5, 4.5, n)
    sig_psf = fwhm_sci / 2.355
    nea = 4.0 * np.pi * sig_psf**2  # noise-equivalent area, px
    sigma_pix = mag_to_flux(depth) / (5.0 * np.sqrt(nea))  # per-pixel background noise, nJy
    sky_e = rng.uniform(800.0, 3000.0, n)  # sky electrons per pixel: sets the shot noise per nJy
    njy_per_e = sigma_pix / np.sqrt(sky_e)
    n_coadd = rng.integers(10, 41, n)
    sigma_ref = sigma_pix / np.sqrt(n_coadd)
    saturation = rng.uniform(1.0e5, 1.5e5, n) * njy_per_e
    flux_noise = sigma_pix * np.sqrt(nea)  # 1σ PSF flux, nJy
    img_eps = rng.normal(0.0, 0.004, n)
    img_shift = rng.normal(0.0, 0.05, (2, n))
    img_eta = rng.normal(0.0, 0.01, n)

    top = (size - sizes) // 2
    cx = top + (sizes - 1) / 2.0 + rng.uniform(-0.5, 0.5, n)
    cy = top + (sizes - 1) / 2.0 + rng.uniform(-0.5, 0.5, n)

    src = _Sources()
    density = np.clip(rng.lognormal(np.log(4.0), 0.7, n), 0, 30)
    k_star = rng.poisson(density)
    img = np.repeat(idx, k_star)
    m = len(img)
    bx, by = rng.uniform(-4, size + 3, m), rng.uniform(-4, size + 3, m)
    far = 4.0 * fwhm_sci[img]
    r = np.hypot(bx - cx[img], by - cy[img])
    ang = rng.uniform(0, 2 * np.pi, m)
    push = r < far
    bx = np.where(push, cx[img] + rng.uniform(1.0, 4.0, m) * far * np.cos(ang), bx)
    by = np.where(push, cy[img] + rng.uniform(1.0, 4.0, m) * far * np.sin(ang), by)
    bflux = mag_to_flux(_powerlaw_mags(rng, m, 17.0, 25.0))
    src.add(img, bx, by, bflux, bflux, half=18)
    k_gal = rng.poisson(1.0, n)
    img = np.repeat(idx, k_gal)
    m = len(img)
    gx, gy = rng.uniform(-4, size + 3, m), rng.uniform(-4, size + 3, m)
    gflux = mag_to_flux(rng.uniform(20.0, 25.0, m))
    src.add(
        img, gx, gy, gflux, gflux, kind=1,
        scale=rng.uniform(2.0, 8.0, m), q=rng.uniform(0.3, 1.0, m), phi=rng.uniform(0, np.pi, m), half=20,
    )  # fmt: skip

    def snr_flux(sel, lo_easy, hi_easy, lo_hard, hi_hard):
        k = int(sel.sum())
        lo = np.where(hard[sel], lo_hard, lo_easy)
        hi = np.where(hard[sel], hi_hard, hi_easy)
        return np.exp(rng.uniform(np.log(lo), np.log(hi), k)) * flux_noise[sel]

    sel = is_["new_point_source"]
    if sel.any():
        src.add(idx[sel], cx[sel], cy[sel], snr_flux(sel, 8.0, 150.0, 3.0, 6.0), 0.0, half=20)
    sel = is_["variable_star"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        f0 = mag_to_flux(rng.uniform(17.0, 23.0, k))
        df = snr_flux(sel, 8.0, 100.0, 3.5, 6.0)
        df = np.where(rng.random(k) < 0.6, df, -np.minimum(df, 0.8 * f0))
        src.add(ii, cx[ii], cy[ii], f0 + df, f0, half=20)
    sel = is_["nuclear_transient"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        hflux = mag_to_flux(rng.uniform(18.0, 22.0, k))
        gxn, gyn = cx[ii] + rng.uniform(-1, 1, k), cy[ii] + rng.uniform(-1, 1, k)
        src.add(
            ii, gxn, gyn, hflux, hflux, kind=1,
            scale=rng.uniform(3.0, 10.0, k), q=rng.uniform(0.4, 1.0, k), phi=rng.uniform(0, np.pi, k), half=30,
        )  # fmt: skip
        bulge = hflux * rng.uniform(0.1, 0.4, k)
        src.add(ii, gxn, gyn, bulge, bulge, half=18)
        src.add(ii, cx[ii], cy[ii], snr_flux(sel, 8.0, 100.0, 3.0, 6.0), 0.0, half=20)
        img_eta[ii] = np.where(hard[ii], rng.normal(0, 0.03, k), img_eta[ii])
    sel = is_["dipole"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        shift = np.where(hard[ii], rng.uniform(0.15, 0.5, k), rng.uniform(0.8, 3.0, k))  # px at 0.2″
        ang = rng.uniform(0, 2 * np.pi, k)
        img_shift[0, ii], img_shift[1, ii] = shift * np.cos(ang), shift * np.sin(ang)
        img_eps[ii] = np.where(hard[ii], -rng.uniform(0.03, 0.12, k), rng.normal(0, 0.02, k))
        f = mag_to_flux(np.where(hard[ii], rng.uniform(19.0, 22.0, k), rng.uniform(16.5, 20.5, k)))
        src.add(ii, cx[ii], cy[ii], f, f, half=24)
    # The doughnut's star is in focus in the template (it subtracts as a negative core) and is a
    # pupil image in the science exposure (added below as an artefact).
    doughnut_flux = np.zeros(n)
    sel = is_["doughnut"]
    if sel.any():
        ii = idx[sel]
        doughnut_flux[ii] = mag_to_flux(
            np.where(hard[ii], rng.uniform(19.5, 21.5, len(ii)), rng.uniform(15.5, 19.0, len(ii)))
        )
        src.add(ii, cx[ii], cy[ii], 0.0, doughnut_flux[ii], half=24)

    tab = src.table()
    simg = tab["img"]
    dxy = (img_shift[0][simg], img_shift[1][simg])
    sci_model = _render_scene(tab, n, size, fwhm_sci, beta_sci, "f_sci")
    ref_model = _render_scene(tab, n, size, fwhm_ref, beta_ref, "f_ref")
    matched_model = _render_scene(
        tab, n, size, fwhm_sci, beta_sci, "f_ref", dxy=dxy,
        fwhm_scale=1.0 + img_eta[simg], flux_scale=1.0 + img_eps[simg],
    )  # fmt: skip

    artefact = np.zeros((n, size, size), dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    sel = is_["doughnut"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        r_out = np.where(hard[ii], rng.uniform(7.0, 12.0, k), rng.uniform(14.0, 30.0, k))  # px
        # The stamp is cut to the footprint: a large doughnut comes in a large stamp.
        r_out = np.minimum(r_out, sizes[ii] / 2.0 - 2.0)
        r_in = r_out * rng.uniform(0.55, 0.65, k)  # the central obscuration
        edge = (fwhm_sci[ii] / 2.355 / 1.7)[:, None, None]
        rr = np.hypot(xx[None] - cx[ii][:, None, None], yy[None] - cy[ii][:, None, None])
        # Vignetting makes real doughnuts lopsided: brighter on one side.
        tilt = rng.uniform(0.0, 0.3, k)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, k)[:, None, None]
        theta = np.arctan2(yy[None] - cy[ii][:, None, None], xx[None] - cx[ii][:, None, None])
        ring = _annulus(rr, r_in[:, None, None], r_out[:, None, None], edge) * (
            1 + tilt * np.cos(theta - phase)
        )
        ring /= ring.sum(axis=(1, 2), keepdims=True)
        artefact[ii] += doughnut_flux[ii][:, None, None] * ring
    sel = is_["satellite_streak"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        ang = rng.uniform(0, np.pi, k)[:, None, None]
        off = rng.uniform(-2.0, 2.0, k)[:, None, None]
        sig = (fwhm_sci[ii] / 2.355)[:, None, None]
        peak = np.where(hard[ii], rng.uniform(1.0, 2.5, k), np.exp(rng.uniform(np.log(5), np.log(300), k)))
        peak = (peak * sigma_pix[ii])[:, None, None]
        dx, dy = xx[None] - cx[ii][:, None, None], yy[None] - cy[ii][:, None, None]
        dist = -dx * np.sin(ang) + dy * np.cos(ang) - off
        along = dx * np.cos(ang) + dy * np.sin(ang)
        profile = np.exp(-0.5 * (dist / sig) ** 2)
        artefact[ii] += peak * profile
        flash = (
            np.where(hard[ii], rng.uniform(3.0, 6.0, k), 0.0)[:, None, None] * sigma_pix[ii][:, None, None]
        )
        artefact[ii] += flash * profile * np.exp(-0.5 * (along / (2.0 * sig)) ** 2)
    sel = is_["cosmic_ray"]
    if sel.any():
        ii = idx[sel]
        k = len(ii)
        length = np.where(hard[ii], rng.uniform(0.0, 1.5, k), rng.uniform(2.0, 15.0, k))
        total = np.where(hard[ii], rng.uniform(5.0, 10.0, k), rng.uniform(30.0, 500.0, k)) * sigma_pix[ii]
        ang = rng.uniform(0, np.pi, k)
        steps = 24
        t = np.linspace(-0.5, 0.5, steps)[None, :] * length[:, None]
        px = np.clip(np.rint(cx[ii][:, None] + t * np.cos(ang)[:, None]).astype(np.int64), 0, size - 1)
        py = np.clip(np.rint(cy[ii][:, None] + t * np.sin(ang)[:, None]).astype(np.int64), 0, size - 1)
        flat = np.repeat(np.arange(k), steps) * size * size + (py * size + px).ravel()
        weights = np.repeat(total / steps, steps)
        hits = np.bincount(flat, weights=weights, minlength=k * size * size).reshape(k, size, size)
        blur = np.where(hard[ii], rng.uniform(0.4, 0.7, k), 0.0)
        for j in range(k):
            if blur[j]:
                hits[j] = ndimage.gaussian_filter(hits[j], blur[j])
        artefact[ii] += hits

    sci_signal = sci_model + artefact
    var_sci = sigma_pix[:, None, None] ** 2 + np.maximum(sci_signal, 0) * njy_per_e[:, None, None]
    var_ref = sigma_ref[:, None, None] ** 2 + np.maximum(ref_model, 0) * (njy_per_e / n_coadd)[:, None, None]
    sci = sci_signal + np.sqrt(var_sci) * rng.standard_normal((n, size, size))
    sci += rng.normal(0.0, 0.2, n)[:, None, None] * sigma_pix[:, None, None]  # background residual
    ref_noise = np.sqrt(var_ref) * rng.standard_normal((n, size, size))
    ref = ref_model + ref_noise
    k_sigma = np.sqrt(np.maximum((fwhm_sci / 2.355) ** 2 - (fwhm_ref / 2.355) ** 2, 0.3**2))
    smoothed = np.empty_like(ref_noise)
    for j in range(n):
        ndimage.gaussian_filter(ref_noise[j], k_sigma[j], mode="nearest", output=smoothed[j])
    diff = sci - (matched_model + smoothed)
    # A Gaussian kernel of width k averages the template noise over ~4πk² pixels.
    var_diff = var_sci + var_ref / np.maximum(1.0, 4.0 * np.pi * k_sigma**2)[:, None, None]

    images = np.stack([sci, ref, diff], axis=1).astype(np.float32)
    variances = np.stack([var_sci, var_ref, var_diff], axis=1).astype(np.float32)
    square = np.ones((3, 3), bool)
    saturated = sci_signal > saturation[:, None, None]
    for j in np.flatnonzero(saturated.any(axis=(1, 2))):
        mask = ndimage.binary_dilation(saturated[j], structure=square)
        images[j, 0][mask] = images[j, 2][mask] = np.nan
        variances[j, 0][mask] = variances[j, 2][mask] = np.nan
    ref_saturated = ref_model > saturation[:, None, None]
    for j in np.flatnonzero(ref_saturated.any(axis=(1, 2))):
        mask = ndimage.binary_dilation(ref_saturated[j], structure=square)
        images[j, 1][mask] = variances[j, 1][mask] = np.nan
    conditions = dict(
        band_index=band_index, depth=depth, seeing=seeing, fwhm_sci=fwhm_sci, beta_sci=beta_sci,
        cx=cx, cy=cy, sigma_sky=sigma_pix * np.sqrt(1.0 + 1.0 / n_coadd), top=top, flux_noise=flux_noise,
    )  # fmt: skip
    return images, variances, conditions


def generate_rubin(
    n: int,
    seed: int = 0,
    real_fraction: float = 0.5,
    hard_fraction: float = 0.0,
    subtypes: list[str] | None = None,
    light_curves: bool = True,
) -> RubinBatch:
    """``n`` Rubin-like (science, template, difference) stamps with variance planes, metadata and
    light curves. Arguments as mlcore.synth.generate_triplets (there is no size: every stamp has its
    own, 30–70 px)."""
    if not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    chosen = _check_subtypes(subtypes, ALL_SUBTYPES)
    real_types = [s for s in chosen if s in REAL_SUBTYPES]
    bogus_types = [s for s in chosen if s in BOGUS_SUBTYPES]
    rng = np.random.default_rng(seed)
    n_real = 0 if not real_types else n if not bogus_types else int(round(n * real_fraction))
    labels = np.zeros(n, dtype=np.int8)
    labels[:n_real] = 1
    labels = labels[rng.permutation(n)]
    sub = np.empty(n, dtype=np.int64)
    if n_real:
        sub[labels == 1] = rng.choice([ALL_SUBTYPES.index(s) for s in real_types], size=n_real)
    if n - n_real:
        sub[labels == 0] = rng.choice([ALL_SUBTYPES.index(s) for s in bogus_types], size=n - n_real)
    hard = rng.random(n) < hard_fraction
    sizes = rng.integers(MIN_STAMP, MAX_STAMP + 1, n)

    stamps: list[np.ndarray] = []
    variances: list[np.ndarray] = []
    metadata: list[dict] = []
    curves: list[list[dict]] = []
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    children = np.random.SeedSequence([seed, 0x5B1]).spawn(n_chunks + 1)
    meta_rng = np.random.default_rng(children[-1])
    for c in range(n_chunks):
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        images, var, cond = _generate_chunk(
            np.random.default_rng(children[c]), sub[lo:hi], hard[lo:hi], sizes[lo:hi]
        )
        meas = _measure(images, cond, _FRAME)
        for j in range(hi - lo):
            s, t = int(sizes[lo + j]), int(cond["top"][j])
            crop = (slice(None), slice(t, t + s), slice(t, t + s))
            stamps.append(np.ascontiguousarray(images[j][crop]))
            variances.append(np.ascontiguousarray(var[j][crop]))
        for j, meta in enumerate(_metadata(meta_rng, cond, meas, hard[lo:hi], sizes[lo:hi], lo, seed)):
            meta["difficulty"] = "hard" if hard[lo + j] else "easy"
            metadata.append(meta)
            if light_curves:
                subtype = ALL_SUBTYPES[sub[lo + j]]
                curves.append(synthetic_light_curve(meta_rng, subtype, _current_point(meta), "rubin"))
            else:
                curves.append([])
    return RubinBatch(
        stamps=stamps,
        variances=variances,
        labels=labels,
        subtypes=[ALL_SUBTYPES[i] for i in sub],
        metadata=metadata,
        light_curves=curves,
    )


def _metadata(rng, cond, meas, hard, sizes, offset, seed) -> list[dict]:
    n = len(sizes)
    ra = rng.uniform(0, 360, n)
    # Rubin surveys the southern sky: dec from −90° to +30°, uniform on the sphere.
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, np.sin(np.radians(30.0)), n)))
    mjd = rng.uniform(60800.0, 62000.0, n)
    rotation = rng.uniform(0.0, 360.0, n)
    scale = np.round(RUBIN_PIXEL_SCALE * (1.0 + rng.normal(0.0, 0.002, n)), 5)
    out = []
    for j in range(n):
        flux = float(meas["flux"][j])
        err = float(meas["flux_err"][j])
        size = int(sizes[j])
        top = int(cond["top"][j])
        out.append(
            {
                "survey": "rubin",
                "diaSourceId": int(seed % 100000) * 10_000_000 + offset + j,
                "diaObjectId": 3_000_000_000_000 + int(seed % 100000) * 10_000_000 + offset + j,
                "ra": round(float(ra[j]), 6),
                "dec": round(float(dec[j]), 6),
                "midpointMjdTai": round(float(mjd[j]), 6),
                "band": RUBIN_BANDS[int(cond["band_index"][j])],
                "psfFlux": round(flux, 3),
                "psfFluxErr": round(err, 3),
                "snr": round(abs(flux) / err, 3) if err > 0 else None,
                "x": round(float(cond["cx"][j]) - top, 3),
                "y": round(float(cond["cy"][j]) - top, 3),
                "seeing_arcsec": round(float(cond["seeing"][j]), 3),
                "limitingMag5sigma": round(float(cond["depth"][j]), 3),
                "stampSize": size,
                "pixel_scale": round(float(scale[j]), 5),
                "rotation_deg": round(float(rotation[j]), 3),
                "cd": [
                    [round(v, 12) for v in row] for row in _rotation_cd(float(rotation[j]), float(scale[j]))
                ],
                "flux_unit": "nJy",
                "synthetic": "true",
            }
        )
    return out


def _current_point(meta: dict) -> dict:
    flux, err = float(meta["psfFlux"]), float(meta["psfFluxErr"])
    return {"mjd": float(meta["midpointMjdTai"]), "band": meta["band"], "flux_njy": flux, "flux_err_njy": err}


# ---------------------------------------------------------------------------------------------------------
# Light curves
# ---------------------------------------------------------------------------------------------------------

_ZTF_BANDS = ("g", "r", "i")
_ZTF_BAND_SHARE = (0.45, 0.45, 0.1)


def _point(mjd, band, flux, err, kind, survey, limit_sigma=5.0) -> dict:
    """One light-curve point in the stored shape (flux in nJy, AB magnitudes)."""
    point = {"mjd": round(float(mjd), 5), "band": band, "kind": kind}
    if kind == "limit":
        # Only an upper limit: the 5σ flux a detection would have needed, as a magnitude.
        mag = round(float(flux_to_mag(limit_sigma * err)), 4)
        point.update(flux_njy=None, flux_err_njy=round(float(err), 3), mag=mag, mag_err=None)
        return point
    mag = flux_to_mag(abs(flux)) if kind == "detection" else flux_to_mag(flux)
    point.update(
        flux_njy=round(float(flux), 3),
        flux_err_njy=round(float(err), 3),
        mag=None if not np.isfinite(mag) else round(float(mag), 4),
        mag_err=None if not np.isfinite(mag) or flux == 0 else round(float(1.0857 * err / abs(flux)), 4),
    )
    return point


def synthetic_light_curve(
    rng: np.random.Generator, subtype: str, current: dict, survey: str = "rubin"
) -> list[dict]:
    """The history of a synthetic subject and its current detection, oldest first.

    Points are dicts {"mjd", "band", "flux_njy", "flux_err_njy", "mag", "mag_err", "kind"} (kind
    "detection", "limit" or "forced"); the current detection (from `current`: mjd, band, flux_njy,
    flux_err_njy) also has "current": True. Real transients rise from non-detections (a supernova-like
    rise and decline; nuclear transients evolve more slowly), variable stars have a long history of
    detections of both signs, bogus subjects mostly nothing before now (a few recurring artefacts, such
    as dipoles, have sporadic earlier detections). Rubin gives earlier epochs as forced photometry below
    5σ, ZTF as upper limits.
    """
    now = float(current["mjd"])
    flux_now = float(current["flux_njy"])
    err_now = max(float(current["flux_err_njy"]), 1e-3)
    if survey == "ztf":
        n_prev = int(rng.integers(4, 25))
        span = rng.uniform(15.0, 60.0)
        bands = rng.choice(_ZTF_BANDS, size=n_prev, p=_ZTF_BAND_SHARE)
    else:
        n_prev = int(rng.integers(6, 30))
        span = rng.uniform(30.0, 120.0)
        bands = rng.choice(RUBIN_BANDS, size=n_prev, p=_BAND_SHARE)
    times = np.sort(now - rng.uniform(0.5, span, n_prev))
    errors = err_now * np.exp(rng.normal(0.0, 0.25, n_prev))
    colour = {band: float(np.exp(rng.normal(0.0, 0.2))) for band in set(bands) | {current["band"]}}
    scale = np.array([colour[b] / colour[current["band"]] for b in bands])

    if subtype in ("new_point_source", "nuclear_transient"):
        slow = subtype == "nuclear_transient"
        age = rng.uniform(8.0, 60.0) if slow else rng.uniform(2.0, 25.0)
        rise, fall = (rng.uniform(8.0, 25.0), rng.uniform(40.0, 150.0)) if slow else (
            rng.uniform(2.0, 8.0), rng.uniform(15.0, 50.0))  # fmt: skip

        def shape(t):
            dt = np.maximum(t - (now - age), 0.0)
            return (1.0 - np.exp(-dt / rise)) * np.exp(-dt / fall)

        true = flux_now / max(shape(np.array([now]))[0], 1e-6) * shape(times) * scale
    elif subtype == "variable_star":
        period = np.exp(rng.uniform(np.log(0.3), np.log(30.0)))
        phase = rng.uniform(0, 2 * np.pi)
        amplitude = abs(flux_now) * rng.uniform(0.8, 1.5)
        offset = flux_now - amplitude * np.sin(2 * np.pi * now / period + phase)
        true = (offset + amplitude * np.sin(2 * np.pi * times / period + phase)) * scale
    else:
        true = np.zeros(n_prev)
        if subtype in ("dipole", "bad_subtraction", "masked_bright_star") and rng.random() < 0.5:
            # A bright star that never subtracts cleanly: sporadic "detections" of either sign.
            hits = rng.random(n_prev) < 0.3
            true[hits] = rng.normal(0.0, 1.0, int(hits.sum())) * abs(flux_now)
    measured = true + errors * rng.standard_normal(n_prev)
    points = []
    for t, band, f, e in zip(times, bands, measured, errors, strict=True):
        if abs(f) >= 5.0 * e:
            points.append(_point(t, str(band), f, e, "detection", survey))
        elif survey == "ztf":
            points.append(_point(t, str(band), None, e, "limit", survey))
        else:
            points.append(_point(t, str(band), f, e, "forced", survey))
    last = _point(now, current["band"], flux_now, err_now, "detection", survey)
    last["current"] = True
    points.append(last)
    return points


def ztf_light_curves(metadata: list[dict], subtypes: list[str], seed: int = 0) -> list[list[dict]]:
    """Light curves for subjects of mlcore.synth.generate_triplets, from their candidate metadata
    (jd, fid, magpsf, sigmapsf, isdiffpos)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2F1]))
    curves = []
    for meta, subtype in zip(metadata, subtypes, strict=True):
        mag, sigma = float(meta["magpsf"]), float(meta["sigmapsf"])
        flux = float(mag_to_flux(mag)) * (1.0 if meta.get("isdiffpos", "t") == "t" else -1.0)
        current = {
            "mjd": float(meta["jd"]) - 2400000.5,
            "band": _ZTF_BANDS[int(meta.get("fid", 2)) - 1],
            "flux_njy": flux,
            "flux_err_njy": abs(flux) * sigma / 1.0857,
        }
        curves.append(synthetic_light_curve(rng, subtype, current, "ztf"))
    return curves


# ---------------------------------------------------------------------------------------------------------
# Alert packets: synthetic subjects in the shape Rubin's alert stream sends
# ---------------------------------------------------------------------------------------------------------


def _psf_stamp(fwhm_px: float, size: int = 21) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    sigma = fwhm_px / 2.355
    psf = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return (psf / psf.sum()).astype(np.float32)


def _cutout_fits(image: np.ndarray, variance: np.ndarray, psf: np.ndarray, meta: dict) -> bytes:
    """A cutout as Rubin sends one: a multi-extension FITS file with the image (nJy) and its WCS in
    the primary HDU, the variance plane as UNCERT (UTYPE VarianceUncertainty) and the PSF model."""
    import io

    from astropy.io import fits

    header = fits.Header()
    size = image.shape[-1]
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRPIX1"], header["CRPIX2"] = (size + 1) / 2.0, (size + 1) / 2.0
    header["CRVAL1"], header["CRVAL2"] = float(meta["ra"]), float(meta["dec"])
    (cd11, cd12), (cd21, cd22) = meta["cd"]
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = cd11, cd12, cd21, cd22
    header["BUNIT"] = "nJy"
    uncert = fits.ImageHDU(np.asarray(variance, dtype=np.float32), name="UNCERT")
    uncert.header["UTYPE"] = "VarianceUncertainty"
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=header),
            uncert,
            fits.ImageHDU(psf, name="PSFIMAGE"),
        ]
    )
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def alert_packet(batch: RubinBatch, index: int) -> dict:
    """Subject `index` of a RubinBatch as a Rubin alert packet (lsst.v10_0 layout, as a dict): the
    diaSource, the diaObject, its light curve as prvDiaSources and prvDiaForcedSources, the three
    cutouts as FITS bytes with WCS, variance and PSF. Ingestion reads it like a real alert
    (core.ingest.rubin_record), so synthetic Rubin subjects take the same path as real ones. The
    subtype and difficulty are top-level fields of the packet (not Rubin's), for the demo's records."""
    meta = batch.metadata[index]
    curve = batch.light_curves[index]
    source = {
        "diaSourceId": int(meta["diaSourceId"]),
        "diaObjectId": int(meta["diaObjectId"]),
        "midpointMjdTai": float(meta["midpointMjdTai"]),
        "ra": float(meta["ra"]),
        "dec": float(meta["dec"]),
        "band": meta["band"],
        "psfFlux": float(meta["psfFlux"]),
        "psfFluxErr": float(meta["psfFluxErr"]),
        "snr": meta["snr"],
        "x": float(meta["x"]),
        "y": float(meta["y"]),
    }
    previous = [p for p in curve if not p.get("current")]
    detections = [
        {
            "diaSourceId": int(meta["diaSourceId"]) * 100 + k,
            "diaObjectId": int(meta["diaObjectId"]),
            "midpointMjdTai": p["mjd"],
            "band": p["band"],
            "psfFlux": p["flux_njy"],
            "psfFluxErr": p["flux_err_njy"],
        }
        for k, p in enumerate(previous)
        if p["kind"] == "detection"
    ]
    forced = [
        {
            "diaObjectId": int(meta["diaObjectId"]),
            "midpointMjdTai": p["mjd"],
            "band": p["band"],
            "psfFlux": p["flux_njy"],
            "psfFluxErr": p["flux_err_njy"],
        }
        for p in previous
        if p["kind"] == "forced"
    ]
    stamps, variances = batch.stamps[index], batch.variances[index]
    psf = _psf_stamp(float(meta["seeing_arcsec"]) / float(meta["pixel_scale"]))
    packet = {
        "diaSourceId": source["diaSourceId"],
        "diaSource": source,
        "diaObject": {"diaObjectId": source["diaObjectId"], "ra": source["ra"], "dec": source["dec"]},
        "prvDiaSources": detections,
        "prvDiaForcedSources": forced,
        "synthetic": "true",
        "synthetic_subtype": batch.subtypes[index],
        "difficulty": meta.get("difficulty", ""),
    }
    for field_name, plane in zip(
        ("cutoutScience", "cutoutTemplate", "cutoutDifference"), range(3), strict=True
    ):
        packet[field_name] = _cutout_fits(stamps[plane], variances[plane], psf, meta)
    return packet
