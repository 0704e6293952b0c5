"""Subject images through one access-checked view, and the little that media serves directly.

Every subject image URL (`Subject.image_url`) points at `subject_image`, public project or not, and
the view serves the file from whichever storage holds it (core.storage). So a project that changes
from private to public or back needs no file moves: access follows `Project.is_public` at once, and no
image of a private project has a public URL. Public projects' images are answered with
`Cache-Control: public`, private ones with `private`.

Who may load a private project's image: its members (any role), and whoever holds a signed URL,
which only pages and API responses that already checked access hand out (classify pages for
members, panel task links, member API reads). The signature covers the subject, the role and an
expiry (SKYVOTE_IMAGE_URL_MAX_AGE_S, rounded so the URL stays the same for a while and browsers can
cache it).
"""

import re
import time
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_safe
from django.views.static import serve

from core.models import Project, Subject
from core.permissions import can_volunteer
from core.storage import file_response

TICKET_SALT = "skyvote.core.subject-image"
# What SERVE_MEDIA serves from MEDIA_ROOT: public projects' subject PNGs, and the field guide's
# synthetic examples. Never arrays, exports, models or anything else.
PUBLIC_SUBJECT_PNG = re.compile(r"^subjects/(?P<project>\d+)/png/[^/]+\.png$")
FIELD_GUIDE = re.compile(r"^fieldguide/v\d+/[^/]+\.png$")


def _max_age() -> int:
    return max(60, int(getattr(settings, "SKYVOTE_IMAGE_URL_MAX_AGE_S", 3600)))


def _signature(subject_id: int, role: str, expires: int) -> str:
    return salted_hmac(TICKET_SALT, f"{subject_id}:{role}:{expires}", algorithm="sha256").hexdigest()[:32]


def subject_image_url(subject: Subject, role: str) -> str | None:
    """The image view's URL for the subject's PNG of `role` (None when it has none)."""
    if not (subject.images or {}).get(role):
        return None
    window = _max_age()
    # Valid for one to two windows, and the same URL for a whole window.
    expires = (int(time.time()) // window + 2) * window
    query = urlencode({"v": subject.render_version, "e": expires, "t": _signature(subject.pk, role, expires)})
    return f"{reverse('core:subject_image', args=[subject.pk, role])}?{query}"


def _signed(request, subject_id: int, role: str) -> bool:
    try:
        expires = int(request.GET.get("e", ""))
    except ValueError:
        return False
    if expires < time.time():
        return False
    return constant_time_compare(request.GET.get("t", ""), _signature(subject_id, role, expires))


@require_safe
def subject_image(request, subject, role):
    """A subject's PNG: anyone for a public project; for a private one members or a signed URL,
    404 for everyone else (as if the subject did not exist)."""
    found = Subject.objects.select_related("project").filter(pk=subject).first()
    name = (found.images or {}).get(role) if found else None
    if not name:
        raise Http404("No such image.")
    project = found.project
    if not project.is_public and not (_signed(request, found.pk, role) or can_volunteer(request, project)):
        raise Http404("No such image.")
    cache = "public, max-age=3600" if project.is_public else "private, max-age=3600"
    return file_response(name, content_type="image/png", cache_control=cache)


def public_media(request, path):
    """MEDIA_URL when SERVE_MEDIA is on (demo, single machine): public projects' subject PNGs and the
    field guide only. Exports, checkpoints, plots and arrays are never served from here."""
    match = PUBLIC_SUBJECT_PNG.match(path)
    if match:
        if not Project.objects.filter(pk=int(match["project"]), is_public=True).exists():
            raise Http404("No such file.")
    elif not FIELD_GUIDE.match(path):
        raise Http404("No such file.")
    return serve(request, path, document_root=settings.MEDIA_ROOT)
