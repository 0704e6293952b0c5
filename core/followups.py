"""Follow-up questions: "What kind?" after an answer, with the workflow's types.

`Workflow.followups` is a list, at most one entry per answer:

    {"answer": "bogus", "question": "What kind of bogus?", "mode": "optional",
     "types": [{"key": "cosmic_ray", "label": "Cosmic ray", "shortcut": "", "guide": "cosmic_ray"}, ...]}

* `answer`: the key of the workflow answer that the question follows (core.answers);
* `mode`: "required" (always asked; "not sure" is an answer), "optional" (asked, but the volunteer may
  pass it, or turn follow-ups off for themselves: fast mode) or "off" (kept, not asked);
* `types`: each type's `key` is stable and is what votes store (`Vote.followup`), so renaming a type
  changes only its `label`; keys are unique across all of a workflow's follow-ups, so a key names one
  type (aggregation treats the union as one set of K classes). `guide` names the field-guide example
  whose thumbnail the page shows (a built-in subtype, or "").

"Not sure" (`NOT_SURE`) is always allowed and never listed: it is stored as the answer to the question
(it says the volunteer looked and could not tell), while "" means the question was not answered.
"""

from __future__ import annotations

from core.answers import KEY_PATTERN, LABEL_MAX
from core.workflow_content import BUILTIN_TITLES

NOT_SURE = "not_sure"
NOT_SURE_LABEL = "Other / not sure"
REQUIRED, OPTIONAL, OFF = "required", "optional", "off"
MODES = [(REQUIRED, "Always asked"), (OPTIONAL, "Asked, may be passed (fast mode allowed)"), (OFF, "Off")]
# At most nine: every type has a digit key (1..9) on the classify page, 0 being "not sure".
MAX_TYPES = 9
# Letters the classify page uses while a follow-up is shown: F fast mode, U undo, G the rare-gem flag,
# S skip. A type may not take them, nor a letter of one of the workflow's answers.
RESERVED_SHORTCUTS = frozenset("FUGS")
QUESTION_MAX = 200
DEFAULT_QUESTION = "What kind?"

# The ZTF field guide's types (mlcore.synth's bogus subtypes), and the kinds of real transient.
DEFAULT_BOGUS_TYPES = (
    "masked_bright_star",
    "bad_subtraction",
    "ghost",
    "satellite_streak",
    "cosmic_ray",
    "hot_pixel",
)
DEFAULT_REAL_TYPES = ("new_point_source", "variable_star", "nuclear_transient", "moving_object")
TYPE_LABELS = {
    "masked_bright_star": "Masked bright star",
    "bad_subtraction": "Bad subtraction (yin-yang)",
    "ghost": "Ghost / dementor",
    "satellite_streak": "Satellite streak",
    "cosmic_ray": "Cosmic ray",
    "hot_pixel": "Hot pixel or column",
    "new_point_source": "New point source",
    "variable_star": "Variable star",
    "nuclear_transient": "Nuclear",
    "moving_object": "Moving object",
}
# Types with a built-in field-guide example (core.workflow_content's simulated subtypes).
_GUIDE_EXAMPLES = set(BUILTIN_TITLES)


class FollowupError(ValueError):
    """Follow-ups that cannot work, or a vote's follow-up that does not fit; the message says why."""


def default_types(side: str) -> list[dict]:
    keys = DEFAULT_BOGUS_TYPES if side == "bogus" else DEFAULT_REAL_TYPES
    return [
        {"key": k, "label": TYPE_LABELS[k], "shortcut": "", "guide": k if k in _GUIDE_EXAMPLES else ""}
        for k in keys
    ]


def default_followup(answer: str, side: str, mode: str = OPTIONAL) -> dict:
    """The default "What kind?" after an answer that counts as `side` ("real" or "bogus")."""
    return {"answer": answer, "question": DEFAULT_QUESTION, "mode": mode, "types": default_types(side)}


def default_followups(answers) -> list[dict]:
    """A real/bogus workflow's follow-ups when the builder attaches them: "What kind?" after its first
    bogus answer (optional) and after its first real answer (off until the scientist turns it on)."""
    from core import answers as answer_rules

    result = []
    for side, mode in (("bogus", OPTIONAL), ("real", OFF)):
        keys = answer_rules.keys_counting_as(answers, side)
        if keys:
            result.append(default_followup(keys[0], side, mode))
    return result


def validate(raw, answers) -> list[dict]:
    """Clean follow-ups for a workflow with these `answers`, or raise FollowupError."""
    from core import answers as answer_rules

    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise FollowupError("Follow-ups must be a list.")
    answer_keys = answer_rules.keys(answers)
    answer_letters = {
        o["shortcut"].upper(): o["label"] for o in answer_rules.options(answers) if o.get("shortcut")
    }
    cleaned, seen_answers, seen_types = [], set(), {}
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise FollowupError(f"Follow-up {i} must be an object with an answer and types.")
        answer = str(item.get("answer") or "").strip().lower()
        if answer not in answer_keys:
            raise FollowupError(
                f"Follow-up {i} follows '{answer}', which is not an answer of this workflow "
                f"({', '.join(answer_keys)})."
            )
        if answer in seen_answers:
            raise FollowupError(f"The answer '{answer}' has two follow-up questions: one is allowed.")
        seen_answers.add(answer)
        question = str(item.get("question") or "").strip() or DEFAULT_QUESTION
        if len(question) > QUESTION_MAX:
            raise FollowupError(f"Follow-up {i}: the question is longer than {QUESTION_MAX} characters.")
        mode = item.get("mode") or OPTIONAL
        if mode not in dict(MODES):
            raise FollowupError(f"Follow-up {i}: mode must be one of {', '.join(dict(MODES))}.")
        types = item.get("types")
        if not isinstance(types, list) or not types:
            raise FollowupError(f"Follow-up {i} needs at least one type.")
        if len(types) > MAX_TYPES:
            raise FollowupError(f"Follow-up {i}: at most {MAX_TYPES} types.")
        clean_types, shortcuts = [], {}
        for j, t in enumerate(types, start=1):
            if isinstance(t, str):
                t = {"key": t}
            if not isinstance(t, dict):
                raise FollowupError(f"Follow-up {i}, type {j} must be an object with a key and a label.")
            key = str(t.get("key") or "").strip().lower()
            if not KEY_PATTERN.match(key):
                raise FollowupError(
                    f"Follow-up {i}, type {j}: the key '{key}' must be 1–30 lower-case letters, digits, "
                    "'-' or '_'."
                )
            if key == NOT_SURE:
                raise FollowupError(f"'{NOT_SURE}' is reserved: every follow-up has “{NOT_SURE_LABEL}”.")
            if key in seen_types:
                raise FollowupError(
                    f"The type key '{key}' is used twice (after '{seen_types[key]}' and '{answer}'): "
                    "each type needs its own key."
                )
            seen_types[key] = answer
            label = (
                str(t.get("label") or "").strip()
                or TYPE_LABELS.get(key)
                or key.replace("_", " ").capitalize()
            )
            if len(label) > LABEL_MAX:
                raise FollowupError(
                    f"Follow-up {i}, type {j}: the label is longer than {LABEL_MAX} characters."
                )
            shortcut = str(t.get("shortcut") or "").strip().upper()
            if shortcut and not (len(shortcut) == 1 and shortcut.isascii() and shortcut.isalpha()):
                raise FollowupError(f"Follow-up {i}, type {j}: the keyboard key must be one letter (A–Z).")
            if shortcut in answer_letters:
                raise FollowupError(
                    f"Follow-up {i}, type {j}: the keyboard key {shortcut} is the answer "
                    f"'{answer_letters[shortcut]}'s: choose another letter."
                )
            if shortcut in RESERVED_SHORTCUTS:
                raise FollowupError(
                    f"Follow-up {i}, type {j}: the keyboard key {shortcut} is taken on the classify page "
                    "(F fast mode, U undo, G rare gem, S skip): choose another letter."
                )
            if shortcut and shortcut in shortcuts:
                raise FollowupError(
                    f"Follow-up {i}: '{shortcuts[shortcut]}' and '{label}' both use the keyboard key {shortcut}."
                )
            if shortcut:
                shortcuts[shortcut] = label
            guide = str(t.get("guide") or "").strip()
            if guide and guide not in _GUIDE_EXAMPLES:
                guide = ""
            clean_types.append({"key": key, "label": label, "shortcut": shortcut, "guide": guide})
        cleaned.append({"answer": answer, "question": question, "mode": mode, "types": clean_types})
    return cleaned


def followup_for(followups, answer: str) -> dict | None:
    """The follow-up asked after `answer` (mode not "off"), or None."""
    for f in followups or []:
        if f.get("answer") == answer and f.get("mode", OPTIONAL) != OFF:
            return f
    return None


def type_keys(followups) -> list[str]:
    """Every type key of the workflow, in order (the K classes of the type aggregation), "off" ones
    included: votes given while a question was on keep their meaning."""
    return [t["key"] for f in followups or [] for t in f.get("types", [])]


def type_labels(followups) -> dict[str, str]:
    labels = {t["key"]: t["label"] for f in followups or [] for t in f.get("types", [])}
    labels[NOT_SURE] = NOT_SURE_LABEL
    return labels


def check_vote(followups, answer: str, followup: str | None) -> str:
    """The follow-up a vote stores ("" for none), or FollowupError (a 400) when it does not fit: a type
    that is not one of the question's, a follow-up without an answer or for an answer that has none."""
    followup = (followup or "").strip().lower()
    if not followup:
        return ""
    if not answer or answer == "skip":
        raise FollowupError("A follow-up answer needs a main answer: skip has no follow-up question.")
    question = followup_for(followups, answer)
    if question is None:
        raise FollowupError(f"The answer '{answer}' has no follow-up question in this workflow.")
    allowed = [t["key"] for t in question["types"]]
    if followup != NOT_SURE and followup not in allowed:
        raise FollowupError(
            f"'{followup}' is not a type of this question ({', '.join(allowed + [NOT_SURE])})."
        )
    return followup


def check_edit(old, new, used_keys) -> None:
    """Refuse an edit that removes a type some vote stores (`used_keys`): its votes would lose their
    meaning. Renaming (same key, new label) and turning a question off are always fine; moving a used
    type to another answer's question is not (its votes answered the first one)."""
    used = set(used_keys)
    removed = sorted(set(type_keys(old)) - set(type_keys(new)))
    in_use = [k for k in removed if k in used]
    if in_use:
        raise FollowupError(
            f"The type{'s' if len(in_use) > 1 else ''} {', '.join(in_use)} cannot be removed: votes "
            "already name it. Rename it (keep its key), or turn its question off, instead."
        )
    answer_of = lambda fs: {t["key"]: f["answer"] for f in fs or [] for t in f.get("types", [])}  # noqa: E731
    before, after = answer_of(old), answer_of(new)
    moved = sorted(k for k in used if k in before and k in after and before[k] != after[k])
    if moved:
        raise FollowupError(
            f"The type {moved[0]} answers the question after '{before[moved[0]]}' in votes already: it "
            f"cannot move to the question after '{after[moved[0]]}'. Add a new type there instead."
        )


def asked(followups) -> list[dict]:
    """The questions asked now (mode not "off"), as API clients see them: {answer, question, mode,
    types: [{key, label}]}; "not_sure" is always allowed too."""
    return [
        {
            "answer": f["answer"],
            "question": f.get("question") or DEFAULT_QUESTION,
            "mode": f.get("mode", OPTIONAL),
            "types": [{"key": t["key"], "label": t["label"]} for t in f.get("types", [])],
        }
        for f in followups or []
        if f.get("mode", OPTIONAL) != OFF
    ]


def keep_answered(followups, answer_keys) -> list[dict]:
    """The follow-ups whose answer is still one of `answer_keys`: when a scientist removes an answer,
    its question goes with it (an answer with votes cannot be removed, so no stored type loses its
    question this way)."""
    keys = set(answer_keys)
    return [f for f in followups or [] if f.get("answer") in keys]


def page_questions(followups, answer_buttons, thumbnail=None) -> list[dict]:
    """The questions the classify page shows after an answer, with each type's keys: its position
    (1..n) and its letter shortcut if set, "0" for "not sure". `answer_buttons` (core.answers.buttons)
    are the keys of the main question; a type letter that one of them uses would answer the wrong
    question when pressed too fast, so it is left out (the digit always works). `thumbnail(guide)`
    gives the example image's URL of a field-guide type ("" for none)."""
    reserved = {k for b in answer_buttons for k in b.get("keys", []) if not k.isdigit()}
    answer_labels = {b.get("key"): b.get("label", "") for b in answer_buttons}
    # Keys the follow-up itself uses for something else: Escape/Backspace go back, Enter passes,
    # F is fast mode, U undo, G the rare-gem flag.
    reserved |= {"F", "U", "G"}
    result = []
    for f in followups or []:
        if f.get("mode", OPTIONAL) == OFF:
            continue
        types = []
        for i, t in enumerate(f.get("types", []), start=1):
            keys = [str(i)] if i <= 9 else []
            if t.get("shortcut") and t["shortcut"] not in reserved:
                keys.insert(0, t["shortcut"])
            guide = t.get("guide") or ""
            types.append(
                {
                    "key": t["key"],
                    "label": t["label"],
                    "keys": keys,
                    "thumbnail": thumbnail(guide) if thumbnail and guide else "",
                }
            )
        types.append({"key": NOT_SURE, "label": NOT_SURE_LABEL, "keys": ["0"], "thumbnail": ""})
        result.append(
            {
                "answer": f["answer"],
                "answer_label": answer_labels.get(f["answer"]) or f["answer"],
                "question": f.get("question") or DEFAULT_QUESTION,
                "mode": f.get("mode", OPTIONAL),
                "types": types,
            }
        )
    return result


def guide_types() -> list[str]:
    """The field-guide types with a built-in example image (what a type's `guide` may name)."""
    return sorted(_GUIDE_EXAMPLES)


def page_context(workflow) -> dict:
    """The task pages' follow-up questions (the classify page, the panel task page, which shows its
    partial): the questions with their keys and thumbnails (each field-guide example's difference
    image, looked up once per render), the answers they follow, and whether one may be passed."""
    if not workflow.followups:
        return {}
    from core.answers import buttons
    from core.workflow_content import builtin_example_urls

    urls: dict[str, str] = {}

    def thumbnail(guide: str) -> str:
        if guide not in urls:
            urls[guide] = builtin_example_urls(guide)["difference"]
        return urls[guide]

    questions = page_questions(workflow.followups, buttons(workflow.answers), thumbnail)
    return {
        "followups": questions,
        "followup_answers": [q["answer"] for q in questions],
        "followup_optional": any(q["mode"] == OPTIONAL for q in questions),
    }
