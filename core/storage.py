"""Where files that must not be served from public media live."""

from django.conf import settings
from django.core.files.storage import FileSystemStorage


def private_storage() -> FileSystemStorage:
    """Storage outside MEDIA_ROOT, with no URL: uploads waiting for their ingest job."""
    return FileSystemStorage(location=settings.PRIVATE_ROOT, base_url=None)
