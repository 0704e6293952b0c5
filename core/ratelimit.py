"""Rate limits: the one limiter for serving subjects, votes and task links.

A fixed-window counter in Django's cache: one cache key per (scope, who, window), created with
`cache.add` and counted with `cache.incr`, both atomic in every cache backend Django ships (local
memory, Redis, Memcached, database). The counts are only as shared as the cache is: the default
local-memory cache counts per web process, so with several processes each allows the full rate.
Production with more than one web process sets CACHE_URL=redis://... so that they share the counts
(docs/deploy.md).

Volunteers are limited twice, per participant and per client address (SKYVOTE_RATE_LIMITS): the
participant limit stops one browser or script, the address limit stops a script that drops its
cookies and is a new anonymous participant on every request. The defaults sit far above what a
person can do (a volunteer classifying flat out answers about one candidate a second), so only
scripts meet them, with a 429 saying to slow down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

from django.conf import settings
from django.core.cache import cache

SLOW_DOWN = "You are going faster than we can keep up with. Please slow down and try again in a moment."

DEFAULT_LIMITS = {
    # action: {who: (requests, per seconds)}
    "serve": {"participant": (120, 60), "address": (600, 60)},
    "vote": {"participant": (120, 60), "address": (600, 60)},
    # Rare-gem notes (core.gems): free text a person types, so far fewer; one address may be a classroom.
    "gem_note": {"participant": (10, 60), "address": (120, 60)},
}


class RateLimited(Exception):
    """Over a limit: `retry_after` is the number of seconds until the window ends."""

    def __init__(self, retry_after: int, message: str = SLOW_DOWN):
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


def hit(scope: str, who: str, limit: int, window_s: int) -> tuple[bool, int]:
    """Count one request of `who` in `scope`: (allowed, seconds until the window ends).

    Allowed while at most `limit` requests fell in the current window of `window_s` seconds.
    """
    window_s = max(1, int(window_s))
    now = time.time()
    slot = int(now // window_s)
    retry_after = max(1, int((slot + 1) * window_s - now + 0.999))
    # Hashed: any text (addresses, worker ids) makes a short key every backend takes, and the cache
    # never holds the address itself.
    digest = hashlib.sha256(f"{scope}\0{who}".encode()).hexdigest()[:32]
    key = f"skyvote:rate:{digest}:{window_s}:{slot}"
    # The key outlives its window by a second, so a late incr never lands in a new, reset window.
    if cache.add(key, 1, timeout=window_s + 1):
        count = 1
    else:
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=window_s + 1)
            count = 1
    return count <= limit, retry_after


def limits_for(action: str) -> dict[str, tuple[int, int]]:
    configured = getattr(settings, "SKYVOTE_RATE_LIMITS", None) or {}
    return {**DEFAULT_LIMITS.get(action, {}), **configured.get(action, {})}


def address_key(address: str | None) -> str:
    """What a per-address limit counts: the address, or for IPv6 its /64."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        # One IPv6 subscriber gets a whole /64: counting single addresses there would count nothing.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(request) -> str:
    """The client's address as the login lockout sees it (behind SKYVOTE_TRUSTED_PROXIES proxies),
    as a per-address limit counts it (address_key)."""
    from core.lockout import client_ip

    return address_key(client_ip(request))


def check(request, action: str, participant=None) -> None:
    """Count this request against the `action` limits ("serve", "vote", "gem_note") of its participant and its
    client address; RateLimited when either is over. Every limit is counted, so a script that is
    refused keeps being refused until it slows down."""
    limits = limits_for(action)
    refused = []
    whos = [("address", client_address(request))]
    if participant is not None:
        whos.insert(0, ("participant", str(participant.pk)))
    for kind, who in whos:
        if kind not in limits:
            continue
        count, per_s = limits[kind]
        allowed, retry_after = hit(f"{action}:{kind}", who, int(count), int(per_s))
        if not allowed:
            refused.append(retry_after)
    if refused:
        raise RateLimited(retry_after=max(refused))
