"""The console's "upload a backup file to restore" page, and the upload handler that bounds it.

Django reads an upload before the view runs; to refuse a file past the size limit without
writing gigabytes to a temporary file first, the view swaps in a handler that stops reading
at the limit. Changing upload handlers must happen before the CSRF check reads the body, so
the page is ``csrf_exempt`` outside and ``csrf_protect`` inside (Django's documented pattern).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadhandler import FileUploadHandler, StopUpload, TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from backups import services
from backups.admin.forms import UploadForm, posted
from backups.conf import conf
from backups.exceptions import as_respaldo_error
from backups.operations.audit import client_address
from backups.services.upload import too_large_refusal


class SizeLimitHandler(FileUploadHandler):
    """Stops reading an uploaded file once it is larger than ``limit`` bytes."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A declared length past the limit is refused at the file's first byte (the form's small
        # fields before it are still read, the CSRF token among them).
        if content_length and content_length > self.limit + 64 * 1024:
            self.exceeded = True

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.exceeded or self.received > self.limit:
            self.exceeded = True
            # The rest of the body is read and thrown away, so the browser gets the page.
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def upload_view(model_admin) -> Callable[[HttpRequest], HttpResponse]:
    """The upload page of ``model_admin`` (the clinic's backups admin)."""

    @csrf_protect
    def process(request: HttpRequest, limiter: SizeLimitHandler) -> HttpResponse:
        form = UploadForm(*posted(request), limit=limiter.limit)
        if request.method == "POST":
            if limiter.exceeded:
                form.is_valid()  # the file was not kept: say why instead of "this field is required"
                form.errors.pop("file", None)
                form.add_error("file", str(too_large_refusal(limiter.limit)))
            elif form.is_valid():
                upload = form.cleaned_data["file"]
                try:
                    backup = services.backup_from_upload(
                        clinic=request.tenant.pk,
                        source=upload,
                        filename=upload.name,
                        requested_by=request.user.get_username(),
                        address=client_address(request),
                    )
                except Exception as exc:
                    error = as_respaldo_error(exc)
                    if error is None:
                        raise
                    form.add_error("file", str(error))
                else:
                    model_admin.message_user(
                        request,
                        _("The file was accepted as backup #%(id)s. Check what restoring it would change.")
                        % {"id": backup.pk},
                        messages.SUCCESS,
                    )
                    site = model_admin.admin_site.name
                    return HttpResponseRedirect(reverse(f"{site}:backups_backup_restore", args=[backup.pk]))
        return model_admin.page(
            request, "upload.html", _("Upload a backup file to restore"), form=form, limit=limiter.limit
        )

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("backups.upload_backup"):
            raise PermissionDenied
        limiter = SizeLimitHandler(request, conf.max_upload_bytes)
        request.upload_handlers = [limiter, TemporaryFileUploadHandler(request)]
        return process(request, limiter)

    return view
