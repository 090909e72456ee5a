"""Checking an uploaded fixture's values: each column kind's normaliser (``Kind.checker`` in ``kinds``),
and :func:`json_text`, the exact JSON text of a JSON field's value that they and the loader share.

A normaliser is made once per field (the field, and its target field for a relation); it
checks one non-null value and gives it as the database would give it to the payload writer,
raising :class:`~backups.formats.json.reasons.BadValue` with the reason a person reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from json.encoder import encode_basestring
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone

from backups.formats.json.reasons import BadValue, expect, expect_digits, reason_text, to_python, validation_reason

Converter = Callable[[Any], Any]


class WrongValue(ValueError):
    """A value of the wrong type or form for its column."""


class _HasDecimal(Exception):
    pass


def _refuse_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        raise _HasDecimal
    raise WrongValue(f"{type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_refuse_decimal)


def json_text(value: Any) -> str:
    """JSON text for a JSON field's value; Decimals (parsed JSON numbers) keep all their digits."""
    try:
        return _ENCODER.encode(value)
    except _HasDecimal:
        pass
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise WrongValue("NaN and infinities are not JSON")
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{encode_basestring(k)}: {json_text(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(json_text(v) for v in value) + "]"


# --- Checking uploaded values: checker -------------------------------------------------


def int_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``int`` value."""
    low, high = connection.ops.integer_field_ranges.get(target.get_internal_type(), (None, None))

    def integer(value: Any) -> int:
        expect(value, (int, str), "whole_number")
        expect_digits(value)
        result = to_python(model_field, value)
        if low is not None and not low <= result <= high:
            raise BadValue("upload.invalid_value.out_of_range", value=result, low=low, high=high)
        return result

    return integer


def text_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``text`` value."""
    max_length = getattr(target, "max_length", None)

    def text(value: Any) -> str:
        expect(value, (str, int, Decimal), "text")
        result = to_python(model_field, value)
        result = result if isinstance(result, str) else str(result)
        if "\x00" in result:
            raise BadValue("upload.invalid_value.nul")
        if max_length is not None and len(result) > max_length:
            raise BadValue("upload.invalid_value.too_long", length=len(result), max_length=max_length)
        return result

    return text


def bool_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``bool`` value."""

    def boolean(value: Any) -> bool:
        expect(value, (bool, int, str), "true_or_false")
        return to_python(model_field, value)

    return boolean


def uuid_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``uuid`` value."""

    def uuid_text(value: Any) -> str:
        expect(value, (str, int, uuid.UUID), "uuid")
        return str(to_python(model_field, value))

    return uuid_text


def inet_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``inet`` value."""

    def address(value: Any) -> str:
        expect(value, (str,), "ip_address")
        result = to_python(model_field, value)
        try:
            target.run_validators(result)
        except ValidationError as exc:
            raise BadValue.of(validation_reason(exc)) from None
        return result

    return address


def date_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``date`` value."""

    def day(value: Any) -> date:
        expect(value, (str, date), "date")
        return to_python(model_field, value)

    return day


def time_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``time`` value."""

    def time_of_day(value: Any) -> time:
        expect(value, (str, time), "time")
        return to_python(model_field, value).replace(tzinfo=None)

    return time_of_day


def datetime_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``datetime`` value."""
    use_tz = settings.USE_TZ
    default_tz = timezone.get_default_timezone()

    def moment(value: Any) -> datetime:
        expect(value, (str, date), "date_time")
        result = to_python(model_field, value)
        try:
            if use_tz:
                if timezone.is_naive(result):
                    result = timezone.make_aware(result, default_tz)  # as loaddata does
                return result.astimezone(UTC)
            return timezone.make_naive(result, default_tz) if timezone.is_aware(result) else result
        except (ValueError, OverflowError) as exc:
            raise reason_text(str(exc) or type(exc).__name__) from None

    return moment


def duration_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``duration`` value."""

    def duration(value: Any) -> timedelta:
        expect(value, (str, timedelta), "duration")
        return to_python(model_field, value)

    return duration


def binary_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``binary`` value."""

    def binary(value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        expect(value, (str,), "base64")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadValue("upload.invalid_value.base64") from None

    return binary


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def json_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``json`` value."""

    def json_value(value: Any) -> str:
        try:
            result = json_text(value)
        except (ValueError, TypeError, RecursionError):
            raise BadValue("upload.invalid_value.json_not_storable") from None
        if _JSON_NUL.search(result):
            raise BadValue("upload.invalid_value.json_nul")
        return result

    return json_value


def float_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    """The checker of an uploaded ``float`` value."""

    def number(value: Any) -> float:
        expect(value, (int, float, Decimal, str), "number")
        expect_digits(value)
        return to_python(model_field, value)

    return number


def decimal_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], str]:
    """The checker of an uploaded ``decimal`` value."""
    max_digits, places = target.max_digits, target.decimal_places

    def decimal_text(value: Any) -> str:
        expect(value, (str, int, Decimal), "decimal_number")
        expect_digits(value)
        result = to_python(model_field, value)
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
