"""The field guide: one rendered example of every real and bogus type.

Examples come from the synthetic generator with a fixed seed and are rendered once into
media storage (re-rendered only when the rendering version changes).
"""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from core.rendering import RENDER_VERSION, render_triplet_pngs
from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES, SUBTYPE_DESCRIPTIONS, generate_one

TITLES = {
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


def subtype_title(subtype: str) -> str:
    return TITLES.get(subtype, subtype.replace("_", " ").capitalize())


def _example_urls(subtype: str) -> dict[str, str]:
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


def field_guide_entries() -> list[dict]:
    entries = []
    for kind, subtypes in (("real", REAL_SUBTYPES), ("bogus", BOGUS_SUBTYPES)):
        for subtype in subtypes:
            entries.append(
                {
                    "subtype": subtype,
                    "kind": kind,
                    "title": subtype_title(subtype),
                    "description": SUBTYPE_DESCRIPTIONS.get(subtype, ""),
                    "images": _example_urls(subtype),
                }
            )
    return entries
