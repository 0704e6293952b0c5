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

Science, reference and difference images also come under the classify page's contrast presets
(`?stretch=minmax` or `asinh`; core.rendering.STRETCHES): drawn from the stored array when asked for,
never stored (core.rendering.render_subject_stretch says why), under the same access rules, and
signed separately (the signature covers the preset), so a signed default URL does not open the others.
Any other `stretch` is a 400.
"""

import logging
import re
import time
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.http import require_safe
from django.views.static import serve

from core.ingest import IngestError
from core.models import Project, Subject
from core.permissions import can_volunteer
from core.rendering import DEFAULT_STRETCH, STRETCHES, TRIPLET_ROLES, render_subject_stretch
from core.storage import file_response

log = logging.getLogger(__name__)

TICKET_SALT = "skyvote.core.subject-image"
# What SERVE_MEDIA serves from MEDIA_ROOT: public projects' subject PNGs, and the field guide's
# synthetic examples. Never arrays, exports, models or anything else.
PUBLIC_SUBJECT_PNG = re.compile(r"^subjects/(?P<project>\d+)/png/[^/]+\.png$")
FIELD_GUIDE = re.compile(r"^fieldguide/v\d+/[^/]+\.png$")


def _max_age() -> int:
    return max(60, int(getattr(settings, "SKYVOTE_IMAGE_URL_MAX_AGE_S", 3600)))


def _signature(subject_id: int, role: str, expires: int, stretch: str = DEFAULT_STRETCH) -> str:
    # The default preset keeps the original message, so URLs handed out before presets existed stay valid.
    preset = "" if stretch == DEFAULT_STRETCH else f"{stretch}:"
    message = f"{subject_id}:{role}:{preset}{expires}"
    return salted_hmac(TICKET_SALT, message, algorithm="sha256").hexdigest()[:32]


def subject_image_url(subject: Subject, role: str, stretch: str = DEFAULT_STRETCH) -> str | None:
    """The image view's URL for the subject's PNG of `role` (None when it has none), under a contrast
    preset (core.rendering.STRETCHES; science, reference and difference only)."""
    if not (subject.images or {}).get(role):
        return None
    if stretch not in STRETCHES or (stretch != DEFAULT_STRETCH and role not in TRIPLET_ROLES):
        return None
    window = _max_age()
    # Valid for one to two windows, and the same URL for a whole window.
    expires = (int(time.time()) // window + 2) * window
    params = {"v": subject.render_version}
    if stretch != DEFAULT_STRETCH:
        params["stretch"] = stretch
    params.update(e=expires, t=_signature(subject.pk, role, expires, stretch))
    return f"{reverse('core:subject_image', args=[subject.pk, role])}?{urlencode(params)}"


def _signed(request, subject_id: int, role: str, stretch: str = DEFAULT_STRETCH) -> bool:
    try:
        expires = int(request.GET.get("e", ""))
    except ValueError:
        return False
    if expires < time.time():
        return False
    return constant_time_compare(request.GET.get("t", ""), _signature(subject_id, role, expires, stretch))


@require_safe
def subject_image(request, subject, role):
    """A subject's PNG: anyone for a public project; for a private one members or a signed URL,
    404 for everyone else (as if the subject did not exist). `?stretch=` picks a contrast preset:
    400 for anything but core.rendering.STRETCHES, or for a preset of an image that has none."""
    stretch = request.GET.get("stretch", DEFAULT_STRETCH)
    if stretch not in STRETCHES:
        return HttpResponseBadRequest(f"stretch must be one of: {', '.join(STRETCHES)}.")
    found = Subject.objects.select_related("project").filter(pk=subject).first()
    name = (found.images or {}).get(role) if found else None
    if not name:
        raise Http404("No such image.")
    project = found.project
    if not project.is_public and not (
        _signed(request, found.pk, role, stretch) or can_volunteer(request, project)
    ):
        raise Http404("No such image.")
    cache = "public, max-age=3600" if project.is_public else "private, max-age=3600"
    if stretch == DEFAULT_STRETCH:
        return file_response(name, content_type="image/png", cache_control=cache)
    if role not in TRIPLET_ROLES:
        return HttpResponseBadRequest(
            "Contrast presets exist for science, reference and difference images only."
        )
    try:
        png = render_subject_stretch(found, role, stretch)
    except (IngestError, OSError, ValueError):
        # A subject without a readable triplet array (an image upload, a lost file): nothing to stretch.
        log.warning("subject %s: no %s image under the %s preset", found.pk, role, stretch, exc_info=True)
        raise Http404("No such image.") from None
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = cache
    return response


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
