"""Which kinds of workflow paid-panel task links (the `panels` app) support, and who handles each.

A registry and nothing else. It lives in core because both sides may import core: `panels` looks a
handler up by `Workflow.kind`, and each app that owns a kind of task registers its handler from its
own `AppConfig.ready` (panels for real/bogus, since it already depends on labeling; similarity for
similarity, which must not import panels). The batch, assignment and participant a handler is given
are the panels app's and core's rows; a handler reads only the fields named in `TaskKind`.

An assignment's `subject_ids` is its fixed, ordered list of *items*: whatever one task of the kind is
(real/bogus: subject ids; similarity: similarity task ids). The handler alone knows what they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class PanelAnswer:
    """One stored answer of an assignment, as much as worker quality and payment need."""

    assignment_id: int
    created_at: datetime  # the server's clock: the median time per task uses the gaps between answers
    started_at: datetime | None = None
    finished_at: datetime | None = None
    skipped: bool = False
    # None: not a check. True/False: a gold or check task, answered right or wrong.
    gold_correct: bool | None = None
    # A check that anyone paying attention passes (counted apart: failing those is what rejects).
    attention_check: bool = False


class TaskKind(Protocol):
    """What a batch needs from a kind of task. `batch`: panels.Batch (workflow, tasks_per_assignment,
    gold_share); `assignment`: panels.Assignment (pk, participant_id, subject_ids, batch)."""

    # The template partial of one task, the very one the kind's volunteer page uses.
    task_partial: str

    def batch_problem(
        self, workflow, *, tasks_per_assignment: int, gold_share: float
    ) -> tuple[str, str] | None:
        """(form field, message) when a batch of these settings cannot work; counts with COUNT queries."""

    def choose_items(self, batch, participant, rng) -> list[int]:
        """A new assignment's fixed, shuffled item ids (checks included), never every id of the pool."""

    def pending(self, assignment) -> list[int]:
        """The assignment's unanswered items in order; an item deleted since counts as answered."""

    def item_from_post(self, data: Mapping[str, Any]) -> int | None:
        """The item an answer is about (None when the form does not name one)."""

    def task_context(
        self, assignment, item_id: int, *, image_url: Callable[[str], str], data: Mapping | None = None
    ) -> dict:
        """Template context of the task page's item; `data`: a refused answer to show again."""

    def images(self, assignment, item_id: int) -> dict[str, str]:
        """Stored PNG names of the item by slot, for images served as `image_url(slot)`."""

    def submit(
        self,
        assignment,
        item_id: int,
        data: Mapping[str, Any],
        *,
        idempotency_key,
        started_at: datetime | None,
        user_agent: str,
        viewport: str,
    ):
        """Store the answer exactly once through the kind's own vote service; returns feedback for the
        page or None. Raises core.votes.VoteError (a subclass) for an answer that makes no sense."""

    def recent_answers(self, workflow, cutoff: datetime):
        """A queryset for Exists(): answers since `cutoff` of the outer Assignment (OuterRef names:
        "pk", "participant_id")."""

    def answers(self, batch, assignments: list) -> dict[int, list[PanelAnswer]]:
        """The stored answers of these assignments of `batch`, by assignment id."""

    def preview_context(self, batch) -> dict:
        """What the preview page (no worker id) shows as a sample; never a check."""


_kinds: dict[str, TaskKind] = {}


def register_task_kind(workflow_kind: str, handler: TaskKind) -> None:
    """Called from an AppConfig.ready; registering the same kind again replaces the handler."""
    _kinds[workflow_kind] = handler


def task_kind(workflow_kind: str) -> TaskKind | None:
    return _kinds.get(workflow_kind)


def supported_kinds() -> list[str]:
    return sorted(_kinds)
