from django import template

register = template.Library()

FILTER_NAMES = {1: "g", 2: "r", 3: "i"}
ANSWER_KEYS = {"real": ("R", "1"), "bogus": ("B", "2"), "skip": ("S", "3")}


@register.filter
def plain_facts(subject) -> list[str]:
    """Key candidate metadata in plain words, the same for ZTF and Rubin alerts (core.alerts writes
    the survey-independent keys). Never the ground truth, the model's opinion or the survey's own
    real/bogus score (rb, drb, reliability): volunteers answer before they see any of those."""
    meta = subject.metadata or {}
    facts = []
    mag = meta.get("mag", meta.get("magpsf"))
    if isinstance(mag, int | float) and not isinstance(mag, bool):
        band = meta.get("band") or FILTER_NAMES.get(meta.get("fid"), meta.get("filter", ""))
        band_text = f" in the {band} band" if band else ""
        facts.append(f"Brightness: magnitude {mag:.1f}{band_text} (bigger numbers are fainter).")
    fwhm = meta.get("fwhm")
    if isinstance(fwhm, int | float) and fwhm > 0:
        facts.append(f"Blur (FWHM): {fwhm:.1f} pixels — a real star is about as blurry as the others.")
    snr = meta.get("snr")
    if isinstance(snr, int | float) and not isinstance(snr, bool) and snr > 0:
        facts.append(f"Signal-to-noise: {snr:.0f} — how clearly it stands out from the noise (5 is barely).")
    sign = meta.get("difference_sign")
    if not sign:
        raw = meta.get("isdiffpos")
        if raw in ("t", "1", True, "true"):
            sign = "positive"
        elif raw in ("f", "0", False, "false"):
            sign = "negative"
    if meta.get("is_dipole") is True:
        # A dipole's orange and blue lobes nearly cancel: its overall flux may have either sign, so
        # saying "brighter" or "fainter" would not match what the picture shows.
        facts.append(
            "Difference is a dipole: brighter (orange) on one side and fainter (blue) on the other, "
            "which often means the two images did not line up."
        )
    elif sign == "positive":
        facts.append("Difference is positive: brighter now than in the reference.")
    elif sign == "negative":
        facts.append("Difference is negative: fainter now than in the reference.")
    if meta.get("known_ss_object") is True:
        name = meta.get("ss_designation")
        named = f" ({name})" if isinstance(name, str) and name else ""
        facts.append(f"This is a known asteroid{named}: a solar-system object moving from night to night.")
    return facts


@register.filter
def answer_keys(answer: str) -> tuple[str, ...]:
    return ANSWER_KEYS.get(answer, (answer[:1].upper(),))


@register.filter
def answer_buttons(workflow) -> list[dict]:
    """The workflow's answer buttons with their keyboard keys, then skip (core.answers.buttons)."""
    from core.answers import buttons

    return buttons(workflow.answers)


@register.simple_tag
def tutorial_steps(workflow) -> list[dict]:
    """The workflow's tutorial steps, Markdown rendered and sanitised (core.workflow_content)."""
    from core.workflow_content import tutorial_steps as steps

    return steps(workflow)


@register.simple_tag
def gem_help() -> dict:
    """What is worth flagging as a rare gem, as sanitised HTML (core.workflow_content.gem_help)."""
    from core.workflow_content import gem_help as texts

    return texts()


@register.filter
def image_url(subject, role: str) -> str | None:
    return subject.image_url(role)


@register.simple_tag
def light_curve(subject, workflow=None) -> dict | None:
    """The subject's light-curve plot for the classify page ({"url", "alt", "width", "height"}), or
    None when the workflow hides it or there is no history; drawn into storage once (core.lightcurves)."""
    from core.lightcurves import light_curve_for_page

    return light_curve_for_page(subject, workflow)


@register.simple_tag
def stretch_attrs(subject, role: str) -> str:
    """`data-role` and one `data-stretch-<preset>="URL"` per contrast preset of the subject's `role`
    image, for the classify page's stamp tools (static/skyvote/stamp_tools.js swaps the src); empty
    when the image has no presets. Each URL is signed for its preset (core.views_files)."""
    from django.utils.html import format_html, format_html_join

    from core.rendering import STRETCHES
    from core.views_files import subject_image_url

    urls = [(stretch, subject_image_url(subject, role, stretch)) for stretch in STRETCHES]
    if not all(url for _, url in urls):
        return ""
    return format_html('data-role="{}" {}', role, format_html_join(" ", 'data-stretch-{}="{}"', urls))


@register.filter
def pseudonym(participant_id, project) -> str:
    """A participant as every page shows them: the project's pseudonym (Project.pseudonym, as the
    volunteer table, the API and exports do), never the raw id."""
    if participant_id is None or project is None:
        return ""
    return project.pseudonym(participant_id)
