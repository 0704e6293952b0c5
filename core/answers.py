"""A real/bogus workflow's answers: what volunteers may say, and what each answer means.

`Workflow.answers` is a list of objects, one per answer button:

    {"key": "real", "label": "Real", "shortcut": "R", "help": "", "counts_as": "real"}

* `key`: stable and stored in every vote (`Vote.answer`) and in `Subject.answer_counts`, so renaming
  a button's label never makes old votes unreadable;
* `label`, `help`: what the volunteer sees;
* `shortcut`: one keyboard key (a letter); the answer's position (1, 2, ...) works as a key too;
* `counts_as`: "real", "bogus" or "" — which side of P(real) a vote for it counts on. Aggregation
  (SWAP, Dawid–Skene), skills, gold checks and consensus use this; an answer that counts as neither
  ("not sure") is stored and counted as a vote but moves no belief.

Workflows made before answers were objects stored a list of strings; `options` still reads those
(the migration core 0006 converts them), so a vote's stored key always finds its answer.
"""

from __future__ import annotations

import re

REAL, BOGUS, NEITHER = "real", "bogus", ""
COUNTS_AS_CHOICES = [(REAL, "Real"), (BOGUS, "Bogus"), (NEITHER, "Neither (e.g. not sure)")]
SKIP = "skip"
SKIP_SHORTCUT = "S"
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,29}$")
MAX_ANSWERS = 8
LABEL_MAX = 60
HELP_MAX = 300

# The defaults of answers given only by key (the CLI's --answers, old workflows' strings).
KNOWN = {
    "real": {"label": "Real", "shortcut": "R", "counts_as": REAL},
    "bogus": {"label": "Bogus", "shortcut": "B", "counts_as": BOGUS},
    "not_sure": {"label": "Not sure", "shortcut": "N", "counts_as": NEITHER},
    "not-sure": {"label": "Not sure", "shortcut": "N", "counts_as": NEITHER},
    "unsure": {"label": "Not sure", "shortcut": "U", "counts_as": NEITHER},
}


class AnswerError(ValueError):
    """Answers that cannot work; the message says which and why (forms and the API show it)."""


def default_answers() -> list[dict]:
    return [option_for_key("real"), option_for_key("bogus")]


def option_for_key(key: str) -> dict:
    """The answer object of a bare key: known keys get their usual label, shortcut and meaning."""
    key = str(key).strip().lower()
    known = KNOWN.get(key, {})
    return {
        "key": key,
        "label": known.get("label", key.replace("_", " ").replace("-", " ").capitalize()),
        "shortcut": known.get("shortcut", ""),
        "help": "",
        "counts_as": known.get("counts_as", NEITHER),
    }


def options(answers) -> list[dict]:
    """The answers as objects, whatever was stored (objects, or the strings of older workflows)."""
    result = []
    for answer in answers or []:
        if isinstance(answer, str):
            result.append(option_for_key(answer))
        elif isinstance(answer, dict) and answer.get("key"):
            option = option_for_key(answer["key"])
            option.update({k: answer[k] for k in ("label", "shortcut", "help", "counts_as") if k in answer})
            result.append(option)
    return result


def keys(answers) -> list[str]:
    return [o["key"] for o in options(answers)]


def class_map(answers) -> dict[str, str]:
    """{answer key: "real" | "bogus"} for the answers that count; the others are absent."""
    return {o["key"]: o["counts_as"] for o in options(answers) if o["counts_as"] in (REAL, BOGUS)}


def keys_counting_as(answers, side: str) -> list[str]:
    return [k for k, v in class_map(answers).items() if v == side]


def buttons(answers) -> list[dict]:
    """What the classify page shows: each answer with its keyboard keys (its shortcut and its
    position), then skip. Keys are upper case, as the page's script compares them."""
    result = []
    opts = options(answers)
    for i, o in enumerate(opts, start=1):
        shortcut = (o.get("shortcut") or "").upper()
        keys_ = [k for k in (shortcut, str(i)) if k]
        result.append({**o, "keys": keys_})
    result.append(
        {
            "key": SKIP,
            "label": "Skip",
            "help": "",
            "counts_as": NEITHER,
            "keys": [SKIP_SHORTCUT, str(len(opts) + 1)],
        }
    )
    return result


def validate(raw, *, require_sides: bool = True) -> list[dict]:
    """Clean answers (objects or bare keys) or raise AnswerError with a message for a person.

    Two to MAX_ANSWERS answers; keys unique, lower case, not "skip"; shortcuts single letters, unique,
    not S (skip); for a real/bogus workflow (`require_sides`) at least one answer counts as real and
    one as bogus, or P(real) could never move.
    """
    if not isinstance(raw, list):
        raise AnswerError("Answers must be a list.")
    cleaned = []
    for i, item in enumerate(raw, start=1):
        if isinstance(item, str):
            item = option_for_key(item)
        if not isinstance(item, dict):
            raise AnswerError(f"Answer {i} must be an object with a key and a label.")
        key = str(item.get("key") or "").strip().lower()
        if not key:
            raise AnswerError(f"Answer {i} needs a key.")
        if not KEY_PATTERN.match(key):
            raise AnswerError(
                f"Answer {i}: the key '{key}' must be 1–30 lower-case letters, digits, '-' or '_', "
                "starting with a letter or digit."
            )
        if key == SKIP:
            raise AnswerError("'skip' is reserved: every workflow has a Skip button of its own.")
        label = str(item.get("label") or "").strip() or option_for_key(key)["label"]
        if len(label) > LABEL_MAX:
            raise AnswerError(f"Answer {i}: the label is longer than {LABEL_MAX} characters.")
        shortcut = str(item.get("shortcut") or "").strip().upper()
        if shortcut and not (len(shortcut) == 1 and shortcut.isalpha() and shortcut.isascii()):
            raise AnswerError(f"Answer {i}: the keyboard key must be one letter (A–Z), got '{shortcut}'.")
        if shortcut == SKIP_SHORTCUT:
            raise AnswerError(f"Answer {i}: the keyboard key S is taken by Skip.")
        help_text = str(item.get("help") or "").strip()
        if len(help_text) > HELP_MAX:
            raise AnswerError(f"Answer {i}: the help text is longer than {HELP_MAX} characters.")
        counts_as = item.get("counts_as") or NEITHER
        if counts_as not in (REAL, BOGUS, NEITHER):
            raise AnswerError(f"Answer {i}: counts_as must be 'real', 'bogus' or '' (neither).")
        cleaned.append(
            {"key": key, "label": label, "shortcut": shortcut, "help": help_text, "counts_as": counts_as}
        )
    if len(cleaned) < 2:
        raise AnswerError("A workflow needs at least two answers.")
    if len(cleaned) > MAX_ANSWERS:
        raise AnswerError(f"At most {MAX_ANSWERS} answers.")
    seen_keys, seen_shortcuts = set(), {}
    for o in cleaned:
        if o["key"] in seen_keys:
            raise AnswerError(f"Two answers have the key '{o['key']}': keys must be unique.")
        seen_keys.add(o["key"])
        if o["shortcut"]:
            if o["shortcut"] in seen_shortcuts:
                raise AnswerError(
                    f"'{seen_shortcuts[o['shortcut']]}' and '{o['label']}' both use the keyboard key "
                    f"{o['shortcut']}: each answer needs its own."
                )
            seen_shortcuts[o["shortcut"]] = o["label"]
    if require_sides:
        sides = {o["counts_as"] for o in cleaned}
        if REAL not in sides or BOGUS not in sides:
            raise AnswerError(
                "At least one answer must count as real and one as bogus, or P(real) never moves."
            )
    return cleaned


def parse_keys(text: str) -> list[dict]:
    """'real,bogus,not_sure' (the CLI) → validated answer objects."""
    return validate([k.strip() for k in (text or "").split(",") if k.strip()])
