from django import template

register = template.Library()

FILTER_NAMES = {1: "g", 2: "r", 3: "i"}
ANSWER_KEYS = {"real": ("R", "1"), "bogus": ("B", "2"), "skip": ("S", "3")}


@register.filter
def plain_facts(subject) -> list[str]:
    """Key candidate metadata in plain words (never the ground truth or the model's opinion)."""
    meta = subject.metadata or {}
    facts = []
    mag = meta.get("magpsf")
    if isinstance(mag, int | float):
        band = FILTER_NAMES.get(meta.get("fid"), meta.get("filter", ""))
        band_text = f" in the {band} band" if band else ""
        facts.append(f"Brightness: magnitude {mag:.1f}{band_text} (bigger numbers are fainter).")
    fwhm = meta.get("fwhm")
    if isinstance(fwhm, int | float) and fwhm > 0:
        facts.append(f"Blur (FWHM): {fwhm:.1f} pixels — a real star is about as blurry as the others.")
    sign = meta.get("isdiffpos")
    if sign in ("t", "1", True, "true"):
        facts.append("Difference is positive: brighter now than in the reference.")
    elif sign in ("f", "0", False, "false"):
        facts.append("Difference is negative: fainter now than in the reference.")
    return facts


@register.filter
def answer_keys(answer: str) -> tuple[str, ...]:
    return ANSWER_KEYS.get(answer, (answer[:1].upper(),))


@register.filter
def image_url(subject, role: str) -> str | None:
    return subject.image_url(role)
