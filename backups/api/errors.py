"""The API's error responses: ``{"error": {"code", "message", ...}}`` with the message in the request's language."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from backups.exceptions import RespaldoError

NO_STORE = {"Cache-Control": "no-store"}


class BadParameter(Exception):
    """A query parameter that cannot be used (answered 400 ``api_bad_parameter``)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.name, self.reason = name, reason


# HTTP status of an expected refusal, by its stable code (anything else: 400).
STATUS_BY_CODE: dict[str, int] = {
    "api_not_authenticated": 401,
    "api_token_invalid": 401,
    "api_token_revoked": 401,
    "api_token_user_inactive": 401,
    "api_rate_limited": 429,
    "fair_use_backups": 429,
    "fair_use_downloads": 429,
    "api_csrf_failed": 403,
    "api_forbidden": 403,
    "api_read_only": 403,
    "api_not_found": 404,
    "api_backup_not_found": 404,
    "api_restore_not_found": 404,
    "api_link_expired": 410,
    "api_link_used": 410,
    "api_link_revoked": 410,
    "api_method_not_allowed": 405,
    "clinic_busy": 409,
    "backup_not_restorable": 409,
    "backup_not_downloadable": 409,
    "too_large": 413,
    "restore_in_progress": 503,
    "storage_failed": 503,
    "key_config": 503,
    "pg_tools": 503,
    "schema_missing": 503,
}


def error_response(error: RespaldoError, *, status: int | None = None, **extra: Any) -> JsonResponse:
    """The JSON answer for ``error``: its stable code, its message in the active language, its parameters."""
    body = {"error": {"code": error.code, "message": str(error), "params": error.params, **extra}}
    response = JsonResponse(body, status=status or STATUS_BY_CODE.get(error.code, 400), headers=NO_STORE)
    if response.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer realm="respaldo"'
    retry_after = error.params.get("retry_after")
    if isinstance(retry_after, int):
        response["Retry-After"] = str(retry_after)
    return response


def api_error(code: str, message_id: str | None = None, **params: Any) -> JsonResponse:
    """Shorthand for ``error_response(RespaldoError(code, message_id, **params))``."""
    return error_response(RespaldoError(code, message_id, **params))


def field_errors(form) -> JsonResponse:
    """400 ``api_invalid`` with each field's messages (``fields``: name -> list of sentences)."""
    fields = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
    codes = {name: _field_code(form, name) for name in fields}
    return error_response(RespaldoError("api_invalid"), fields=fields, field_codes=codes)


def _field_code(form, name: str) -> str:
    """The stable code of a field's first error: the form's own (``restore_not_confirmed``...) or Django's."""
    data = form.errors.as_data().get(name) or []
    return (data[0].code or "invalid") if data else "invalid"
