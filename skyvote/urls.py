from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse, JsonResponse
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.defaults import page_not_found
from django.views.generic import RedirectView

from core.views_files import public_media


def healthz(request):
    """Liveness probe; also the trivial view that benchmarks use as a ceiling."""
    return HttpResponse("ok", content_type="text/plain")


def not_found(request, exception):
    """An address under /api/ that matches no endpoint (a project slug with a space, a negative id)
    answers JSON like the endpoints' own 404s, so API clients always get the documented error body."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page links: send them to the icon base.html links.
    path("favicon.ico", RedirectView.as_view(url=static("skyvote/favicon.svg")), name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("skyvote.api_urls")),
    path("similarity/", include("similarity.urls")),
    # Fixed words (upload, exports, batches, model) before labeling's p/<project>/<workflow>/.
    path("", include("core.urls")),
    path("", include("panels.urls")),
    path("", include("loop.urls")),
    path("", include("gems.urls")),
    path("", include("labeling.urls")),
]

if settings.SERVE_MEDIA:
    # Public projects' subject PNGs and the field guide only: everything else a project owns is served
    # by views that check who asks (core.storage).
    urlpatterns += [re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", public_media)]
