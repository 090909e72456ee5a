"""Why a value of an uploaded fixture is refused: :class:`BadValue` and the helpers every check uses.

The checks themselves are one per column kind (``kinds.KINDS``); ``values`` wraps them per
field. This module sits below both, so that ``kinds`` can use it without an import cycle.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import translation
from django.utils.functional import Promise

from backups.exceptions import render
from backups.formats.json.parser import MAX_NUMBER_DIGITS, message_param
from backups.messages.upload import UPLOAD_MESSAGES


class BadValue(ValueError):
    """A value that does not fit its field; ``reason`` (a message) completes "field “x”: ..."."""

    def __init__(self, message_id: str, /, **params: Any) -> None:
        self.reason = message_param(message_id, **params)
        super().__init__(message_id)

    @classmethod
    def of(cls, reason: dict[str, Any]) -> BadValue:
        """A BadValue for a reason already made (a message and its parameters)."""
        error = cls(reason["message_id"])
        error.reason = reason
        return error

    def __str__(self) -> str:
        return render(self.reason["message_id"], self.reason.get("params"))


def reason_text(text: str) -> BadValue:
    """A reason in English only (Python's own message)."""
    return BadValue("upload.text", text=text.strip())


def json_type(value: Any) -> dict[str, Any]:
    """The message naming the JSON type of a parsed value ("a list", "a decimal number"...)."""
    if value is None:
        kind = "null"
    elif isinstance(value, bool):
        kind = "true_false"
    elif isinstance(value, str):
        kind = "text"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, dict):
        kind = "object"
    elif isinstance(value, Decimal):
        kind = "decimal_number"
    else:
        kind = "number"
    return message_param(f"upload.kind.{kind}")


def expect(value: Any, types: tuple[type, ...], what: str) -> None:
    """Refuse a value not of ``types``; ``what``: an ``upload.kind.*`` message id's last part."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = message_param(f"upload.kind.{what}")
        raise BadValue("upload.invalid_value.expected", what=expected, type=json_type(value))


def expect_digits(value: Any) -> None:
    """Numbers given as text: refuse more digits than can be read (before Django tries)."""
    if isinstance(value, str) and len(value.strip().lstrip("+-")) > MAX_NUMBER_DIGITS:
        raise BadValue("upload.invalid_value.too_many_digits", start=value.strip()[:20], limit=MAX_NUMBER_DIGITS)


# Django's messages (model fields' to_python() and validators), by their English text.
_DJANGO_MESSAGES = {
    text: message_id for message_id, text in UPLOAD_MESSAGES.items() if message_id.startswith("upload.django.")
}


def validation_reason(exc: ValidationError) -> dict[str, Any]:
    """Django's ValidationError as a message: Django's own text and parameters when it is one we list."""
    if not hasattr(exc, "error_list"):  # a dictionary of errors: not raised by to_python() or validators
        with translation.override(None):
            return message_param("upload.text", text=" ".join(exc.messages))
    reasons = [_django_message(error) for error in exc.error_list]
    reason = reasons[0]
    for other in reasons[1:]:
        reason = message_param("upload.texts", first=reason, second=other)
    return reason


def _django_message(error: ValidationError) -> dict[str, Any]:
    with translation.override(None):  # Django's English texts are the msgids
        message_id = _DJANGO_MESSAGES.get(str(error.message))
        if message_id is None:
            return message_param("upload.text", text=" ".join(error.messages))
        params = {}
        for key, value in (error.params or {}).items():
            if isinstance(value, Promise) and str(value) in _DJANGO_MESSAGES:
                params[key] = message_param(_DJANGO_MESSAGES[str(value)])
            elif value is None or isinstance(value, bool | int | float):
                params[key] = value
            else:
                params[key] = str(value)[:100]
    return message_param(message_id, **params)


def to_python(model_field: models.Field, value: Any) -> Any:
    """``model_field.to_python(value)``, its errors as :class:`BadValue`."""
    try:
        return model_field.to_python(value)
    except ValidationError as exc:
        raise BadValue.of(validation_reason(exc)) from None
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise reason_text(str(exc) or type(exc).__name__) from None
