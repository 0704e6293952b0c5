"""Requests refused before any view or other middleware reads them, with a short message.

* A body over the size limit: 413. Django's DATA_UPLOAD_MAX_MEMORY_SIZE only guards form
  parsing; DRF's JSON parser reads the stream itself, so without this a JSON body of any size
  was read into memory. The limit is settings.SKYVOTE_MAX_REQUEST_BYTES, and for multipart
  posts to the ingestion upload endpoints SKYVOTE_MAX_UPLOAD_BYTES (plus room for the multipart
  envelope, so a file of exactly that size still reaches the per-file check).
  The declared Content-Length is what is checked, and it is also all that can be read: under
  WSGI Django wraps the input in a LimitedStream of Content-Length bytes (none when it is
  missing), so a chunked body without Content-Length is never read. Such a body is refused with
  411 rather than silently dropped. (Under ASGI Django would spool the whole body before any
  middleware runs; we serve with gunicorn's WSGI workers.)
* A NUL byte in the path or any query parameter: 400. PostgreSQL text cannot hold NUL, so a
  filter such as ?workflow=%00 reached the database and failed with a 500.
* A POST/PUT/PATCH to a REST API view without a Content-Type: 415, saying what to send.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework.views import APIView

# URL names of the ingestion uploads (the upload page and the uploads API): the only views that
# take bodies larger than SKYVOTE_MAX_REQUEST_BYTES.
UPLOAD_URL_NAMES = frozenset({"core:upload", "api_uploads"})
# Multipart boundaries, part headers and the form's other fields around the files.
MULTIPART_ENVELOPE_BYTES = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def _refusal(request, status: int, message: str) -> HttpResponse:
    if "/api/" in request.path_info or "json" in request.headers.get("Accept", ""):
        return JsonResponse({"detail": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _is_upload_view(request) -> bool:
    try:
        return resolve(request.path_info).view_name in UPLOAD_URL_NAMES
    except Resolver404:
        return False


def body_limit(request) -> int:
    """The largest body this request may carry."""
    limit = settings.SKYVOTE_MAX_REQUEST_BYTES
    if request.content_type == "multipart/form-data" and _is_upload_view(request):
        limit = max(limit, settings.SKYVOTE_MAX_UPLOAD_BYTES + MULTIPART_ENVELOPE_BYTES)
    return limit


class RequestLimitsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.refuse(request) or self.get_response(request)

    def refuse(self, request) -> HttpResponse | None:
        if "\x00" in request.path_info or any(
            "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
        ):
            return _refusal(request, 400, "The address contains a NUL character (%00), which is never valid.")
        declared = request.META.get("CONTENT_LENGTH") or ""
        if not declared.strip():
            if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
                return _refusal(request, 411, "Send the request body with a Content-Length header.")
            return None
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return _refusal(request, 400, "The Content-Length header is not a byte count.")
        # Only requests over the general limit need the (URL-resolving) upload check.
        if length > settings.SKYVOTE_MAX_REQUEST_BYTES:
            limit = body_limit(request)
            if length > limit:
                return _refusal(
                    request, 413, f"The request body is {_mib(length)}; the limit here is {_mib(limit)}."
                )
        return None

    def process_view(self, request, view_func, view_args, view_kwargs):
        view_class = getattr(view_func, "cls", None)
        if (
            request.method in BODY_METHODS
            and not request.content_type
            and isinstance(view_class, type)
            and issubclass(view_class, APIView)
        ):
            accepted = sorted(
                {parser.media_type for parser in getattr(view_class, "parser_classes", [])} - {"*/*"}
            )
            return _refusal(
                request, 415, f"The request has no Content-Type; send one of {', '.join(accepted)}."
            )
        return None
