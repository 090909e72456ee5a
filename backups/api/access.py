"""Who is calling the API, and what they may do: :func:`endpoint`, every API view's method table.

Each route is one explicit table, method -> :class:`Method` (the handler, the permission, and
whether it is an *action*: anything that changes or records something). The dispatcher:

* answers ``OPTIONS`` with the table (``Allow``) and any method not in it with 405, before
  looking at credentials or at the body;
* answers ``HEAD`` only where ``GET`` exists and only reads: it runs the GET handler and drops
  the body, so a HEAD never reaches a write, whatever body it carries;
* authenticates: an API token (``Authorization: Bearer rsp_…``) or, with no such header, the
  console's session, whose every method but GET and HEAD needs the CSRF token (a token's need
  none: no cookie is involved). The user must be an active staff user of this clinic, as for
  the console;
* counts the request against the fair-use limits of its user and of the clinic, whatever the
  credential (:mod:`backups.services.api_usage`);
* checks the user's own ``backups.<codename>`` here, and refuses an action to a read-only token.

Every refusal is JSON. A route whose credential is in the URL (a signed download link) says
``credentials=False`` and checks it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt

from backups.api.errors import BadParameter, api_error, error_response
from backups.exceptions import RespaldoError
from backups.messages.api import API_ACTIONS
from backups.services.api_tokens import TokenRefused, token_authenticate
from backups.services.api_usage import count_api_request
from backups.web.http import client_address

View = Callable[..., HttpResponse]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
NO_CSRF = frozenset({"GET", "HEAD"})  # what a session may send without its CSRF token: reads and downloads


@dataclass(frozen=True)
class Method:
    """One method of a route: its handler, the permission(s) it needs, and whether it acts.

    ``csrf_in_view``: the handler checks a session's CSRF itself (:func:`check_csrf`), after
    choosing its upload handlers (nothing may read the body before). ``credentials=False``: the
    route needs no login (its credential is in the URL, or it is public).
    """

    handler: View
    permission: str | tuple[str, ...] = ()
    action: bool = False
    csrf_in_view: bool = False
    credentials: bool = True


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer …`` (or ``Token …``) header, or None without one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def authenticate(request: HttpRequest, *, csrf: bool = True) -> HttpResponse | None:
    """Set ``request.user`` and ``request.api_token`` (None for a session); a JSON refusal, or None if it may go on.

    ``csrf=False`` leaves a session's CSRF check to the view.
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
    if csrf and request.method not in NO_CSRF:
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


def acting_token(request: HttpRequest) -> str | None:
    """The prefix of the API token a request acts with (what its audit entries name), or None for a session."""
    token = getattr(request, "api_token", None)
    return token.prefix if token is not None else None


def endpoint(**table: Method) -> View:
    """The view of one route: ``endpoint(GET=Method(...), POST=Method(...))`` (see the module's rules)."""
    unknown = set(table) - {"GET", "POST", "PUT", "PATCH", "DELETE"}
    if unknown or not table:
        raise ValueError(f"an endpoint's table holds GET, POST, PUT, PATCH or DELETE, not {sorted(unknown)}")
    methods = dict(table)
    if "GET" in methods and not methods["GET"].action:
        methods["HEAD"] = methods["GET"]  # never where GET acts (a download is recorded)
    allow = ", ".join(method for method in METHODS if method in methods or method == "OPTIONS")

    @csrf_exempt
    def dispatch(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
        else:
            method = methods.get(request.method or "")
            response = (
                api_error("api_method_not_allowed", method=request.method, allowed=allow)
                if method is None
                else _run(request, method, args, kwargs)
            )
        response["Allow"] = allow
        if request.method == "HEAD":
            _drop_body(response)
        return response

    dispatch.methods = methods  # what the method-matrix test and the OpenAPI check read
    first = next(iter(table.values())).handler
    dispatch.__name__, dispatch.__doc__ = first.__name__, first.__doc__
    return dispatch


def _run(request: HttpRequest, method: Method, args: tuple, kwargs: dict) -> HttpResponse:
    """Authenticate, count, authorize, then run ``method``'s handler; every refusal as JSON."""
    if method.credentials:
        refused = authenticate(request, csrf=not method.csrf_in_view)
        if refused is None:
            refused = _over_fair_use(request)
        if refused is None:
            refused = authorize(request, method.permission, action=method.action)
        if refused is not None:
            return refused
    try:
        return method.handler(request, *args, **kwargs)
    except BadParameter as exc:
        return api_error("api_bad_parameter", name=exc.name, reason=exc.reason)
    except Http404:
        return api_error("api_not_found")
    except RespaldoError as exc:
        return error_response(exc)


def _over_fair_use(request: HttpRequest) -> HttpResponse | None:
    try:
        count_api_request(clinic_id=request.tenant.pk, username=request.user.get_username())
    except RespaldoError as exc:
        return error_response(exc)
    return None


def _drop_body(response: HttpResponse) -> None:
    """A HEAD answer: the GET's headers, no body (a streamed file is closed unread)."""
    if response.streaming:
        response.close()
        response.streaming_content = []
    else:
        length = len(response.content)
        response.content = b""
        response["Content-Length"] = str(length)
