"""What a volunteer has contributed, for "My classifications" (/me/, core.views_projects.me).

Core sits below the apps that own the vote tables (labeling's real/bogus votes, similarity's
answers), so it cannot read them itself. Each app registers, from its own `AppConfig.ready`, how to
answer two questions about its table:

* counts(participant_ids) → rows of {"workflow": id, "n": classifications, "n_gold": gold answers
  checked, "n_gold_correct": of them right}. Classifications leave out skips and votes taken back;
  apps without gold give zeros.
* recent(participant_ids, limit) → up to `limit` items of {"workflow": Workflow (with its project),
  "subject": Subject, "answer": the volunteer's answer as text, "consensus": the crowd's (or the
  expert's) label once decided, else "", "pending": what to say while there is none,
  "created_at": when}, newest first.

`participant_ids` are a volunteer's participant and the anonymous ones merged into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

CountsFn = Callable[[list[int]], Iterable[dict]]
RecentFn = Callable[[list[int], int], Iterable[dict]]


@dataclass(frozen=True)
class Contribution:
    kind: str
    counts: CountsFn
    recent: RecentFn


_registry: dict[str, Contribution] = {}


def register(kind: str, counts_fn: CountsFn, recent_fn: RecentFn) -> None:
    """Register (or replace: ready() may run twice in tests) how to read one kind of contribution."""
    _registry[kind] = Contribution(kind, counts_fn, recent_fn)


def registered() -> list[Contribution]:
    return list(_registry.values())


def counts(participant_ids: list[int]) -> dict[int, dict]:
    """{workflow id: {"n", "n_gold", "n_gold_correct"}} over every registered kind."""
    totals: dict[int, dict] = {}
    for contribution in registered():
        for row in contribution.counts(participant_ids):
            seen = totals.setdefault(row["workflow"], {"n": 0, "n_gold": 0, "n_gold_correct": 0})
            for key in seen:
                seen[key] += int(row.get(key) or 0)
    return totals


def recent(participant_ids: list[int], limit: int = 20) -> list[dict]:
    """The newest `limit` items over every registered kind, newest first."""
    items = [item for c in registered() for item in c.recent(participant_ids, limit)]
    items.sort(key=lambda item: item["created_at"], reverse=True)
    return items[:limit]
