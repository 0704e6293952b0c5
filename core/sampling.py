"""Random subjects without ORDER BY RANDOM(): every Subject has a uniform `random_key` (indexed), so a
random point of that order, wrapping round, is a random sample that reads only what it returns."""

from __future__ import annotations

import random


def random_window(queryset, rng: random.Random, limit: int) -> list[int]:
    """Up to `limit` primary keys of the queryset from a random point of the random_key order."""
    pivot = rng.random()
    ids = list(
        queryset.filter(random_key__gte=pivot).order_by("random_key").values_list("pk", flat=True)[:limit]
    )
    if len(ids) < limit:
        ids += list(
            queryset.filter(random_key__lt=pivot)
            .order_by("random_key")
            .values_list("pk", flat=True)[: limit - len(ids)]
        )
    return ids


def random_one(queryset, rng: random.Random | None = None):
    """One random row of the queryset, or None when it is empty."""
    pivot = (rng or random).random()
    return (
        queryset.filter(random_key__gte=pivot).order_by("random_key").first()
        or queryset.order_by("random_key").first()
    )
