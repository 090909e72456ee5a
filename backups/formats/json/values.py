"""Checking one value of an uploaded fixture: one normaliser per column kind (``_NORMALIZERS``).

Each gives the value as the payload writer would write it, or raises ``BadValue`` with a
reason (a message id and parameters) that the converter puts in the refusal, naming the
record and the field.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import posixpath
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone, translation
from django.utils.functional import Promise

from backups.exceptions import render
from backups.formats.json.parser import (
    MAX_NUMBER_DIGITS,
    message_param,
)
from backups.formats.json.payload import json_text
from backups.messages_upload import UPLOAD_MESSAGES

# --- Checking values -------------------------------------------------------------------


class BadValue(ValueError):
    """A value that does not fit its field; ``reason`` (a message) completes "field “x”: ..."."""

    def __init__(self, message_id: str, /, **params: Any) -> None:
        self.reason = message_param(message_id, **params)
        super().__init__(message_id)

    @classmethod
    def of(cls, reason: dict[str, Any]) -> BadValue:
        error = cls(reason["message_id"])
        error.reason = reason
        return error

    def __str__(self) -> str:
        return render(self.reason["message_id"], self.reason.get("params"))


def _text(text: str) -> BadValue:
    """A reason in English only (Python's own message)."""
    return BadValue("upload.text", text=text.strip())


def json_type(value: Any) -> dict[str, Any]:
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


def _expect(value: Any, types: tuple[type, ...], what: str) -> None:
    """``what``: an ``upload.kind.*`` message id's last part."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = message_param(f"upload.kind.{what}")
        raise BadValue("upload.invalid_value.expected", what=expected, type=json_type(value))


def _expect_digits(value: Any) -> None:
    """Numbers given as text: refuse more digits than can be read (before Django tries)."""
    if isinstance(value, str) and len(value.strip().lstrip("+-")) > MAX_NUMBER_DIGITS:
        raise BadValue("upload.invalid_value.too_many_digits", start=value.strip()[:20], limit=MAX_NUMBER_DIGITS)


# Django's messages (model fields' to_python() and validators), by their English text.
_DJANGO_MESSAGES = {
    text: message_id for message_id, text in UPLOAD_MESSAGES.items() if message_id.startswith("upload.django.")
}


def _validation_reason(exc: ValidationError) -> dict[str, Any]:
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


def _to_python(model_field: models.Field, value: Any) -> Any:
    try:
        return model_field.to_python(value)
    except ValidationError as exc:
        raise BadValue.of(_validation_reason(exc)) from None
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        raise _text(str(exc) or type(exc).__name__) from None


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    """A function checking one non-null value of ``model_field`` and giving it as the database
    would give it to the json payload writer (see ``json_payload._ENCODERS``).

    Values come from JSON, or are the field's default (a Python value) for a missing field.
    A field with ``choices`` takes only those; a file field only names of the clinic's files.
    """
    normalize = _value_normalizer(model_field, kind)
    if isinstance(model_field, models.FileField):
        return _file_name_normalizer(model_field, normalize)
    if model_field.choices and not model_field.is_relation:
        return _choice_normalizer(model_field, normalize)
    return normalize


def _choice_normalizer(model_field: models.Field, normalize: Callable[[Any], Any]) -> Callable[[Any], Any]:
    allowed = {}
    for value, _label in model_field.flatchoices:
        with contextlib.suppress(BadValue):
            allowed[normalize(value)] = value

    def choice(value: Any) -> Any:
        result = normalize(value)
        if result not in allowed and not (model_field.blank and result in model_field.empty_values):
            raise BadValue(
                "upload.invalid_value.choices",
                value=str(value)[:100],
                choices=", ".join(str(v) for v in allowed.values())[:300],
            )
        return result

    return choice


def _file_name_normalizer(model_field: models.FileField, normalize: Callable[[Any], str]) -> Callable[[Any], str]:
    """File names are relative to the clinic's own media folder (MEDIA_ROOT/<schema>/, added by
    django-tenants' storage): a name must stay inside it, under the folder ``upload_to`` names."""
    upload_to = model_field.upload_to if isinstance(model_field.upload_to, str) else ""
    folders = []
    for part in upload_to.split("/")[:-1]:  # the fixed folders before any strftime "%Y"...
        if "%" in part or not part:
            break
        folders.append(part + "/")
    folder = "".join(folders)

    def file_name(value: Any) -> str:
        name = normalize(value)
        if not name:
            return name  # no file
        if (
            "\\" in name
            or name.startswith("/")
            or posixpath.normpath(name) != name
            or ".." in name.split("/")
            or not name.startswith(folder)
        ):
            if folder:
                raise BadValue("upload.invalid_value.file_name.folder", value=name[:100], folder=folder)
            raise BadValue("upload.invalid_value.file_name.media", value=name[:100])
        return name

    return file_name


def _value_normalizer(model_field: models.Field, kind: str) -> Callable[[Any], Any]:
    """The check of one column kind for ``model_field`` (its target field's limits for a relation)."""
    target = model_field
    while target.is_relation:
        target = target.target_field
    factory = _NORMALIZERS.get(kind)
    if factory is None:
        raise ValueError(f"unknown column kind {kind!r}")  # json_payload refuses such fields first
    return factory(model_field, target)


def _int_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    low, high = connection.ops.integer_field_ranges.get(target.get_internal_type(), (None, None))

    def integer(value: Any) -> int:
        _expect(value, (int, str), "whole_number")
        _expect_digits(value)
        result = _to_python(model_field, value)
        if low is not None and not low <= result <= high:
            raise BadValue("upload.invalid_value.out_of_range", value=result, low=low, high=high)
        return result

    return integer


def _text_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    max_length = getattr(target, "max_length", None)

    def text(value: Any) -> str:
        _expect(value, (str, int, Decimal), "text")
        result = _to_python(model_field, value)
        result = result if isinstance(result, str) else str(result)
        if "\x00" in result:
            raise BadValue("upload.invalid_value.nul")
        if max_length is not None and len(result) > max_length:
            raise BadValue("upload.invalid_value.too_long", length=len(result), max_length=max_length)
        return result

    return text


def _bool_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def boolean(value: Any) -> bool:
        _expect(value, (bool, int, str), "true_or_false")
        return _to_python(model_field, value)

    return boolean


def _uuid_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def uuid_text(value: Any) -> str:
        _expect(value, (str, int, uuid.UUID), "uuid")
        return str(_to_python(model_field, value))

    return uuid_text


def _inet_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def address(value: Any) -> str:
        _expect(value, (str,), "ip_address")
        result = _to_python(model_field, value)
        try:
            target.run_validators(result)
        except ValidationError as exc:
            raise BadValue.of(_validation_reason(exc)) from None
        return result

    return address


def _date_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def day(value: Any) -> date:
        _expect(value, (str, date), "date")
        return _to_python(model_field, value)

    return day


def _time_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def time_of_day(value: Any) -> time:
        _expect(value, (str, time), "time")
        return _to_python(model_field, value).replace(tzinfo=None)

    return time_of_day


def _datetime_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    use_tz = settings.USE_TZ
    default_tz = timezone.get_default_timezone()

    def moment(value: Any) -> datetime:
        _expect(value, (str, date), "date_time")
        result = _to_python(model_field, value)
        try:
            if use_tz:
                if timezone.is_naive(result):
                    result = timezone.make_aware(result, default_tz)  # as loaddata does
                return result.astimezone(UTC)
            return timezone.make_naive(result, default_tz) if timezone.is_aware(result) else result
        except (ValueError, OverflowError) as exc:
            raise _text(str(exc) or type(exc).__name__) from None

    return moment


def _duration_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def duration(value: Any) -> timedelta:
        _expect(value, (str, timedelta), "duration")
        return _to_python(model_field, value)

    return duration


def _binary_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def binary(value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        _expect(value, (str,), "base64")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadValue("upload.invalid_value.base64") from None

    return binary


def _json_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def json_value(value: Any) -> str:
        try:
            result = json_text(value)
        except (ValueError, TypeError, RecursionError):
            raise BadValue("upload.invalid_value.json_not_storable") from None
        if _JSON_NUL.search(result):
            raise BadValue("upload.invalid_value.json_nul")
        return result

    return json_value


def _float_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], Any]:
    def number(value: Any) -> float:
        _expect(value, (int, float, Decimal, str), "number")
        _expect_digits(value)
        return _to_python(model_field, value)

    return number


def _decimal_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], str]:
    max_digits, places = target.max_digits, target.decimal_places

    def decimal_text(value: Any) -> str:
        _expect(value, (str, int, Decimal), "decimal_number")
        _expect_digits(value)
        result = _to_python(model_field, value)
        if not result.is_finite():
            raise BadValue("upload.invalid_value.not_a_number")
        if max_digits is None or places is None:
            return str(result)
        if not result.is_zero() and result.adjusted() + 1 > max_digits - places:
            raise BadValue("upload.invalid_value.too_large", value=result, digits=max_digits - places)
        with localcontext() as context:
            context.prec = max_digits + 2
            exact = result.quantize(Decimal(1).scaleb(-places))
        if exact != result:
            raise BadValue("upload.invalid_value.decimal_places", value=result, places=places)
        return str(exact.copy_abs() if exact.is_zero() else exact)

    return decimal_text


# One entry per column kind (the kinds of payload._KIND_BY_INTERNAL_TYPE).
_NORMALIZERS: dict[str, Callable[[models.Field, models.Field], Callable[[Any], Any]]] = {
    "int": _int_normalizer,
    "text": _text_normalizer,
    "bool": _bool_normalizer,
    "decimal": _decimal_normalizer,
    "uuid": _uuid_normalizer,
    "inet": _inet_normalizer,
    "date": _date_normalizer,
    "time": _time_normalizer,
    "datetime": _datetime_normalizer,
    "duration": _duration_normalizer,
    "binary": _binary_normalizer,
    "json": _json_normalizer,
    "float": _float_normalizer,
}
