"""The client address that the login lockout (django-axes, settings AXES_*) counts failures for.

Behind SKYVOTE_TRUSTED_PROXIES reverse proxies, each appends the address it saw to X-Forwarded-For,
so the client is that many entries from the right; anything further left was written by the client
and is not believed. With no trusted proxy the header is ignored: REMOTE_ADDR is the client.
"""

from django.conf import settings


def client_ip(request) -> str | None:
    proxies = getattr(settings, "SKYVOTE_TRUSTED_PROXIES", 0)
    if proxies > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out login gets (429), in the site's own layout, saying when to try again."""
    from axes.helpers import get_cool_off
    from django.shortcuts import render

    cool_off = get_cool_off(request)
    minutes = max(1, round(cool_off.total_seconds() / 60)) if cool_off else None
    context = {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "registration/locked_out.html", context, status=429)
