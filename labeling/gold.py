"""Gold standard: expert labels, the expert's labeling queue and the feedback volunteers see.

Experts are project owners and members with the "expert" role. A gold label is "real" or
"bogus" with an optional subtype from the field guide. Volunteers' answers on gold subjects
train their SWAP skill (labeling.aggregation) and earn them feedback (labeling.services).
"""

import random

from django.db import transaction

from core.models import Project, Subject, Workflow
from core.permissions import EXPERT_ROLES

GOLD_ANSWERS = (Subject.REAL, Subject.BOGUS)


class GoldError(ValueError):
    """The gold label cannot be stored; the message says why."""


def can_label_gold(project: Project, user) -> bool:
    return project.role_of(user) in EXPERT_ROLES


def subtypes_for(answer: str) -> tuple[str, ...]:
    from mlcore.synth import BOGUS_SUBTYPES, REAL_SUBTYPES

    return {Subject.REAL: REAL_SUBTYPES, Subject.BOGUS: BOGUS_SUBTYPES}.get(answer, ())


def parse_label(value: str) -> tuple[str, str]:
    """'real', 'bogus' or 'real:variable_star' → (answer, subtype); GoldError otherwise."""
    answer, _, subtype = (value or "").strip().lower().partition(":")
    if answer not in GOLD_ANSWERS:
        raise GoldError(f"A gold label is 'real' or 'bogus', not '{value}'.")
    if subtype and subtype not in subtypes_for(answer):
        raise GoldError(f"'{subtype}' is not a {answer} type in the field guide.")
    return answer, subtype


def set_gold(subject: Subject, answer: str, user, subtype: str = "") -> Subject:
    """Store an expert's label. A subject waiting in the review queue is thereby decided.

    Votes cast before the label keep was_gold=False; the next full recompute counts them
    towards the volunteers' gold accuracy (labeling.recompute).
    """
    answer, subtype = parse_label(f"{answer}:{subtype}" if subtype else answer)
    with transaction.atomic():
        locked = Subject.objects.select_for_update().get(pk=subject.pk)
        locked.gold_label = answer
        locked.gold_subtype = subtype
        locked.gold_by = user if getattr(user, "is_authenticated", False) else None
        fields = ["gold_label", "gold_subtype", "gold_by"]
        if locked.needs_review:
            from labeling.retirement import retire

            locked.needs_review = False
            locked.save(update_fields=fields + ["needs_review"])
            retire(locked, f"expert: {answer}")
        else:
            locked.save(update_fields=fields)
    return locked


def clear_gold(subject: Subject) -> None:
    Subject.objects.filter(pk=subject.pk).update(gold_label="", gold_subtype="", gold_by=None)


def next_for_expert(workflow: Workflow, exclude_ids=()) -> Subject | None:
    """The next subject an expert should label: the review queue first, then unlabelled ones."""
    base = Subject.objects.filter(workflow=workflow, gold_label="").exclude(pk__in=list(exclude_ids))
    return (
        base.filter(needs_review=True).order_by("pk").first()
        or base.filter(status=Subject.ACTIVE).order_by("-vote_count", "pk").first()
    )


def seed_gold_from_truth(workflow: Workflow, n: int, seed: int = 0) -> int:
    """Mark up to n synthetic subjects gold from their stored truth (for the demo); gold_by=None.

    Takes real and bogus subjects in turn so both kinds give feedback; skips held-out subjects
    (they are for evaluating models). Returns how many were marked.
    """
    rng = random.Random(seed)
    pools = {}
    for answer in GOLD_ANSWERS:
        ids = list(
            Subject.objects.filter(
                workflow=workflow, truth_label=answer, gold_label="", is_holdout=False, status=Subject.ACTIVE
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        rng.shuffle(ids)
        pools[answer] = ids
    chosen = []
    while len(chosen) < n and any(pools.values()):
        for answer in GOLD_ANSWERS:
            if pools[answer] and len(chosen) < n:
                chosen.append(pools[answer].pop())
    for subject in Subject.objects.filter(pk__in=chosen).only("pk", "truth_label", "truth_subtype"):
        subtype = subject.truth_subtype if subject.truth_subtype in subtypes_for(subject.truth_label) else ""
        Subject.objects.filter(pk=subject.pk).update(
            gold_label=subject.truth_label, gold_subtype=subtype, gold_by=None
        )
    return len(chosen)


def guide_entry(subtype: str) -> tuple[str, str]:
    """(title, description) of a field-guide type; ("", "") for none."""
    if not subtype:
        return "", ""
    from labeling.fieldguide import subtype_title
    from mlcore.synth import SUBTYPE_DESCRIPTIONS

    return subtype_title(subtype), SUBTYPE_DESCRIPTIONS.get(subtype, "")
