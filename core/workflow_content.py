"""A workflow's volunteer-facing content: tutorial steps and field-guide entries.

Both are JSON lists on the workflow (`Workflow.tutorial`, `Workflow.field_guide`):

    tutorial:    [{"title": "...", "text": "Markdown", "image": REF}, ...]
    field_guide: [{"answer": "real", "subtype": "variable_star", "title": "...", "text": "Markdown",
                   "image": REF}, ...]

REF names an image: "" (none), "subject:<id>" (a subject of the project: its difference image, or
its only image), "upload:<name>" (a file the scientist uploaded, in private storage, served by
`content_image` only to those who may volunteer) or "builtin:<subtype>" (the built-in ZTF field
guide's simulated example: science, reference and difference).

Markdown is rendered and then sanitised (core.markup: nh3 with an allow-list of tags; no scripts,
no event handlers, no style, no images), so what a scientist types can never run in a volunteer's
browser. The text is stored as typed and sanitised whenever it is shown.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath

from django.core.files.base import ContentFile
from django.urls import reverse

from core.formats import parse_id
from core.markup import render_markdown
from core.storage import private_storage

TEXT_MAX = 5000
TITLE_MAX = 120
MAX_STEPS = 20
MAX_ENTRIES = 40
IMAGE_MAX_BYTES = 4 * 1024 * 1024
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
UPLOAD_PREFIX = "workflow-content/"

__all__ = ["ContentError", "field_guide_entries", "gem_help", "render_markdown", "tutorial_steps"]


class ContentError(ValueError):
    """Content that cannot be stored; the message is for the scientist."""


# What is worth flagging as a rare gem (core.gems): a step of the default tutorial of both kinds of
# workflow (stored in new real/bogus workflows, shown by the pages when a workflow has no tutorial of
# its own) and the field guide's "Rare gems" section.
GEM_TITLE = "Rare gems"
GEM_HELP = (
    "Something that looks like **none of the field guide's examples** is worth flagging: an odd shape, "
    "a ring or an arc, a new source sitting on a galaxy, anything you would show a friend. Press "
    "**Rare gem?** (**G**) and, if you like, add a short note on what caught your eye, then answer as "
    "usual: the flag never replaces your answer."
)
GEM_GUIDE = (
    "Flag it when you would stop and stare: a shape none of the entries above has (rings, arcs, "
    "several blobs in a line or a pattern), a new source on or next to a galaxy rather than at its "
    "centre, something very much brighter or bigger than anything around it, or anything you would "
    "show a friend. A short note helps the scientists who look at the flags: *arc to the left of the "
    "centre*, *ring around a faint galaxy*.\n\n"
    "Not a gem: an ordinary candidate you are unsure about. Answer it as well as you can, or skip it."
)


def default_tutorial() -> list[dict]:
    """The steps a new real/bogus workflow starts with (the classify page's built-in tutorial)."""
    return [
        {
            "title": "Three images",
            "text": "**Science** is the sky tonight, **Reference** the same patch before, "
            "**Difference** what changed.",
            "image": "",
        },
        {
            "title": "Real",
            "text": "A **real** transient is a round, star-like blob in the difference, as blurry as the "
            "stars around it.",
            "image": "builtin:new_point_source",
        },
        {
            "title": "Bogus",
            "text": "**Bogus**: sharp specks (cosmic rays, hot pixels), streaks, rings around bright stars, "
            "or a black-and-white pair where the images didn't line up.",
            "image": "builtin:bad_subtraction",
        },
        {
            "title": "Keys",
            "text": "Each answer has its keyboard key on its button; **S** skips. The next one appears at once.",
            "image": "",
        },
        {"title": GEM_TITLE, "text": GEM_HELP, "image": ""},
    ]


def default_field_guide() -> list[dict]:
    """The built-in ZTF field guide as editable entries: one per real and bogus type."""
    from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES, SUBTYPE_DESCRIPTIONS

    return [
        {
            "answer": answer,
            "subtype": subtype,
            "title": builtin_title(subtype),
            "text": SUBTYPE_DESCRIPTIONS.get(subtype, ""),
            "image": f"builtin:{subtype}",
        }
        for answer, subtypes in (("real", REAL_SUBTYPES), ("bogus", BOGUS_SUBTYPES))
        for subtype in subtypes
    ]


BUILTIN_TITLES = {
    "new_point_source": "New point source",
    "variable_star": "Variable star",
    "nuclear_transient": "Nuclear transient",
    "masked_bright_star": "Masked bright star",
    "cosmic_ray": "Cosmic ray",
    "bad_subtraction": "Bad subtraction (“yin-yang” dipole)",
    "ghost": "Ghost / “dementor”",
    "satellite_streak": "Satellite streak",
    "hot_pixel": "Hot pixel or column",
}


def builtin_title(subtype: str) -> str:
    return BUILTIN_TITLES.get(subtype, subtype.replace("_", " ").capitalize())


def builtin_example_urls(subtype: str) -> dict[str, str]:
    """URLs of the built-in example of `subtype` (science, reference, difference): simulated with a
    fixed seed and rendered once into media storage (again only when the rendering version changes)."""
    from django.core.files.storage import default_storage

    from core.rendering import RENDER_VERSION, render_triplet_pngs
    from mlcore.synth import generate_one

    names = {
        role: f"fieldguide/v{RENDER_VERSION}/{subtype}-{role}.png"
        for role in ("science", "reference", "difference")
    }
    if not all(default_storage.exists(n) for n in names.values()):
        array, _ = generate_one(subtype, seed=7)
        pngs = render_triplet_pngs(array)
        for role, name in names.items():
            if default_storage.exists(name):
                default_storage.delete(name)
            default_storage.save(name, ContentFile(pngs[role]))
    return {role: default_storage.url(name) for role, name in names.items()}


def builtin_subtypes() -> set[str]:
    from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES

    return set(REAL_SUBTYPES) | set(BOGUS_SUBTYPES)


# --- Images -------------------------------------------------------------------------------------

# How wide the field guide shows its example images: rendering gives 252 px PNGs of 63 px stamps
# (4 image pixels per stamp pixel, core.rendering), so 189 px is 3 screen pixels per stamp pixel,
# as sharp as the classify page and big enough to see what the text describes.
FIELD_GUIDE_IMAGE_PX = 189


def store_upload(workflow, upload) -> str:
    """Store an uploaded PNG/JPEG for the workflow's content; the REF to put in a step or entry."""
    from PIL import Image, UnidentifiedImageError

    suffix = PurePosixPath(upload.name or "").suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ContentError("Images must be PNG or JPEG files.")
    if upload.size > IMAGE_MAX_BYTES:
        raise ContentError(f"Images may be at most {IMAGE_MAX_BYTES // (1024 * 1024)} MB.")
    data = upload.read()
    try:
        import io

        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError):
        raise ContentError(f"'{upload.name}' is not a readable PNG or JPEG image.")
    name = f"{UPLOAD_PREFIX}{workflow.pk}/{uuid.uuid4().hex}{suffix}"
    return "upload:" + private_storage().save(name, ContentFile(data))


def check_ref(workflow, ref: str, new_uploads=()) -> str:
    """A REF as typed or picked in a form, checked against the project; ContentError otherwise."""
    from core.models import Subject

    ref = (ref or "").strip()
    if not ref:
        return ""
    kind, _, value = ref.partition(":")
    if kind not in ("subject", "builtin", "upload"):
        # A bare id or external id (which may itself contain a colon) names a subject.
        kind, value = "subject", ref
    if kind == "subject":
        subject = Subject.objects.filter(project_id=workflow.project_id, pk=parse_id(value) or 0)
        if not subject.exists():
            # A scientist knows subjects by their external id; accept that as well.
            found = Subject.objects.filter(project_id=workflow.project_id, external_id=value).first()
            if found is None:
                raise ContentError(f"This project has no subject '{value}'.")
            return f"subject:{found.pk}"
        return f"subject:{int(value)}"
    if kind == "builtin":
        if value not in builtin_subtypes():
            raise ContentError(f"'{value}' is not a type of the built-in field guide.")
        return ref
    # An upload of this workflow's own (stored under its prefix), never another workflow's file.
    own = bool(re.fullmatch(rf"{UPLOAD_PREFIX}{workflow.pk}/[0-9a-f]{{32}}\.(png|jpe?g)", value)) and (
        private_storage().exists(value)
    )
    if not (own or ref in new_uploads):
        raise ContentError("That uploaded image does not belong to this workflow.")
    return ref


def _refs(workflow) -> set[str]:
    return {item.get("image", "") for item in [*(workflow.tutorial or []), *(workflow.field_guide or [])]}


def images_for(workflow, ref: str) -> list[dict]:
    """[{"url", "alt"}] of a REF: one image, or science/reference/difference for a built-in example."""
    from core.models import Subject

    kind, _, value = (ref or "").partition(":")
    if kind == "subject" and parse_id(value) is not None:
        subject = Subject.objects.filter(project_id=workflow.project_id, pk=parse_id(value)).first()
        if subject is None:
            return []
        roles = subject.images or {}
        role = "difference" if "difference" in roles else next(iter(roles), None)
        url = subject.image_url(role) if role else None
        return [{"url": url, "alt": f"Example: {subject.external_id}"}] if url else []
    if kind == "builtin" and value in builtin_subtypes():
        urls = builtin_example_urls(value)
        return [
            {"url": urls[role], "alt": f"{builtin_title(value)}: {role} image"}
            for role in ("science", "reference", "difference")
        ]
    if kind == "upload" and value.startswith(UPLOAD_PREFIX):
        url = reverse(
            "core:workflow_content_image",
            args=[workflow.project.slug, workflow.slug, PurePosixPath(value).name],
        )
        return [{"url": url, "alt": "Example image"}]
    return []


def upload_name(workflow, filename: str) -> str | None:
    """The stored name of an uploaded content image of the workflow, if its content refers to it."""
    name = f"{UPLOAD_PREFIX}{workflow.pk}/{PurePosixPath(filename).name}"
    return name if f"upload:{name}" in _refs(workflow) else None


# --- What pages show ----------------------------------------------------------------------------


def gem_help() -> dict:
    """The rare-gem texts as sanitised HTML: `tutorial` (a step) and `guide` (the field guide's section)."""
    return {"title": GEM_TITLE, "tutorial": render_markdown(GEM_HELP), "guide": render_markdown(GEM_GUIDE)}


def tutorial_steps(workflow) -> list[dict]:
    steps = []
    for step in workflow.tutorial or []:
        images = images_for(workflow, step.get("image", ""))
        steps.append(
            {
                "title": step.get("title", ""),
                "html": render_markdown(step.get("text", "")),
                "image_url": images[-1]["url"] if images else None,
                "image_alt": images[-1]["alt"] if images else "",
            }
        )
    return steps


def field_guide_entries(workflow) -> list[dict]:
    """The workflow's field guide; the built-in ZTF guide for a real/bogus workflow that has none yet
    (workflows made before field guides were editable)."""
    entries = workflow.field_guide or []
    if not entries and workflow.kind == workflow.REAL_BOGUS:
        entries = default_field_guide()
    labels = {o["key"]: o["label"] for o in workflow.answer_options}
    result = []
    for i, entry in enumerate(entries):
        answer = entry.get("answer", "")
        result.append(
            {
                "anchor": entry.get("subtype") or f"{workflow.slug}-{i + 1}",
                "answer": answer,
                "answer_label": labels.get(answer, answer.capitalize()),
                "subtype": entry.get("subtype", ""),
                "title": entry.get("title", ""),
                "html": render_markdown(entry.get("text", "")),
                "images": images_for(workflow, entry.get("image", "")),
            }
        )
    return result


# --- Cleaning what forms and the API send -------------------------------------------------------


def clean_steps(workflow, steps, new_uploads=()) -> list[dict]:
    """Checked tutorial steps; `new_uploads`: REFs of images stored for this very request."""
    if not isinstance(steps, list):
        raise ContentError("The tutorial must be a list of steps.")
    if len(steps) > MAX_STEPS:
        raise ContentError(f"At most {MAX_STEPS} tutorial steps.")
    cleaned = []
    for i, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            raise ContentError(f"Step {i} must be an object with a text.")
        text = _text(step.get("text"), f"Step {i}")
        if not text:
            raise ContentError(f"Step {i} needs a text.")
        cleaned.append(
            {
                "title": _title(step.get("title"), f"Step {i}"),
                "text": text,
                "image": _ref(workflow, step.get("image"), f"Step {i}", new_uploads),
            }
        )
    return cleaned


def clean_entries(workflow, entries, new_uploads=()) -> list[dict]:
    if not isinstance(entries, list):
        raise ContentError("The field guide must be a list of entries.")
    if len(entries) > MAX_ENTRIES:
        raise ContentError(f"At most {MAX_ENTRIES} field-guide entries.")
    keys = set(workflow.answer_keys)
    cleaned = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ContentError(f"Entry {i} must be an object.")
        answer = str(entry.get("answer") or "").strip().lower()
        if keys and answer not in keys:
            raise ContentError(f"Entry {i}: '{answer}' is not an answer of this workflow.")
        title = _title(entry.get("title"), f"Entry {i}")
        if not title:
            raise ContentError(f"Entry {i} needs a title.")
        subtype = str(entry.get("subtype") or "").strip()[:40]
        cleaned.append(
            {
                "answer": answer,
                "subtype": subtype,
                "title": title,
                "text": _text(entry.get("text"), f"Entry {i}"),
                "image": _ref(workflow, entry.get("image"), f"Entry {i}", new_uploads),
            }
        )
    return cleaned


def _text(value, where: str) -> str:
    text = str(value or "").strip()
    if len(text) > TEXT_MAX:
        raise ContentError(f"{where}: the text is longer than {TEXT_MAX} characters.")
    return text


def _title(value, where: str) -> str:
    title = str(value or "").strip()
    if len(title) > TITLE_MAX:
        raise ContentError(f"{where}: the title is longer than {TITLE_MAX} characters.")
    return title


def _ref(workflow, value, where: str, new_uploads=()) -> str:
    try:
        return check_ref(workflow, str(value or ""), new_uploads)
    except ContentError as exc:
        raise ContentError(f"{where}: {exc}")
