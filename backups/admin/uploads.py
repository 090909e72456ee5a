"""The console's "upload a backup file to restore" page.

Django reads an upload before the view runs; to refuse a file past the size limit without
writing gigabytes to a temporary file first, the view swaps in a handler that stops reading
at the limit (``backups.web.uploadhandlers``). Changing upload handlers must happen before
the CSRF check reads the body, so the page is ``csrf_exempt`` outside and ``csrf_protect``
inside (Django's documented pattern).
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.services.upload import too_large_refusal, upload_accept, upload_refused
from backups.web.forms import UploadForm, posted
from backups.web.http import client_address
from backups.web.uploadhandlers import SizeLimitHandler


def upload_view(model_admin) -> Callable[[HttpRequest], HttpResponse]:
    """The upload page of ``model_admin`` (the clinic's backups admin)."""

    @csrf_protect
    def process(request: HttpRequest, limiter: SizeLimitHandler) -> HttpResponse:
        form = UploadForm(*posted(request), limit=limiter.limit)
        if request.method == "POST":
            if limiter.exceeded:
                form.is_valid()  # the file was not kept: say why instead of "this field is required"
                form.errors.pop("file", None)
                refused = too_large_refusal(limiter.limit)
                upload_refused(
                    request.tenant.pk,
                    refused,
                    filename=limiter.file_name or "",
                    size=limiter.refused_size(),
                    requested_by=request.user.get_username(),
                    address=client_address(request),
                )
                form.add_error("file", str(refused))
            elif form.is_valid():
                upload = form.cleaned_data["file"]
                try:
                    accepted = upload_accept(
                        clinic=request.tenant.pk,
                        source=upload,
                        filename=upload.name,
                        requested_by=request.user.get_username(),
                        address=client_address(request),
                    )
                except RespaldoError as error:
                    form.add_error("file", str(error))
                else:
                    backup = accepted.backup
                    if accepted.created:
                        text = _("The file was accepted as backup #%(id)s. Check what restoring it would change.")
                    else:
                        text = _(
                            "This file is the same file as backup #%(id)s: it was not stored a second time. "
                            "Check what restoring backup #%(id)s would change."
                        )
                    model_admin.message_user(request, text % {"id": backup.pk}, messages.SUCCESS)
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
