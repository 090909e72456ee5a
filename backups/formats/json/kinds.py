"""What each column kind means for the json format, in one table: :data:`KINDS`.

A column's kind (``"int"``, ``"datetime"``, ``"json"``...) follows from its Django field
(``payload.payload_table``). Per kind, a :class:`Kind` says which fields have it, how the
payload writer spells a value (``payload``), how a restore checks a payload value and hands
it to COPY (``load``), and how an uploaded fixture's value is checked and normalised to what
the writer would have written (``values``). Adding a kind is one entry in :data:`KINDS`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, localcontext
from json.encoder import encode_basestring
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from backups.formats.json.reasons import BadValue, expect, expect_digits, reason_text, to_python, validation_reason

__all__ = ["JSON_DECODER", "JSON_NULL", "KINDS", "Kind", "LoadContext", "json_text"]

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class LoadContext:
    """What loading values depends on, read once per load."""

    use_tz: bool
    default_tz: tzinfo
    fast_durations: bool  # the server reads Django's duration_string as psycopg's text (IntervalStyle)

    @classmethod
    def current(cls) -> LoadContext:
        """The context of the settings and of the current connection (which must be open)."""
        return cls(
            use_tz=settings.USE_TZ,
            default_tz=timezone.get_default_timezone(),
            fast_durations=connection.connection.info.parameter_status("IntervalStyle") != "sql_standard",
        )


@dataclass(frozen=True)
class Kind:
    """One column kind: the fields that have it, and how its values are written, loaded and checked."""

    internal_types: tuple[str, ...]
    """Django's internal types (``Field.get_internal_type()``) of the kind; a relation has its target's."""
    encode: Callable[[Any], str]
    """A non-null value as fetched from PostgreSQL, as JSON text in the payload."""
    loader: Callable[[LoadContext], Converter]
    """Called once per load: the converter checking a payload value and giving what COPY receives
    (a Python object that psycopg adapts as for Django's own queries, or text PostgreSQL parses)."""
    checker: Callable[[models.Field, models.Field], Converter]
    """Called once per field (the field, and its target field for a relation): the function
    checking one non-null value of an uploaded fixture and giving it as the database would
    give it to ``encode``; it raises :class:`~backups.formats.json.reasons.BadValue`."""
    selected_as_text: bool = False
    """The writer selects ``column::text``: PostgreSQL's own exact spelling."""
    sql: Callable[[str], str] | None = None
    """Given a quoted column, the SQL text expression that spells a non-null value exactly as
    ``encode`` would (``payload.payload_line_sql`` builds whole lines with it, so that
    PostgreSQL writes them); None where only Python spells it right (floats)."""


# --- JSON values -----------------------------------------------------------------------


class _JsonNull:
    """The type of :data:`JSON_NULL` (a singleton)."""

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL = _JsonNull()
"""A JSON field's value that is JSON ``null`` (SQL NULL is ``None``)."""

JSON_DECODER = json.JSONDecoder(parse_float=Decimal)
"""Parses payload JSON: numbers with a fraction or exponent as Decimals, so that no digit is lost."""


class _BadValue(ValueError):
    """A value of the wrong type or form for its column."""


class _HasDecimal(Exception):
    pass


def _refuse_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        raise _HasDecimal
    raise _BadValue(f"{type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_refuse_decimal)


def json_text(value: Any) -> str:
    """JSON text for a JSON field's value; Decimals (parsed JSON numbers) keep all their digits."""
    try:
        return _ENCODER.encode(value)
    except _HasDecimal:
        pass
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _BadValue("NaN and infinities are not JSON")
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{encode_basestring(k)}: {json_text(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(json_text(v) for v in value) + "]"


# --- Writing: encode -------------------------------------------------------------------


def _quoted(text: str) -> str:
    return f'"{text}"'


def _float_json(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return _quoted("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))


def _jsonb_text(text: str) -> str:
    # jsonb's text form is valid one-line JSON; anything else is parsed and written again.
    if "\n" in text or "\r" in text:
        return json_text(JSON_DECODER.decode(text))
    return text


# --- Loading: loader -------------------------------------------------------------------


def _fixed(converter: Converter) -> Callable[[LoadContext], Converter]:
    """The loader of a converter that does not depend on the load's context."""
    return lambda _context: converter


def _text(value: Any) -> str:
    if value.__class__ is not str:
        raise _BadValue("expected text")
    return value


def _integer(value: Any) -> int | str:
    if value.__class__ is not int and value.__class__ is not str:
        raise _BadValue("expected a whole number")
    return value  # PostgreSQL checks the digits and the range


def _boolean(value: Any) -> bool:
    if value.__class__ is not bool:
        raise _BadValue("expected true or false")
    return value


def _decimal(value: Any) -> str | int | Decimal:
    if value.__class__ not in (str, int, Decimal):
        raise _BadValue("expected a decimal number")
    return value  # PostgreSQL checks the digits


def _date(value: Any) -> date:
    return date.fromisoformat(_text(value))


def _time(value: Any) -> time:
    result = time.fromisoformat(_text(value))
    if result.tzinfo is not None:
        raise _BadValue("a time of day cannot carry a time zone")
    return result


def _binary(value: Any) -> bytes:
    try:
        return base64.b64decode(_text(value), validate=True)
    except binascii.Error as exc:
        raise _BadValue("not base64") from exc


def _json(value: Any) -> str:
    return "null" if value is JSON_NULL else json_text(value)


def _float(value: Any) -> float:
    if value.__class__ is str and value not in ("NaN", "Infinity", "-Infinity"):
        raise _BadValue("not a number")
    if value.__class__ not in (str, int, Decimal):
        raise _BadValue("expected a number")
    return float(value)


def _datetime_loader(context: LoadContext) -> Callable[[Any], datetime]:
    use_tz, default_tz = context.use_tz, context.default_tz

    def to_datetime(value: Any) -> datetime:
        result = datetime.fromisoformat(_text(value))
        if use_tz and result.tzinfo is None:
            return timezone.make_aware(result, default_tz)  # as loaddata does
        if not use_tz and result.tzinfo is not None:
            return timezone.make_naive(result, default_tz)
        return result

    return to_datetime


# Django's duration_string: PostgreSQL reads it as days plus a time, exactly as the text
# psycopg writes for the same timedelta (unless IntervalStyle is sql_standard).
_CANONICAL_DURATION = re.compile(r"(?:-?\d{1,9} )?(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{6})?")


def _duration_loader(context: LoadContext) -> Converter:
    fast_durations = context.fast_durations

    def to_duration(value: Any) -> Any:
        if fast_durations and _CANONICAL_DURATION.fullmatch(_text(value)):
            return value
        result = parse_duration(_text(value))
        if result is None:
            raise _BadValue("not a duration")
        return result

    return to_duration


# --- Checking uploaded values: checker -------------------------------------------------


def _int_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    low, high = connection.ops.integer_field_ranges.get(target.get_internal_type(), (None, None))

    def integer(value: Any) -> int:
        expect(value, (int, str), "whole_number")
        expect_digits(value)
        result = to_python(model_field, value)
        if low is not None and not low <= result <= high:
            raise BadValue("upload.invalid_value.out_of_range", value=result, low=low, high=high)
        return result

    return integer


def _text_normalizer(model_field: models.Field, target: models.Field) -> Converter:
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


def _bool_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def boolean(value: Any) -> bool:
        expect(value, (bool, int, str), "true_or_false")
        return to_python(model_field, value)

    return boolean


def _uuid_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def uuid_text(value: Any) -> str:
        expect(value, (str, int, uuid.UUID), "uuid")
        return str(to_python(model_field, value))

    return uuid_text


def _inet_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def address(value: Any) -> str:
        expect(value, (str,), "ip_address")
        result = to_python(model_field, value)
        try:
            target.run_validators(result)
        except ValidationError as exc:
            raise BadValue.of(validation_reason(exc)) from None
        return result

    return address


def _date_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def day(value: Any) -> date:
        expect(value, (str, date), "date")
        return to_python(model_field, value)

    return day


def _time_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def time_of_day(value: Any) -> time:
        expect(value, (str, time), "time")
        return to_python(model_field, value).replace(tzinfo=None)

    return time_of_day


def _datetime_normalizer(model_field: models.Field, target: models.Field) -> Converter:
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


def _duration_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def duration(value: Any) -> timedelta:
        expect(value, (str, timedelta), "duration")
        return to_python(model_field, value)

    return duration


def _binary_normalizer(model_field: models.Field, target: models.Field) -> Converter:
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


def _json_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def json_value(value: Any) -> str:
        try:
            result = json_text(value)
        except (ValueError, TypeError, RecursionError):
            raise BadValue("upload.invalid_value.json_not_storable") from None
        if _JSON_NUL.search(result):
            raise BadValue("upload.invalid_value.json_nul")
        return result

    return json_value


def _float_normalizer(model_field: models.Field, target: models.Field) -> Converter:
    def number(value: Any) -> float:
        expect(value, (int, float, Decimal, str), "number")
        expect_digits(value)
        return to_python(model_field, value)

    return number


def _decimal_normalizer(model_field: models.Field, target: models.Field) -> Callable[[Any], str]:
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


# --- The table -------------------------------------------------------------------------

# --- Writing in SQL: the same spellings, built by PostgreSQL ----------------------------


def _refused_sql(column: str, kind: str) -> str:
    """An expression that fails the export for a value Python could not load either
    (out-of-range dates, infinity, 24:00): the backup fails as it did, never writes it wrongly."""
    return f"(('the json format cannot hold this {kind}: ' || {column}::text)::integer)::text"


def _in_range_sql(column: str, low: str, high: str, kind: str, spelled: str) -> str:
    return f"CASE WHEN {column} >= {low} AND {column} < {high} THEN {spelled} ELSE {_refused_sql(column, kind)} END"


def _date_sql(column: str) -> str:
    spelled = f"""'"' || to_char({column}, 'YYYY-MM-DD') || '"'"""
    return _in_range_sql(column, "'0001-01-01'::date", "'10000-01-01'::date", "date", spelled)


def _time_sql(column: str) -> str:
    spelled = f"""'"' || to_char({column}::interval, 'HH24:MI:SS.US') || '"'"""
    return _in_range_sql(column, "'00:00'::time", "'24:00'::time", "time", spelled)


def _datetime_sql(column: str) -> str:
    # The writer's connection is in UTC (Django's, with USE_TZ): isoformat() ends in +00:00.
    spelled = f"""'"' || to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"'"""
    low, high = "'0001-01-01 00:00+00'::timestamptz", "'10000-01-01 00:00+00'::timestamptz"
    return _in_range_sql(column, low, high, "datetime", spelled)


_DAY_MICROSECONDS = 86_400_000_000


def _duration_sql(column: str) -> str:
    """``duration_string`` of the timedelta psycopg makes of an interval.

    psycopg counts a year as 365 days and a month as 30; PostgreSQL's epoch of an interval
    counts a year as 365.25 days (6 hours more) and a month as 30: the total is the epoch
    less 6 hours a year. It is computed once per value (a sub-select), then split as
    timedelta splits it: whole days rounded down, and a positive rest under a day.
    """
    total = f"(extract(epoch from {column}) * 1000000)::bigint - extract(year from {column})::bigint * 21600000000"
    days = f"floor(total::numeric / {_DAY_MICROSECONDS})::bigint"
    text = (
        """'"' || CASE WHEN days <> 0 THEN days::text || ' ' ELSE '' END"""
        " || lpad((rest / 3600000000)::text, 2, '0') || ':' || lpad((rest / 60000000 % 60)::text, 2, '0')"
        " || ':' || lpad((rest / 1000000 % 60)::text, 2, '0')"
        " || CASE WHEN rest % 1000000 <> 0 THEN '.' || lpad((rest % 1000000)::text, 6, '0') ELSE '' END || '\"'"
    )
    rest = f"total - days * {_DAY_MICROSECONDS} AS rest"
    return f"(SELECT {text} FROM (SELECT days, {rest} FROM (SELECT {days} AS days, total FROM (SELECT {total} AS total OFFSET 0) t OFFSET 0) d) s)"  # noqa: S608, E501


KINDS: dict[str, Kind] = {
    "int": Kind(
        (
            *("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField"),
            *("SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField"),
        ),
        encode=str,
        loader=_fixed(_integer),
        checker=_int_normalizer,
        sql=lambda c: f"{c}::text",
    ),
    "text": Kind(
        ("CharField", "TextField", "SlugField", "FileField", "FilePathField"),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=_text_normalizer,
        sql=lambda c: f"to_json({c})::text",
    ),
    "bool": Kind(
        ("BooleanField",),
        encode={True: "true", False: "false"}.__getitem__,
        loader=_fixed(_boolean),
        checker=_bool_normalizer,
        sql=lambda c: f"CASE WHEN {c} THEN 'true' ELSE 'false' END",
    ),
    "decimal": Kind(
        ("DecimalField",),
        encode=encode_basestring,
        loader=_fixed(_decimal),
        checker=_decimal_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "uuid": Kind(
        ("UUIDField",),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=_uuid_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "inet": Kind(
        ("GenericIPAddressField", "IPAddressField"),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=_inet_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "date": Kind(
        ("DateField",),
        encode=lambda v: _quoted(v.isoformat()),
        loader=_fixed(_date),
        checker=_date_normalizer,
        sql=_date_sql,
    ),
    "time": Kind(
        ("TimeField",),
        encode=lambda v: _quoted(v.isoformat(timespec="microseconds")),
        loader=_fixed(_time),
        checker=_time_normalizer,
        sql=_time_sql,
    ),
    "datetime": Kind(
        ("DateTimeField",),
        encode=lambda v: _quoted(v.isoformat(timespec="microseconds")),
        loader=_datetime_loader,
        checker=_datetime_normalizer,
        sql=_datetime_sql,
    ),
    "duration": Kind(
        ("DurationField",),
        encode=lambda v: _quoted(duration_string(v)),
        loader=_duration_loader,
        checker=_duration_normalizer,
        sql=_duration_sql,
    ),
    "binary": Kind(
        ("BinaryField",),
        encode=lambda v: _quoted(base64.b64encode(v).decode("ascii")),
        loader=_fixed(_binary),
        checker=_binary_normalizer,
        sql=lambda c: f"""'"' || translate(encode({c}, 'base64'), E'\\n', '') || '"'""",
    ),
    "json": Kind(
        ("JSONField",),
        encode=_jsonb_text,
        loader=_fixed(_json),
        checker=_json_normalizer,
        selected_as_text=True,
        sql=lambda c: f"{c}::text",
    ),
    "float": Kind(
        ("FloatField",),
        encode=_float_json,
        loader=_fixed(_float),
        checker=_float_normalizer,
    ),
}
"""Every column kind of the json format, by name: a column's ``kind`` is a key here."""
