"""Loading a json payload into the current schema: checked, with COPY, in one transaction (see ``payload``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import psycopg
from django.apps import apps
from django.db import DatabaseError, connection, transaction
from django.db.models import Model

from backups.formats.json.kinds import KINDS, LoadContext
from backups.formats.json.payload import (
    _AUTO_TYPES,
    JsonPayloadError,
    PayloadTable,
    _current_schema,
    _qn,
    payload_models,
    payload_table,
    read_json_payload,
)

# --- Restoring -------------------------------------------------------------------------


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
            raise self._error(pk, None, {"message_id": "json.reason.no_pk", "params": {}})
        if fields.keys() != self.names:
            return self._row_with_defaults(pk, fields)
        name = self.pk.name
        try:
            row = [self.pk_converter(pk)]
            for name, converter in self.converters:  # noqa: B007 (after an error, name is the culprit)
                value = fields[name]
                row.append(None if value is None else converter(value))
        except (ValueError, TypeError, OverflowError) as exc:
            raise self._error(pk, name, str(exc)) from exc  # Python's own words, kept as they are
        return row

    def _row_with_defaults(self, pk: Any, fields: dict) -> list[Any]:
        """A record with fields missing: they get their model default, as with loaddata."""
        if unknown := fields.keys() - self.names:
            fields_list = ", ".join(sorted(unknown))
            raise self._error(pk, None, {"message_id": "json.reason.unknown_fields", "params": {"fields": fields_list}})
        present = dict(fields)
        defaults = {}
        for column in self.table.fields:
            if column.name not in fields:
                present[column.name] = None
                default = column.field.get_default()
                if default is None and not column.field.null:
                    raise self._error(pk, column.name, {"message_id": "json.reason.field_missing", "params": {}})
                defaults[column.name] = column.field.get_db_prep_save(default, connection)
        row = self.row(pk, present)
        for position, column in enumerate(self.table.fields, start=1):
            if column.name in defaults:
                row[position] = defaults[column.name]
        return row

    def _error(self, pk: Any, name: str | None, reason: str | dict) -> JsonPayloadError:
        """``reason``: a tool's own words, or a message record ``{"message_id": ..., "params": ...}``."""
        where = f"{self.table.label} pk={pk!r}" + (f", field “{name}”" if name else "")
        return JsonPayloadError("json.invalid_record", where=where, reason=reason)


def _refused_model(label: str, app_labels: set[str]) -> JsonPayloadError:
    try:
        apps.get_model(label)
    except (LookupError, ValueError):
        return JsonPayloadError("json.unknown_model", model=label)
    return JsonPayloadError("json.not_clinic_model", model=label, apps=", ".join(sorted(app_labels)))


def _database_refusal(exc: BaseException) -> JsonPayloadError:
    """A readable message from a PostgreSQL error (a constraint violated, a value refused...)."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    diag = getattr(cause, "diag", None)
    reason = getattr(diag, "message_primary", None) or str(exc).split("\n", 1)[0]
    if detail := getattr(diag, "message_detail", None):
        reason += f" ({detail})"
    if context := getattr(diag, "context", None):
        reason += f" [{context.splitlines()[0]}]"
    return JsonPayloadError("json.database_refused", reason=reason)


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
                raise JsonPayloadError("json.public_schema")
            context = LoadContext.current()
            converters = {name: kind.loader(context) for name, kind in KINDS.items()}
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
    # every sentence of backups.messages.formats ends with a full stop (checked by test_messages)
    return JsonPayloadError("json.nothing_restored", reason=reason.record)


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
        raise JsonPayloadError("json.row_counts", tables="; ".join(wrong))
