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

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, BinaryIO

from django.conf import settings
from django.db import connection, models
from django.db.models import Model

from backups.conf import app_config, conf
from backups.formats.json.kinds import JSON_DECODER, JSON_NULL, KINDS
from backups.messages import render

__all__ = [
    "JSON_NULL",
    "JsonPayloadError",
    "payload_models",
    "read_json_payload",
    "write_json_payload",
]

FETCH_ROWS = 1000  # rows per round trip of the server-side cursor
FETCH_LINES = 250  # lines built by PostgreSQL per round trip (written at once: memory stays flat)
WRITE_BUFFER_CHARS = 256 * 1024  # text gathered before one write to the output
READ_CHUNK_BYTES = 256 * 1024  # bytes read from the input at a time
JSON_NULLS_KEY = "json_nulls"


class JsonPayloadError(Exception):
    """A json payload cannot be written, read or restored; the message is meant for a clinic admin.

    It holds a message id of ``backups.messages.formats`` and its parameters, rendered in the
    reader's language when shown (``str()``); a service turns it into the RespaldoError
    "json_payload" with this message as its detail.
    """

    code = "json_payload"

    def __init__(self, message_id: str, /, **params: Any) -> None:
        super().__init__(message_id)
        self.message_id = message_id
        self.params = params

    def __str__(self) -> str:
        return render(self.message_id, self.params)

    @property
    def record(self) -> dict[str, Any]:
        """The message as a parameter of another one (rendered when shown)."""
        return {"message_id": self.message_id, "params": self.params}


# --- Which models, in which order -------------------------------------------------------


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
        for model in app_config(name, setting="BACKUPS_JSON_APPS").get_models(include_auto_created=True)
        if not (model._meta.proxy or not model._meta.managed or model._meta.swapped)
    ]
    return _dependency_order(candidates)


# --- Columns ---------------------------------------------------------------------------

# Django's internal type -> its column kind (see ``kinds.KINDS``).
_KIND_BY_INTERNAL_TYPE = {internal_type: name for name, kind in KINDS.items() for internal_type in kind.internal_types}
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
            "json.field_type", field=f"{model._meta.label_lower}.{field.name}", type=target.get_internal_type()
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


def payload_line_maker(table: PayloadTable) -> Callable[[tuple], str]:
    """A function turning one fetched row into its line of JSON."""
    template = (
        '{"model": ' + encode_basestring(table.label) + ', "pk": %s, "fields": {'
        + ", ".join(encode_basestring(c.name) + ": %s" for c in table.fields)
        + "}}"
    )  # fmt: skip
    encoders = [KINDS[c.kind].encode for c in table.columns]
    json_columns = [(i, c.name) for i, c in enumerate(table.columns) if c.kind == "json"]

    def line(row: tuple) -> str:
        text = template % tuple(["null" if v is None else enc(v) for enc, v in zip(encoders, row, strict=True)])
        if json_columns:
            nulls = [name for i, name in json_columns if row[i] == "null"]
            if nulls:
                text = f"{text[:-1]}, {encode_basestring(JSON_NULLS_KEY)}: {json.dumps(nulls)}}}"
        return text

    return line


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def payload_line_sql(table: PayloadTable) -> str | None:
    """A SQL expression giving each row's payload line exactly as :func:`payload_line_maker` does.

    Built from each column kind's ``sql`` spelling, so that PostgreSQL writes the lines and
    Python only passes them on (the json backup's cost was Python encoding each value). None
    when a column's kind has no SQL spelling (floats), or when datetimes would not come out
    as the writer's connection gives them (only UTC with USE_TZ is spelled in SQL): then the
    table is written value by value in Python.
    """
    kinds = [KINDS[c.kind] for c in table.columns]
    if any(kind.sql is None for kind in kinds):
        return None
    if any(c.kind == "datetime" for c in table.columns) and not (settings.USE_TZ and connection.timezone_name == "UTC"):
        return None

    def value(column: _Column) -> str:
        quoted = _qn(column.column)
        return f"CASE WHEN {quoted} IS NULL THEN 'null' ELSE {KINDS[column.kind].sql(quoted)} END"

    pk, fields = table.columns[0], table.fields
    parts = [_sql_literal('{"model": ' + encode_basestring(table.label) + ', "pk": '), value(pk)]
    for number, column in enumerate(fields):
        parts.append(_sql_literal((", " if number else ', "fields": {') + encode_basestring(column.name) + ": "))
        parts.append(value(column))
    parts.append(_sql_literal("}" if fields else ', "fields": {}'))
    json_columns = [c for c in fields if c.kind == "json"]
    if json_columns:  # the record's "json_nulls" key, as the Python writer adds it
        flags = ", ".join(
            f"CASE WHEN {_qn(c.column)} = 'null'::jsonb THEN {_sql_literal(json.dumps(c.name)[1:-1])} END"
            for c in json_columns
        )
        key = _sql_literal(", " + encode_basestring(JSON_NULLS_KEY) + ': ["')
        parts.append(f"""coalesce({key} || nullif(concat_ws('", "', {flags}), '') || '"]', '')""")
    parts.append("'}'")
    return " || ".join(parts)


def write_json_payload(
    out: BinaryIO, *, models: Sequence[type[Model]] | None = None, lines_in_sql: bool = True
) -> dict[str, int]:
    """Stream every row of ``models`` (default :func:`payload_models`) into ``out``; return {db_table: rows}.

    Reads through the current connection, schema and transaction: the caller enters the
    clinic's schema and a REPEATABLE READ transaction, so that the tables agree. Memory
    stays bounded: rows come from a server-side cursor, text goes out in chunks. Each line is
    built by PostgreSQL (:func:`payload_line_sql`) where it can be; ``lines_in_sql=False``
    encodes every value in Python instead (the reference the SQL spelling is tested against).
    """
    tables = [payload_table(model) for model in (payload_models() if models is None else models)]
    with connection.cursor() as cursor:
        schema = _qn(_current_schema(cursor))
    buffer: list[str] = ["["]
    buffered = 0
    separator = "\n"
    counts: dict[str, int] = {}
    for table in tables:
        line_sql = payload_line_sql(table) if lines_in_sql else None
        if line_sql is not None:
            selected = line_sql
        else:
            selected = ", ".join(
                _qn(c.column) + ("::text" if KINDS[c.kind].selected_as_text else "") for c in table.columns
            )
            line = payload_line_maker(table)
        order = _qn(table.columns[0].column)
        query = f"SELECT {selected} FROM {schema}.{_qn(table.db_table)} ORDER BY {order}"  # noqa: S608
        counts[table.db_table] = 0
        with connection.chunked_cursor() as cursor:
            cursor.execute(query)
            while rows := cursor.fetchmany(FETCH_ROWS if line_sql is None else FETCH_LINES):
                if line_sql is not None:  # the lines as PostgreSQL wrote them: joined, not looked at
                    buffer += (separator, ",\n".join([row[0] for row in rows]))
                    out.write("".join(buffer).encode("utf-8"))
                    buffer, buffered, separator = [], 0, ",\n"
                else:
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

_RECORD_KEYS = frozenset({"model", "pk", "fields", JSON_NULLS_KEY})
_JSON_WHITESPACE = " \t\r\n"


def _too_long(line: int, limit: int) -> JsonPayloadError:
    return JsonPayloadError("json.line_too_long", line=line, limit=limit)


def _truncated() -> JsonPayloadError:
    return JsonPayloadError("json.truncated")


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
        obj, end = JSON_DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError(f"extra data at column {end + 1}")
    except (ValueError, RecursionError) as exc:
        if not complete:
            raise _truncated() from exc
        error = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise JsonPayloadError("json.line_not_json", line=number, error=error) from exc
    if not (
        obj.__class__ is dict
        and obj.keys() <= _RECORD_KEYS
        and "pk" in obj
        and isinstance(obj.get("model"), str)
        and isinstance(obj.get("fields"), dict)
    ):
        raise JsonPayloadError("json.line_not_record", line=number)
    fields = obj["fields"]
    if JSON_NULLS_KEY in obj:
        nulls = obj[JSON_NULLS_KEY]
        if not isinstance(nulls, list) or any(not isinstance(n, str) or fields.get(n, 0) is not None for n in nulls):
            raise JsonPayloadError("json.line_bad_list", line=number, key=JSON_NULLS_KEY)
        for name in nulls:
            fields[name] = JSON_NULL
    return obj["model"], obj["pk"], fields


def _record_line(state: str, number: int, text: str, complete: bool) -> tuple[str, tuple | None]:
    """A line where a record (or the closing "]") is expected: the next state and the record, if any."""
    if text == "]":
        if state == "records":
            raise JsonPayloadError("json.record_after_comma", line=number)
        return "end", None
    if text[-1] == ",":
        return "records", _record(number, text[:-1], complete)
    return "after_record", _record(number, text, complete)


def _frame_line(state: str, number: int, text: str) -> str:
    """A line before the first record or after the last one: the next state."""
    if state == "start":
        if text.startswith("{"):
            raise JsonPayloadError("json.single_object")
        if text not in ("[", "[]"):
            raise JsonPayloadError("json.not_a_list")
        return "end" if text == "[]" else "first_record"
    if state == "after_record" and text != "]":
        raise JsonPayloadError("json.missing_comma", line=number)
    if state == "after_record":
        return "end"
    raise JsonPayloadError("json.data_after_end", line=number)


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
            raise JsonPayloadError("json.line_not_utf8", line=number) from exc
        text = text.strip(_JSON_WHITESPACE)
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text:
            continue
        if state in ("records", "first_record"):
            state, record = _record_line(state, number, text, complete)
            if record is not None:
                yield record
        else:
            state = _frame_line(state, number, text)
    if state == "start":
        raise JsonPayloadError("json.empty")
    if state != "end":
        raise _truncated()
