"""The field guide: one rendered example of every real and bogus type.

Examples come from the synthetic generator with a fixed seed and are rendered once into
media storage (re-rendered only when the rendering version changes).
"""

from core.workflow_content import BUILTIN_TITLES as TITLES  # noqa: F401 - kept for importers
from core.workflow_content import builtin_example_urls as _example_urls
from core.workflow_content import builtin_title as subtype_title
from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES, SUBTYPE_DESCRIPTIONS

# The examples and titles live in core.workflow_content: a new real/bogus workflow's editable field
# guide starts from them.


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
