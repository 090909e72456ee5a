"""What each column kind means for the json format, in one table: :data:`KINDS`.

A column's kind (``"int"``, ``"datetime"``, ``"json"``...) follows from its Django field
(``payload.payload_table``). Per kind, a :class:`Kind` says which fields have it, how the
payload writer spells a value (``payload``), how a restore checks a payload value and hands
it to COPY (``load``), and how an uploaded fixture's value is checked and normalised to what
the writer would have written (``values``, with the checkers of ``normalizers``). Adding a
kind is one entry in :data:`KINDS`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from django.conf import settings
from django.db import connection, models
from django.utils import timezone
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string

from backups.formats.json.normalizers import (
    Converter,
    WrongValue,
    binary_normalizer,
    bool_normalizer,
    date_normalizer,
    datetime_normalizer,
    decimal_normalizer,
    duration_normalizer,
    float_normalizer,
    inet_normalizer,
    int_normalizer,
    json_normalizer,
    json_text,
    text_normalizer,
    time_normalizer,
    uuid_normalizer,
)

__all__ = ["JSON_DECODER", "JSON_NULL", "KINDS", "Kind", "LoadContext", "json_text"]


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
        raise WrongValue("expected text")
    return value


def _integer(value: Any) -> int | str:
    if value.__class__ is not int and value.__class__ is not str:
        raise WrongValue("expected a whole number")
    return value  # PostgreSQL checks the digits and the range


def _boolean(value: Any) -> bool:
    if value.__class__ is not bool:
        raise WrongValue("expected true or false")
    return value


def _decimal(value: Any) -> str | int | Decimal:
    if value.__class__ not in (str, int, Decimal):
        raise WrongValue("expected a decimal number")
    return value  # PostgreSQL checks the digits


def _date(value: Any) -> date:
    return date.fromisoformat(_text(value))


def _time(value: Any) -> time:
    result = time.fromisoformat(_text(value))
    if result.tzinfo is not None:
        raise WrongValue("a time of day cannot carry a time zone")
    return result


def _binary(value: Any) -> bytes:
    try:
        return base64.b64decode(_text(value), validate=True)
    except binascii.Error as exc:
        raise WrongValue("not base64") from exc


def _json(value: Any) -> str:
    return "null" if value is JSON_NULL else json_text(value)


def _float(value: Any) -> float:
    if value.__class__ is str and value not in ("NaN", "Infinity", "-Infinity"):
        raise WrongValue("not a number")
    if value.__class__ not in (str, int, Decimal):
        raise WrongValue("expected a number")
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
            raise WrongValue("not a duration")
        return result

    return to_duration


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
        checker=int_normalizer,
        sql=lambda c: f"{c}::text",
    ),
    "text": Kind(
        ("CharField", "TextField", "SlugField", "FileField", "FilePathField"),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=text_normalizer,
        sql=lambda c: f"to_json({c})::text",
    ),
    "bool": Kind(
        ("BooleanField",),
        encode={True: "true", False: "false"}.__getitem__,
        loader=_fixed(_boolean),
        checker=bool_normalizer,
        sql=lambda c: f"CASE WHEN {c} THEN 'true' ELSE 'false' END",
    ),
    "decimal": Kind(
        ("DecimalField",),
        encode=encode_basestring,
        loader=_fixed(_decimal),
        checker=decimal_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "uuid": Kind(
        ("UUIDField",),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=uuid_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "inet": Kind(
        ("GenericIPAddressField", "IPAddressField"),
        encode=encode_basestring,
        loader=_fixed(_text),
        checker=inet_normalizer,
        selected_as_text=True,
        sql=lambda c: f"to_json({c}::text)::text",
    ),
    "date": Kind(
        ("DateField",),
        encode=lambda v: _quoted(v.isoformat()),
        loader=_fixed(_date),
        checker=date_normalizer,
        sql=_date_sql,
    ),
    "time": Kind(
        ("TimeField",),
        encode=lambda v: _quoted(v.isoformat(timespec="microseconds")),
        loader=_fixed(_time),
        checker=time_normalizer,
        sql=_time_sql,
    ),
    "datetime": Kind(
        ("DateTimeField",),
        encode=lambda v: _quoted(v.isoformat(timespec="microseconds")),
        loader=_datetime_loader,
        checker=datetime_normalizer,
        sql=_datetime_sql,
    ),
    "duration": Kind(
        ("DurationField",),
        encode=lambda v: _quoted(duration_string(v)),
        loader=_duration_loader,
        checker=duration_normalizer,
        sql=_duration_sql,
    ),
    "binary": Kind(
        ("BinaryField",),
        encode=lambda v: _quoted(base64.b64encode(v).decode("ascii")),
        loader=_fixed(_binary),
        checker=binary_normalizer,
        sql=lambda c: f"""'"' || translate(encode({c}, 'base64'), E'\\n', '') || '"'""",
    ),
    "json": Kind(
        ("JSONField",),
        encode=_jsonb_text,
        loader=_fixed(_json),
        checker=json_normalizer,
        selected_as_text=True,
        sql=lambda c: f"{c}::text",
    ),
    "float": Kind(
        ("FloatField",),
        encode=_float_json,
        loader=_fixed(_float),
        checker=float_normalizer,
    ),
}
"""Every column kind of the json format, by name: a column's ``kind`` is a key here."""
