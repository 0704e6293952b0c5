"""Where files that must not be served from public media live, and how they are served.

Private storage (PRIVATE_ROOT, no URL) holds everything that belongs to a project and is not a
public project's subject image: uploads waiting to be ingested, exports, checkpoints, model plots,
similarity index files, saliency maps, and the arrays and PNGs of private projects' subjects.
Nothing in it is reachable by a URL: views check who asks and answer with `file_response`.

Files written before this split live in default (media) storage under the same names, so every
read looks in private storage first and falls back to default storage (docs/deploy.md).
"""

import uuid
from pathlib import PurePosixPath
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.http import FileResponse, Http404, HttpResponse
from django.utils.http import content_disposition_header


def private_storage() -> FileSystemStorage:
    """Storage outside MEDIA_ROOT, with no URL."""
    return FileSystemStorage(location=settings.PRIVATE_ROOT, base_url=None)


def subject_storage(project) -> Storage:
    """Where new subject files (arrays, PNGs) of `project` go: media for public projects, private
    storage for private ones. Reading never depends on this (see `open_stored`): the image view
    serves either, so a project that changes from private to public or back needs no file moves."""
    return default_storage if project.is_public else private_storage()


def random_name(prefix: str, suffix: str) -> str:
    """`<prefix><uuid4 hex><suffix>`: a stored name nobody can guess from the project or the time."""
    return f"{prefix}{uuid.uuid4().hex}{suffix}"


def locate(name: str) -> tuple[Storage, bool] | None:
    """(storage, is_private) holding `name`: private storage first, then default storage."""
    if not name:
        return None
    private = private_storage()
    if private.exists(name):
        return private, True
    if default_storage.exists(name):
        return default_storage, False
    return None


def open_stored(name: str, mode: str = "rb"):
    """Open a stored file from private storage, or default storage for files written before."""
    try:
        return private_storage().open(name, mode)
    except FileNotFoundError:
        return default_storage.open(name, mode)


def stored_exists(name: str) -> bool:
    return locate(name) is not None


def delete_stored(name: str) -> None:
    """Delete `name` from both storages (a stale copy in one must not shadow the other)."""
    for storage in (private_storage(), default_storage):
        try:
            storage.delete(name)
        except OSError:
            pass


def _sendfile_value(header: str, storage: Storage, is_private: bool, name: str) -> str | None:
    try:
        path = storage.path(name)
    except NotImplementedError:  # object storage: nothing on disk for the web server to send
        return None
    if header.lower() != "x-accel-redirect":
        return path  # X-Sendfile (Apache mod_xsendfile, lighttpd): the file's path
    prefix = (
        settings.SKYVOTE_SENDFILE_PRIVATE_PREFIX if is_private else settings.SKYVOTE_SENDFILE_MEDIA_PREFIX
    )
    return prefix.rstrip("/") + "/" + quote(PurePosixPath(name).as_posix())


def file_response(
    name: str,
    *,
    content_type: str | None = None,
    filename: str | None = None,
    as_attachment: bool = False,
    cache_control: str = "private, no-cache",
) -> HttpResponse:
    """The stored file `name`, for a view that has already checked who may have it.

    Streams it (FileResponse), or, with SKYVOTE_SENDFILE_HEADER set (X-Accel-Redirect for nginx,
    X-Sendfile for Apache), answers with that header so the web server sends the bytes itself.
    Http404 when the file is in neither storage.
    """
    found = locate(name)
    if found is None:
        raise Http404("The file is missing.")
    storage, is_private = found
    filename = filename or PurePosixPath(name).name
    header = getattr(settings, "SKYVOTE_SENDFILE_HEADER", "")
    value = _sendfile_value(header, storage, is_private, name) if header else None
    if value is not None:
        response = HttpResponse(content_type=content_type or "application/octet-stream")
        response[header] = value
        disposition = content_disposition_header(as_attachment, filename)
        if disposition:
            response["Content-Disposition"] = disposition
    else:
        response = FileResponse(
            storage.open(name, "rb"),
            as_attachment=as_attachment,
            filename=filename,
            content_type=content_type,
        )
    response["Cache-Control"] = cache_control
    return response
