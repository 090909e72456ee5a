"""Who is calling the API, and what they may do: the ``api_view`` decorator.

A request is authenticated by an API token (``Authorization: Bearer rsp_…``) or, with no
such header, by the console's session; a session's unsafe requests need the CSRF token,
a token's need none (no cookie is involved). The user must be an active staff user of
this clinic, as for the console. Then the view's permission is checked: the user's own
``backups.<codename>`` in this clinic, and for an action (anything but reading) a
read-only token is refused whatever its user may do. Every refusal is JSON.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt

from backups.api.errors import api_error, error_response
from backups.messages_api import API_ACTIONS
from backups.operations.audit import client_address
from backups.services.api_tokens import TokenRefused, token_authenticate

View = Callable[..., HttpResponse]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer …`` (or ``Token …``) header, or None without one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def authenticate(request: HttpRequest, *, csrf: bool = True) -> HttpResponse | None:
    """Set ``request.user`` and ``request.api_token`` (None for a session); a JSON refusal, or None if it may go on.

    ``csrf=False`` leaves a session's CSRF check to the view (one that must choose its upload
    handlers before anything reads the body).
    """
    request.api_token = None
    raw = bearer_token(request)
    if raw is not None or request.META.get("HTTP_AUTHORIZATION"):
        try:
            request.api_token, request.user = token_authenticate(
                clinic=request.tenant, raw=raw or "", address=client_address(request)
            )
        except TokenRefused as exc:
            return error_response(exc)
        return None
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return api_error("api_not_authenticated")
    if csrf and request.method not in SAFE_METHODS:
        return check_csrf(request)
    return None


def check_csrf(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check of a session's request, as JSON when it fails."""
    middleware = CsrfViewMiddleware(lambda _request: HttpResponse())
    middleware.process_request(request)
    refused = middleware.process_view(request, None, (), {})
    if refused is None:
        return None
    reason = getattr(request, "_csrf_failure_reason", "") or "CSRF"
    return api_error("api_csrf_failed", reason=reason)


def authorize(request: HttpRequest, codenames: str | tuple[str, ...], *, action: bool) -> HttpResponse | None:
    """403 unless the user holds one of ``backups.<codename>`` here and, for an action, the token is not read-only."""
    codenames = (codenames,) if isinstance(codenames, str) else codenames
    words = gettext(API_ACTIONS.get(codenames[0], codenames[0]))
    if action and request.api_token is not None and request.api_token.read_only:
        return api_error("api_read_only", action=words)
    if not any(request.user.has_perm(f"backups.{codename}") for codename in codenames):
        return api_error("api_forbidden", action=words)
    return None


def api_view(methods: dict[str, tuple[str | tuple[str, ...], bool]], *, csrf: bool = True) -> Callable[[View], View]:
    """Wrap an API view: ``methods`` maps each allowed method to (permission codename(s), is an action).

    The view runs only for an authenticated, authorized request; a 404 it raises is JSON too.
    ``csrf=False``: the view calls :func:`check_csrf` itself for a session (after choosing its
    upload handlers: nothing may read the body before).
    """

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            method = request.method
            if method == "HEAD" and "GET" in methods and not methods["GET"][1]:
                method = "GET"  # HEAD reads like GET; never where GET acts (a download is recorded)
            if method not in methods:
                response = api_error(
                    "api_method_not_allowed", method=request.method, allowed=", ".join(sorted(methods))
                )
                response["Allow"] = ", ".join(sorted(methods))
                return response
            refused = authenticate(request, csrf=csrf)
            if refused is not None:
                return refused
            codename, action = methods[method]
            refused = authorize(request, codename, action=action)
            if refused is not None:
                return refused
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return api_error("api_not_found")

        return wrapped

    return decorate
