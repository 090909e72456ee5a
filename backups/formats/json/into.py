"""A json payload restored into a NEW schema, through Django's connection, in the caller's transaction.

The scratch tables are created by Django's schema editor from the code's models (the payload
apps only: :func:`backups.formats.json.payload.payload_models`), then
:func:`backups.formats.json.load.load_json_payload` fills them in ``schema_context(schema)``.
Why not ``CREATE TABLE ... LIKE`` nor the tenant migrations: ``docs/decisions/restore-into.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from django.db import connection
from django.db.models import Model

from backups.formats.base import DEFAULT_LOCK_TIMEOUT_MS, RestoreIntoError, quote_ident
from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import payload_models
from backups.formats.scratch import (
    check_isolated,
    check_name,
    check_row_counts,
    check_untouched,
    fetchall,
    put_back,
    refuse_existing,
    schema_oid,
    session_settings,
)


def _check_self_contained(chosen: Sequence[type[Model]]) -> None:
    """Every foreign key and many-to-many table of the payload models stays among them."""
    members = set(chosen)
    for model in chosen:
        for f in model._meta.local_concrete_fields:
            if f.is_relation and f.related_model not in members:
                raise RestoreIntoError(
                    f"{model._meta.label}.{f.name} points to {f.related_model._meta.label}, which a json payload "
                    "does not hold: it cannot be restored into a schema of its own"
                )
        for f in model._meta.local_many_to_many:
            if f.remote_field.through not in members:
                raise RestoreIntoError(f"{model._meta.label}.{f.name}: its table is not part of the json payload")


def restore_into_json(
    payload: IO[bytes],
    *,
    schema: str,
    expected_counts: dict[str, int],
    source_schema: str | None = None,
    models: Sequence[type[Model]] | None = None,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
) -> dict[str, int]:
    """Restore a json payload into the NEW schema ``schema``, through Django's connection.

    Must run inside the caller's ``transaction.atomic()`` (nothing is committed here). Creates
    the schema and the payload models' tables (Django's schema editor), loads the payload with
    :func:`load_json_payload` and checks the row counts against ``expected_counts``. Never
    reads, locks nor changes ``source_schema`` (checked, when given). Raises
    :class:`RestoreIntoError` or :class:`backups.formats.json.payload.JsonPayloadError`; the caller's
    transaction must then roll back. Returns {table: rows}.
    """
    from django_tenants.utils import schema_context

    check_name(schema, "The target schema")
    if source_schema is not None:
        check_name(source_schema, "The backup's schema")
        if schema == source_schema:
            raise RestoreIntoError("the target schema must be a new schema, not the backup's own")
    if not connection.in_atomic_block:
        raise RestoreIntoError("restore_into_json runs inside the caller's transaction.atomic()")
    chosen = payload_models() if models is None else list(models)
    _check_self_contained(chosen)
    with connection.cursor() as cursor:
        saved = session_settings(cursor)
        cursor.execute("SELECT set_config('lock_timeout', %(value)s, true)", {"value": f"{lock_timeout_ms}ms"})
        refuse_existing(cursor, schema)
        live_oid = schema_oid(cursor, source_schema) if source_schema else None
        cursor.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    with schema_context(schema):
        with connection.cursor() as cursor:  # tables must land in the new schema, nowhere else
            current = fetchall(cursor, "SELECT current_schema()")[0][0]
            if current != schema:
                raise RestoreIntoError(f"tables would be created in {current!r} instead of {schema!r}")
        with connection.schema_editor(atomic=True) as editor:
            for model in chosen:
                if not model._meta.auto_created:  # many-to-many tables come with their model
                    editor.create_model(model)
        load_json_payload(payload, expected_counts=expected_counts, models=chosen)
    with connection.cursor() as cursor:
        check_untouched(cursor, source_schema, live_oid)
        check_isolated(cursor, schema)
        counts = check_row_counts(cursor, schema, expected_counts, exact_tables=False)
        put_back(cursor, {"lock_timeout": saved["lock_timeout"]})
    return counts
