"""Serving a clinic's uploaded files (X-rays) to its own staff only."""

from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest


@login_required
def clinic_media(request: HttpRequest, schema: str, path: str) -> FileResponse:
    """Return one of the current clinic's uploaded files; other clinics' files are 404."""
    if schema != request.tenant.schema_name:
        raise Http404("No such file.")
    if not request.user.has_perm("dental.view_patient"):
        raise PermissionDenied
    if ".." in Path(path).parts or not default_storage.exists(path):
        raise Http404("No such file.")
    return FileResponse(default_storage.open(path, "rb"), as_attachment=False, filename=Path(path).name)
