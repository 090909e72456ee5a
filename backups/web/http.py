"""HTTP helpers shared by the console, the API and the platform admin."""

from __future__ import annotations

from django.http import HttpRequest


def client_address(request: HttpRequest | None) -> str | None:
    """The address a request came from (REMOTE_ADDR: a proxy in front must set it, e.g. gunicorn's
    --forwarded-allow-ips), or None outside a request."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None
