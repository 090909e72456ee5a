"""The portable ``json`` backup payload: a clinic's records as lossless, streamed JSON.

Format: a JSON array in UTF-8, one record per line, tables in dependency order (parents
first), rows in primary-key order. The records have the shape of Django's JSON serializer
(``model``, ``pk``, ``fields``), but the payload is *not* a fixture for ``manage.py
loaddata``: see the JSON null rule below (loaddata stores SQL NULL there, and aborts on a
NOT NULL column), and loaddata merges into a clinic's rows (it deletes none) instead of
replacing them. Restore it with :func:`load_json_payload` (what ``manage.py restore_clinic`` does, also for
a bare payload given with ``--file``), read it with :func:`read_json_payload`, or with any
JSON tool (see ``docs/archive-format.md``)::

    [
    {"model": "dental.dentist", "pk": 1, "fields": {"first_name": "José", ...}},
    {"model": "dental.treatment_materials", "pk": 7, "fields": {"treatment": 3, "inventoryitem": 2}}
    ]

* ``fields`` holds every concrete column but the primary key, by field name; a foreign key
  is its raw id under the field's name, as Django's serializer writes it. Many-to-many
  fields are not nested: auto-created through models are models of their own
  (``dental.treatment_materials``), so through-table ids survive a restore.
* Values are exact: datetimes and times in ISO 8601 with all six microsecond digits (and
  the offset), dates in ISO, decimals as strings with PostgreSQL's own digits (``"80.50"``),
  UUIDs and IP addresses as strings, durations as Django's ``duration_string``, binary
  data as base64, file fields as the stored name, text as real UTF-8, JSON fields as native
  JSON (PostgreSQL's ``jsonb`` text embedded as is: numbers keep every digit). SQL NULL is
  ``null``.
* A JSON field holding JSON ``null`` (not SQL NULL) is ``null`` in ``fields`` *and* is
  named in an extra key of its record, ``"json_nulls": ["field", ...]``. Django's
  fixtures have no way to express JSON null (its deserializer ignores the extra key and
  turns ``null`` into SQL NULL). :func:`read_json_payload` gives such values as
  :data:`JSON_NULL` and :func:`load_json_payload` stores JSON ``null``.

Rows are read with a server-side cursor and written in bounded chunks; a restore parses
the stream line by line and loads each table with PostgreSQL ``COPY``, in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, BinaryIO

import psycopg
from django.apps import AppConfig, apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.dateparse import parse_duration
from django.utils.duration import duration_string
from django.utils.translation import gettext as _

from backups.conf import conf

__all__ = [
    "JSON_NULL",
    "JsonPayloadError",
    "load_json_payload",
    "payload_models",
    "read_json_payload",
    "write_json_payload",
]

FETCH_ROWS = 1000  # rows per round trip of the server-side cursor
WRITE_BUFFER_CHARS = 256 * 1024  # text gathered before one write to the output
READ_CHUNK_BYTES = 256 * 1024  # bytes read from the input at a time
JSON_NULLS_KEY = "json_nulls"


class JsonPayloadError(Exception):
    """A json payload cannot be written, read or restored; the message is meant for a clinic admin."""

    code = "json_payload"  # backups.exceptions renders it, with this text as the detail


class _JsonNull:
    """The type of :data:`JSON_NULL` (a singleton)."""

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL = _JsonNull()
"""A JSON field's value that is JSON ``null`` (SQL NULL is ``None``)."""


# --- Which models, in which order -------------------------------------------------------


def _app_config(name: str) -> AppConfig:
    """The app config for an entry of the app settings: module path, label or AppConfig path."""
    for config in apps.get_app_configs():
        if name in (config.name, config.label, f"{type(config).__module__}.{type(config).__qualname__}"):
            return config
    raise ImproperlyConfigured(f"BACKUPS_JSON_APPS: {name!r} is not an installed app.")


def _dependency_order(candidates: list[type[Model]]) -> list[type[Model]]:
    """Stable topological sort over foreign keys: each model after the models it points to.

    A cycle (none expected) is broken in the original order: restores check foreign keys
    at the end anyway, so the order is a courtesy to human readers and other tools.
    """
    members = set(candidates)
    needs = {
        model: {
            f.related_model
            for f in model._meta.local_concrete_fields
            if f.is_relation and f.related_model in members and f.related_model is not model
        }
        for model in candidates
    }
    ordered: list[type[Model]] = []
    remaining = list(candidates)
    while remaining:
        ready = next((m for m in remaining if needs[m].issubset(ordered)), remaining[0])
        remaining.remove(ready)
        ordered.append(ready)
    return ordered


def payload_models() -> list[type[models.Model]]:
    """Concrete models of the payload apps, M2M through models included, parents first.

    The apps are ``settings.BACKUPS_JSON_APPS`` or, by default, the tenant apps that are
    not shared apps: the clinic's own records, not its users or sessions. Proxy, unmanaged
    and swapped models are left out.
    """
    names = conf.json_apps
    if names is None:
        shared = set(settings.SHARED_APPS)
        names = [app for app in settings.TENANT_APPS if app not in shared]
    candidates = [
        model
        for name in names
        for model in _app_config(name).get_models(include_auto_created=True)
        if not (model._meta.proxy or not model._meta.managed or model._meta.swapped)
    ]
    return _dependency_order(candidates)


# --- Columns ---------------------------------------------------------------------------

_KIND_BY_INTERNAL_TYPE = {
    **dict.fromkeys(
        [
            "AutoField",
            "BigAutoField",
            "SmallAutoField",
            "IntegerField",
            "BigIntegerField",
            "SmallIntegerField",
            "PositiveIntegerField",
            "PositiveBigIntegerField",
            "PositiveSmallIntegerField",
        ],
        "int",
    ),
    **dict.fromkeys(["CharField", "TextField", "SlugField", "FileField", "FilePathField"], "text"),
    "BooleanField": "bool",
    "DecimalField": "decimal",
    "UUIDField": "uuid",
    "GenericIPAddressField": "inet",
    "IPAddressField": "inet",
    "DateField": "date",
    "TimeField": "time",
    "DateTimeField": "datetime",
    "DurationField": "duration",
    "BinaryField": "binary",
    "JSONField": "json",
    "FloatField": "float",
}
_SELECTED_AS_TEXT = {"decimal", "uuid", "inet", "json"}  # PostgreSQL's own exact spelling
_AUTO_TYPES = {"AutoField", "BigAutoField", "SmallAutoField"}


@dataclass(frozen=True)
class _Column:
    name: str  # the field's name: its key in "fields"
    column: str
    kind: str
    field: models.Field


@dataclass(frozen=True)
class PayloadTable:
    label: str
    db_table: str
    columns: tuple[_Column, ...]  # the primary key first

    @property
    def fields(self) -> tuple[_Column, ...]:
        return self.columns[1:]


def _kind(model: type[Model], field: models.Field) -> str:
    target = field
    while target.is_relation:
        target = target.target_field
    kind = _KIND_BY_INTERNAL_TYPE.get(target.get_internal_type())
    if kind is None:
        raise JsonPayloadError(
            _("%(field)s: fields of type %(type)s cannot be kept in the json backup format.")
            % {"field": f"{model._meta.label_lower}.{field.name}", "type": target.get_internal_type()}
        )
    return kind


@functools.cache
def payload_table(model: type[Model]) -> PayloadTable:
    pk = model._meta.pk
    fields = [f for f in model._meta.local_concrete_fields if f is not pk and not getattr(f, "generated", False)]
    return PayloadTable(
        label=model._meta.label_lower,
        db_table=model._meta.db_table,
        columns=tuple(_Column(f.name, f.column, _kind(model, f), f) for f in [pk, *fields]),
    )


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _current_schema(cursor) -> str:
    cursor.execute("SELECT current_schema()")
    return cursor.fetchone()[0]


# --- Writing ---------------------------------------------------------------------------


def _quoted(text: str) -> str:
    return f'"{text}"'


def _float_json(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return _quoted("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))


def _jsonb_text(text: str) -> str:
    # jsonb's text form is valid one-line JSON; anything else is parsed and written again.
    if "\n" in text or "\r" in text:
        return json_text(_DECODER.decode(text))
    return text


_ENCODERS: dict[str, Callable[[Any], str]] = {
    "int": str,
    "bool": {True: "true", False: "false"}.__getitem__,
    "text": encode_basestring,
    "decimal": encode_basestring,
    "uuid": encode_basestring,
    "inet": encode_basestring,
    "date": lambda v: _quoted(v.isoformat()),
    "time": lambda v: _quoted(v.isoformat(timespec="microseconds")),
    "datetime": lambda v: _quoted(v.isoformat(timespec="microseconds")),
    "duration": lambda v: _quoted(duration_string(v)),
    "binary": lambda v: _quoted(base64.b64encode(v).decode("ascii")),
    "json": _jsonb_text,
    "float": _float_json,
}


def payload_line_maker(table: PayloadTable) -> Callable[[tuple], str]:
    """A function turning one fetched row into its line of JSON."""
    template = (
        '{"model": ' + encode_basestring(table.label) + ', "pk": %s, "fields": {'
        + ", ".join(encode_basestring(c.name) + ": %s" for c in table.fields)
        + "}}"
    )  # fmt: skip
    encoders = [_ENCODERS[c.kind] for c in table.columns]
    json_columns = [(i, c.name) for i, c in enumerate(table.columns) if c.kind == "json"]

    def line(row: tuple) -> str:
        text = template % tuple(["null" if v is None else enc(v) for enc, v in zip(encoders, row, strict=True)])
        if json_columns:
            nulls = [name for i, name in json_columns if row[i] == "null"]
            if nulls:
                text = f"{text[:-1]}, {encode_basestring(JSON_NULLS_KEY)}: {json.dumps(nulls)}}}"
        return text

    return line


def write_json_payload(out: BinaryIO, *, models: Sequence[type[Model]] | None = None) -> dict[str, int]:
    """Stream every row of ``models`` (default :func:`payload_models`) into ``out``; return {db_table: rows}.

    Reads through the current connection, schema and transaction: the caller enters the
    clinic's schema and a REPEATABLE READ transaction, so that the tables agree. Memory
    stays bounded: rows come from a server-side cursor, text goes out in chunks.
    """
    tables = [payload_table(model) for model in (payload_models() if models is None else models)]
    with connection.cursor() as cursor:
        schema = _qn(_current_schema(cursor))
    buffer: list[str] = ["["]
    buffered = 0
    separator = "\n"
    counts: dict[str, int] = {}
    for table in tables:
        line = payload_line_maker(table)
        selected = ", ".join(_qn(c.column) + ("::text" if c.kind in _SELECTED_AS_TEXT else "") for c in table.columns)
        order = _qn(table.columns[0].column)
        query = f"SELECT {selected} FROM {schema}.{_qn(table.db_table)} ORDER BY {order}"  # noqa: S608
        counts[table.db_table] = 0
        with connection.chunked_cursor() as cursor:
            cursor.execute(query)
            while rows := cursor.fetchmany(FETCH_ROWS):
                for row in rows:
                    text = line(row)
                    buffer += (separator, text)
                    buffered += len(text)
                    separator = ",\n"
                    if buffered >= WRITE_BUFFER_CHARS:
                        out.write("".join(buffer).encode("utf-8"))
                        buffer, buffered = [], 0
                counts[table.db_table] += len(rows)
    buffer.append("\n]\n")
    out.write("".join(buffer).encode("utf-8"))
    return counts


# --- Reading ---------------------------------------------------------------------------

_DECODER = json.JSONDecoder(parse_float=Decimal)
_RECORD_KEYS = frozenset({"model", "pk", "fields", JSON_NULLS_KEY})
_JSON_WHITESPACE = " \t\r\n"


def _too_long(line: int, limit: int) -> JsonPayloadError:
    return JsonPayloadError(
        _("Line %(line)d of the backup is longer than %(limit)d bytes.") % {"line": line, "limit": limit}
    )


def _truncated() -> JsonPayloadError:
    return JsonPayloadError(_("The backup's data ends too early: the file is incomplete (truncated or damaged)."))


def _lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, line without its newline, whether a newline ended it)."""
    pending: list[bytes] = []  # the start of a line that continues in the next chunk
    pending_size = 0
    number = 0
    while chunk := stream.read(READ_CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if pending:
                pending.append(chunk[start:end])
                line, pending, pending_size = b"".join(pending), [], 0
            else:
                line = chunk[start:end]
            if len(line) > max_line_bytes:
                raise _too_long(number, max_line_bytes)
            yield number, line, True
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
            pending_size += len(chunk) - start
            if pending_size > max_line_bytes:
                raise _too_long(number + 1, max_line_bytes)
    if pending:
        yield number + 1, b"".join(pending), False


def _record(number: int, text: str, complete: bool) -> tuple[str, Any, dict]:
    try:
        obj, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError(f"extra data at column {end + 1}")
    except (ValueError, RecursionError) as exc:
        if not complete:
            raise _truncated() from exc
        error = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise JsonPayloadError(
            _("Line %(line)d of the backup is not valid JSON: %(error)s.") % {"line": number, "error": error}
        ) from exc
    if not (
        obj.__class__ is dict
        and obj.keys() <= _RECORD_KEYS
        and "pk" in obj
        and isinstance(obj.get("model"), str)
        and isinstance(obj.get("fields"), dict)
    ):
        raise JsonPayloadError(
            _('Line %(line)d of the backup is not a record {"model": ..., "pk": ..., "fields": {...}}.')
            % {"line": number}
        )
    fields = obj["fields"]
    if JSON_NULLS_KEY in obj:
        nulls = obj[JSON_NULLS_KEY]
        if not isinstance(nulls, list) or any(not isinstance(n, str) or fields.get(n, 0) is not None for n in nulls):
            raise JsonPayloadError(
                _("Line %(line)d of the backup has an invalid “%(key)s” list.")
                % {"line": number, "key": JSON_NULLS_KEY}
            )
        for name in nulls:
            fields[name] = JSON_NULL
    return obj["model"], obj["pk"], fields


def read_json_payload(stream: BinaryIO, *, max_line_bytes: int = 64 << 20) -> Iterator[tuple[str, Any, dict]]:
    """Parse a payload from a binary stream, line by line; yield (model label, pk, fields).

    Values are as written (datetimes, decimals, UUIDs... as strings); JSON numbers with a
    fraction or exponent come as :class:`~decimal.Decimal` so that no digit is lost, and a
    JSON field's JSON null as :data:`JSON_NULL`. Raises :class:`JsonPayloadError` for text
    that is not UTF-8 or not JSON, anything but an array with one record per line, a
    truncated file, or a line longer than ``max_line_bytes``.
    """
    state = "start"  # start -> records (after "[" or a comma) <-> after_record -> end
    for number, raw, complete in _lines(stream, max_line_bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not complete and state != "start":
                raise _truncated() from exc
            raise JsonPayloadError(_("Line %(line)d of the backup is not UTF-8 text.") % {"line": number}) from exc
        text = text.strip(_JSON_WHITESPACE)
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text:
            continue
        if state in ("records", "first_record"):
            if text == "]":
                if state == "records":
                    raise JsonPayloadError(
                        _("Line %(line)d: a record was expected after the comma.") % {"line": number}
                    )
                state = "end"
            elif text[-1] == ",":
                yield _record(number, text[:-1], complete)
                state = "records"
            else:
                yield _record(number, text, complete)
                state = "after_record"
        elif state == "start":
            if text.startswith("{"):
                raise JsonPayloadError(_("The backup's data is a single JSON object, not a list of records."))
            if text not in ("[", "[]"):
                raise JsonPayloadError(_("The backup's data does not start with a list of records (“[”)."))
            state = "end" if text == "[]" else "first_record"
        elif state == "after_record" and text != "]":
            raise JsonPayloadError(
                _("Line %(line)d: records must be separated by commas (the record before has none).") % {"line": number}
            )
        elif state == "after_record":
            state = "end"
        else:
            raise JsonPayloadError(_("Line %(line)d: unexpected data after the end of the records.") % {"line": number})
    if state == "start":
        raise JsonPayloadError(_("The backup's data is empty."))
    if state != "end":
        raise _truncated()


# --- Restoring -------------------------------------------------------------------------


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


# Django's duration_string: PostgreSQL reads it as days plus a time, exactly as the text
# psycopg writes for the same timedelta (unless IntervalStyle is sql_standard).
_CANONICAL_DURATION = re.compile(r"(?:-?\d{1,9} )?(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{6})?")


def _converters() -> dict[str, Callable[[Any], Any]]:
    """Per column kind, a function checking a payload value and giving what COPY receives.

    COPY receives either a Python object, adapted by psycopg exactly as for Django's own
    queries, or text that PostgreSQL parses and checks itself (numbers, UUIDs, addresses).
    """
    use_tz = settings.USE_TZ
    default_tz = timezone.get_default_timezone()
    fast_durations = connection.connection.info.parameter_status("IntervalStyle") != "sql_standard"

    def to_datetime(value: Any) -> datetime:
        result = datetime.fromisoformat(_text(value))
        if use_tz and result.tzinfo is None:
            return timezone.make_aware(result, default_tz)  # as loaddata does
        if not use_tz and result.tzinfo is not None:
            return timezone.make_naive(result, default_tz)
        return result

    def to_duration(value: Any) -> Any:
        if fast_durations and _CANONICAL_DURATION.fullmatch(_text(value)):
            return value
        result = parse_duration(_text(value))
        if result is None:
            raise _BadValue("not a duration")
        return result

    return {
        "int": _integer,
        "bool": _boolean,
        "text": _text,
        "decimal": _decimal,
        "uuid": _text,
        "inet": _text,
        "date": lambda v: date.fromisoformat(_text(v)),
        "time": _time,
        "datetime": to_datetime,
        "duration": to_duration,
        "binary": _binary,
        "json": _json,
        "float": _float,
    }


class _TableLoader:
    """Checks the records of one table and turns them into COPY rows."""

    def __init__(self, table: PayloadTable, schema: str, converters: dict[str, Callable[[Any], Any]]) -> None:
        self.table = table
        self.copy_sql = (
            f"COPY {_qn(schema)}.{_qn(table.db_table)} ({', '.join(_qn(c.column) for c in table.columns)}) FROM STDIN"
        )
        self.pk = table.columns[0]
        self.pk_converter = converters[self.pk.kind]
        self.converters = [(c.name, converters[c.kind]) for c in table.fields]
        self.names = {c.name for c in table.fields}

    def row(self, pk: Any, fields: dict) -> list[Any]:
        if pk is None:
            raise self._error(pk, None, _("a record without a primary key cannot be restored"))
        if fields.keys() != self.names:
            return self._row_with_defaults(pk, fields)
        name = self.pk.name
        try:
            row = [self.pk_converter(pk)]
            for name, converter in self.converters:  # noqa: B007 (after an error, name is the culprit)
                value = fields[name]
                row.append(None if value is None else converter(value))
        except (ValueError, TypeError, OverflowError) as exc:
            raise self._error(pk, name, exc) from exc
        return row

    def _row_with_defaults(self, pk: Any, fields: dict) -> list[Any]:
        """A record with fields missing: they get their model default, as with loaddata."""
        if unknown := fields.keys() - self.names:
            raise self._error(pk, None, _("unknown fields: %(fields)s") % {"fields": ", ".join(sorted(unknown))})
        present = dict(fields)
        defaults = {}
        for column in self.table.fields:
            if column.name not in fields:
                present[column.name] = None
                default = column.field.get_default()
                if default is None and not column.field.null:
                    raise self._error(pk, column.name, _("the field is missing"))
                defaults[column.name] = column.field.get_db_prep_save(default, connection)
        row = self.row(pk, present)
        for position, column in enumerate(self.table.fields, start=1):
            if column.name in defaults:
                row[position] = defaults[column.name]
        return row

    def _error(self, pk: Any, name: str | None, reason: Any) -> JsonPayloadError:
        where = f"{self.table.label} pk={pk!r}" + (f", field “{name}”" if name else "")
        return JsonPayloadError(
            _("The backup has an invalid record (%(where)s): %(reason)s.") % {"where": where, "reason": reason}
        )


def _refused_model(label: str, app_labels: set[str]) -> JsonPayloadError:
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return JsonPayloadError(_("The backup holds records of an unknown model “%(model)s”.") % {"model": label})
    return JsonPayloadError(
        _("The backup holds records of “%(model)s”: a json restore replaces only the clinic's records (%(apps)s).")
        % {"model": label, "apps": ", ".join(sorted(app_labels))}
    )


def _database_refusal(exc: BaseException) -> JsonPayloadError:
    """A readable message from a PostgreSQL error (a constraint violated, a value refused...)."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    diag = getattr(cause, "diag", None)
    reason = getattr(diag, "message_primary", None) or str(exc).split("\n", 1)[0]
    if detail := getattr(diag, "message_detail", None):
        reason += f" ({detail})"
    if context := getattr(diag, "context", None):
        reason += f" [{context.splitlines()[0]}]"
    return JsonPayloadError(_("The database refused the backup's data: %(reason)s.") % {"reason": reason})


def load_json_payload(
    stream: BinaryIO,
    *,
    expected_counts: dict[str, int] | None = None,
    models: Sequence[type[Model]] | None = None,
) -> dict[str, int]:
    """Replace the current schema's rows of ``models`` (default :func:`payload_models`) with a payload.

    One transaction (a savepoint inside the caller's): the payload tables are emptied
    (TRUNCATE of those tables only), every record is checked and loaded with COPY, foreign
    keys are checked, the tables' sequences are set to their largest id, and the row counts
    are compared with ``expected_counts`` ({db_table: rows}) if given. Any problem raises
    :class:`JsonPayloadError` and changes nothing. Returns {db_table: rows loaded}.
    """
    from django_tenants.utils import get_public_schema_name

    chosen = payload_models() if models is None else list(models)
    tables = [payload_table(model) for model in chosen]
    counts = {table.db_table: 0 for table in tables}
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            schema = _current_schema(cursor)
            if schema in (None, get_public_schema_name()):
                raise JsonPayloadError(_("A json backup is restored into a clinic's schema, never the public one."))
            converters = _converters()
            loaders = {table.label: _TableLoader(table, schema, converters) for table in tables}
            # Checks still deferred in this transaction would make TRUNCATE fail: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            if tables:
                cursor.execute("TRUNCATE " + ", ".join(f"{_qn(schema)}.{_qn(t.db_table)}" for t in tables))
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # rows may come in any order
            for label, records in itertools.groupby(read_json_payload(stream), key=lambda record: record[0]):
                loader = loaders.get(label) or loaders.get(label.lower())
                if loader is None:
                    raise _refused_model(label, {model._meta.app_label for model in chosen})
                loaded = 0
                with cursor.copy(loader.copy_sql) as copy:
                    for _label, pk, fields in records:
                        copy.write_row(loader.row(pk, fields))
                        loaded += 1
                counts[loader.table.db_table] += loaded
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # foreign keys are checked here
            for table in tables:
                _reset_sequences(cursor, schema, table)
            if expected_counts is not None:
                _check_counts(counts, expected_counts)
    except (psycopg.Error, DatabaseError) as exc:
        raise _nothing_restored(_database_refusal(exc)) from exc
    except JsonPayloadError as exc:
        raise _nothing_restored(exc) from exc
    return counts


def _nothing_restored(reason: JsonPayloadError) -> JsonPayloadError:
    text = str(reason)
    return JsonPayloadError(
        _("%(reason)s Nothing was restored.") % {"reason": text if text.endswith(".") else text + "."}
    )


def _reset_sequences(cursor, schema: str, table: PayloadTable) -> None:
    qualified = f"{_qn(schema)}.{_qn(table.db_table)}"
    for column in table.columns:
        if column.field.get_internal_type() in _AUTO_TYPES:
            name = _qn(column.column)
            last = f"COALESCE(MAX({name}), 1), MAX({name}) IS NOT NULL"
            query = f"SELECT setval(pg_get_serial_sequence(%s, %s), {last}) FROM {qualified}"  # noqa: S608
            cursor.execute(query, [qualified, column.column])


def _check_counts(counts: dict[str, int], expected: dict[str, int]) -> None:
    wrong = [
        f"{name}: {counts.get(name, 0)} instead of {expected.get(name, 0)}"
        for name in sorted(counts.keys() | expected.keys())
        if counts.get(name, 0) != expected.get(name, 0)
    ]
    if wrong:
        raise JsonPayloadError(
            _("The restored row counts differ from the backup's manifest (%(tables)s).") % {"tables": "; ".join(wrong)}
        )
