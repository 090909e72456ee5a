"""Plain views outside the admin: the deployment's health."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from backups.operations.health import health


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with every check ok, else 503; JSON, no secrets (see ``backups.operations.health``)."""
    ok, body = health()
    return JsonResponse(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})
