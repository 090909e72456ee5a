"""While a clinic is being restored, its pages say so (503) instead of showing half-restored data."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django_tenants.utils import get_public_schema_name

RETRY_AFTER_SECONDS = 15


class RestoreInProgressMiddleware:
    """Answer every request to a clinic under restore with a 'restore in progress' page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is not None and tenant.schema_name != get_public_schema_name():
            from backups.services.restore import restore_in_progress

            restore = restore_in_progress(tenant.pk)
            if restore is not None:
                response = TemplateResponse(
                    request,
                    "backups/restore_in_progress.html",
                    {"clinic": tenant, "restore": restore, "retry_after": RETRY_AFTER_SECONDS},
                    status=503,
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
                )
                return response.render()
        return self.get_response(request)
