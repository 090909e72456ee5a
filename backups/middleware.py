"""While a clinic is being restored, its pages stay readable and its changes are paused.

A pg restore builds the new data in a schema of its own: the live clinic can be read all the
while, and only the final swap would make readers wait. So, while a restore runs:

* every request gets ``request.restore_in_progress`` (the running Restore, or None), for the banner;
* reads (GET, HEAD, OPTIONS) pass through, except in the phases where even reading would
  wait (``restore_blocks_readers``): those answer the "restore in progress" page (503);
* anything else is refused with a "changes are paused" page (503) before any view runs, so
  nothing is written (a change made now would be lost by the swap). Logging in and out, and
  choosing a language, still work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_tenants.utils import get_public_schema_name

if TYPE_CHECKING:
    from backups.models import Restore

RETRY_AFTER_SECONDS = 15
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Writes that must still work during a restore (paths as routed, without a script prefix).
WRITES_ALLOWED_DURING_RESTORE = frozenset({"/admin/login/", "/admin/logout/"})
FALLBACK_BACK_URL = "/admin/"


class RestoreInProgressMiddleware:
    """Keep a clinic under restore readable; pause its changes; close it only while reading would wait."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.restore_in_progress = None
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.schema_name == get_public_schema_name():
            return self.get_response(request)
        from backups.services.restore import restore_blocks_readers, restore_in_progress

        restore = restore_in_progress(tenant.pk)  # one query when the clinic has no restore running
        request.restore_in_progress = restore
        if restore is None:
            return self.get_response(request)
        if restore_blocks_readers(restore):
            return _paused_page(request, restore, writes_only=False)
        if request.method not in READ_METHODS and not _write_allowed(request):
            return _paused_page(request, restore, writes_only=True)
        return self.get_response(request)


def _write_allowed(request: HttpRequest) -> bool:
    """The admin's login and logout, and Django's set-language view when the site routes it."""
    if request.path_info in WRITES_ALLOWED_DURING_RESTORE:
        return True
    try:
        return request.path == reverse("set_language", urlconf=getattr(request, "urlconf", None))
    except NoReverseMatch:
        return False


def back_url(request: HttpRequest) -> str:
    """Where "Go back" leads: the Referer when it is a page of this same host, else the admin's index."""
    referer = request.META.get("HTTP_REFERER", "")
    if referer and url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return referer
    return FALLBACK_BACK_URL


def _paused_page(request: HttpRequest, restore: Restore, *, writes_only: bool) -> HttpResponse:
    """The 503 page: "restore in progress" (the clinic is closed) or, for a write, "changes are paused".

    Under ``/api/`` the same answer is JSON (code ``restore_in_progress``).
    """
    if request.path_info.startswith("/api/"):
        from backups.api.errors import api_error

        message_id = "restore_in_progress_writes" if writes_only else "restore_in_progress"
        response = api_error("restore_in_progress", message_id, restore=restore.pk, retry_after=RETRY_AFTER_SECONDS)
        response.status_code = 503
        return response
    response = TemplateResponse(
        request,
        "backups/restore_in_progress.html",
        {
            "clinic": request.tenant,
            "restore": restore,
            "retry_after": RETRY_AFTER_SECONDS,
            "writes_only": writes_only,
            "back_url": back_url(request) if writes_only else "",
        },
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
    )
    return response.render()
