"""Restore a backup into a schema of its own (``clinica__drill_42``) without touching the live clinic.

Drills, clone-a-clinic, the preview of a selective restore and the normal pg restore itself
(restore into ``<clinic>__restoring``, then :func:`swap_schema`) all fill a NEW schema from
a backup, inside a transaction the caller owns, while the clinic the backup came from keeps
working. (The normal json restore loads in place: tables the schema editor makes have the
model's column order, not the one the clinic's migrations left.)

The problem: a ``pg_dump --schema=X`` payload recreates ``X`` by name (``CREATE SCHEMA x;``,
``CREATE TABLE x.t``, ``COPY x.t``, ``REFERENCES x.u``, ``setval('x.t_id_seq')``...) and
``pg_restore`` cannot rename it.

Decision: rewrite the schema name in pg_restore's plain script (``pg_rewrite``), token by token, as it
streams through :func:`backups.formats.pg_script.run_script`; COPY data is never rewritten.
Evidence (PostgreSQL 15.20 and 16.2, a schema with a 400,000-row table, serial and identity
columns, a CHECK, a varchar_pattern_ops index and a deferrable FK; another session with
``lock_timeout = 1s`` working on the live schema while the restoring transaction was open,
during the COPY of the big table, after the script, and just before COMMIT):

* (a) rename-in-transaction (``ALTER SCHEMA x RENAME TO hold``, restore the payload as
  ``x``, rename it to the scratch name, rename ``hold`` back, commit): SELECT, INSERT (with
  its FK check), UPDATE, DELETE, ``SELECT ... FOR UPDATE``, ``SET search_path TO x`` and a
  statement prepared before, ``'x.t'::regclass``, ``ALTER TABLE x.t ADD COLUMN`` and
  ``pg_dump --schema=x`` all kept working without waiting (0-15 ms), the other session saw
  only the live ``x`` (same oids, the renamed name is invisible to it), and after COMMIT the
  live tables were exactly as that session left them. BUT the live schema IS locked for the
  whole restore: ``ALTER SCHEMA ... RENAME`` updates the live ``pg_namespace`` row, so a
  second rename of ``x`` (the normal restore, another drill of the same clinic) and ``GRANT
  ... ON SCHEMA x`` failed on lock_timeout; and on 15.20 the rename also holds an
  AccessExclusiveLock on the schema object, so ``CREATE TABLE x.new`` (a migration) failed
  on lock_timeout too (16.2 does not take that lock). It locks the live clinic: rejected.
* (b) the rewrite: the same battery, including CREATE TABLE in ``x``, ``ALTER SCHEMA x RENAME``
  and ``GRANT ... ON SCHEMA x``, all 14 operations succeeded at every point on both servers
  (0-6 ms each; pg_dump of ``x`` 64 ms), pg_locks showed no lock of the restoring backend on
  ``x`` or any of its relations, no object of the new schema depended on ``x`` (defaults use
  the new sequences, the FK references the new table, ``setval`` set the new sequences), and
  after COMMIT the live tables were exactly as the other session left them. Any number of
  scratch restores of one clinic can run at once. Chosen. (The concurrency test in
  ``tests/test_restore_into.py`` fails on (a) with "lock timeout" on a CREATE TABLE in the
  live clinic, and passes on (b).)
* (c) a scratch database needs ``CREATE DATABASE`` (not inside a transaction) and a second
  trip to move the data into a schema of this database; ``pg_restore --use-list`` selects
  TOC entries but cannot rename them. Rejected.

How the rewrite stays exact. pg_dump (since the 2018 search_path fix) schema-qualifies every
reference and sets ``search_path`` to ``''``, so the schema name appears only as: the first
part of a dotted name (``x.t``, ``"X".t``, ``x.big.id``); the name after the keyword SCHEMA
(``CREATE SCHEMA x``); the qualifier inside a string literal cast to a reg* type
(``nextval('x.t_id_seq'::regclass)``) or given to ``setval``/``nextval``/``currval``. The SQL
text (never COPY data: ``run_script`` hands COPY rows to the COPY protocol apart) is split
into PostgreSQL tokens (strings, ``E''`` strings, dollar quotes, quoted identifiers,
comments), and only those tokens change. Everything else, including text data such as a
``DEFAULT 'x.t_id_seq'::text``, is left as is. What cannot be placed under another name
safely is refused before it runs: a ``CREATE SCHEMA`` of another name, a dollar-quoted body
or a ``search_path`` setting that names the schema, a sequence function on a sequence of
another schema (``setval`` is not undone by ROLLBACK), a COPY into a table of another schema,
``standard_conforming_strings = off``. The script's ``SET lock_timeout = 0`` becomes the
caller's timeout: nothing in a new, uncommitted schema can make the restore wait, so any
wait is a bug and fails instead of hanging. After the script, in the same transaction, three
checks: this backend holds no lock on the live schema or any of its relations (a reference
the rewrite missed locks what it names: even ``DEFAULT nextval('x.seq'::regclass)`` takes an
AccessShareLock on the live sequence, found by testing), no object of the new schema depends
on (or is depended on by) an object of another schema, and the new schema holds exactly the
manifest's tables and row counts. Any failure raises, and the caller's transaction rolls
everything back.

json payloads: the scratch tables are created by Django's schema editor from the code's
models (the payload apps only: :func:`backups.formats.json.payload.payload_models`), then
:func:`backups.formats.json.payload.load_json_payload` fills them in ``schema_context(schema)``.
Not ``CREATE TABLE ... (LIKE live.t INCLUDING ALL)``: LIKE takes an AccessShareLock on every
live table until commit (a migration or a restore of the live clinic would wait for the
drill), needs the live schema to exist (a clone of a deleted clinic), copies no foreign keys,
and copies ``nextval('live.seq')`` defaults that would advance the LIVE sequences. Not the
tenant migrations: they run every app's migrations (seconds), manage their own transactions
and would create users, sessions and admin tables the payload does not hold. The schema
editor makes the tables a freshly migrated clinic has (same columns, indexes, constraint
names, identity columns, foreign keys among the payload tables), so the loader checks
foreign keys as it does in a clinic.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any

import psycopg
from django.db import connection
from django.db.models import Model

from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import payload_models
from backups.formats.pg import run_pg_restore
from backups.formats.pg_rewrite import (  # noqa: F401 - RestoreIntoError, rewrite_schema: part of this API
    DEFAULT_LOCK_TIMEOUT_MS,
    RestoreIntoError,
    RewritingCursor,
    SchemaRewriter,
    quote_ident,
    rewrite_schema,
)
from backups.postgres import PgTools

__all__ = [
    "STAGING_SUFFIX",
    "RestoreIntoError",
    "restore_into_json",
    "restore_into_pg",
    "rewrite_schema",
    "swap_schema",
]

STAGING_SUFFIX = "__restoring"  # the normal restore fills <clinic>__restoring, then swaps

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED_SCHEMAS = {"public", "information_schema"}
_SYSTEM_SCHEMAS = ("pg_catalog", "pg_toast", "information_schema")
# Settings the plain script changes for the whole session; put back afterwards for the caller.
_SCRIPT_SETTINGS = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "search_path",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_tablespace",
    "default_table_access_method",
)


def _check_name(name: str, what: str) -> None:
    if not _SCHEMA_NAME.fullmatch(name or "") or name.startswith("pg_") or name in _RESERVED_SCHEMAS:
        raise RestoreIntoError(f"{what} {name!r} is not a clinic schema name (lowercase letters, digits, _).")


_OBJECTS_OF_SCHEMA = """
    SELECT 'pg_class'::regclass AS cls, oid FROM pg_class WHERE relnamespace = %(ns)s
    UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace = %(ns)s
    UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace = %(ns)s
    UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE connamespace = %(ns)s
    UNION ALL SELECT 'pg_attrdef'::regclass, a.oid FROM pg_attrdef a
        JOIN pg_class c ON c.oid = a.adrelid WHERE c.relnamespace = %(ns)s
    UNION ALL SELECT 'pg_trigger'::regclass, t.oid FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = %(ns)s
    UNION ALL SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r
        JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = %(ns)s
"""
_CROSS_SCHEMA_DEPENDENCIES = f"""
    WITH mine AS ({_OBJECTS_OF_SCHEMA}),
    edges AS (
        SELECT d.classid AS my_cls, d.objid AS my_oid, d.refclassid AS cls, d.refobjid AS oid
        FROM pg_catalog.pg_depend d JOIN mine m ON m.cls = d.classid AND m.oid = d.objid
        UNION
        SELECT d.refclassid, d.refobjid, d.classid, d.objid
        FROM pg_catalog.pg_depend d JOIN mine m ON m.cls = d.refclassid AND m.oid = d.refobjid
    ),
    other AS (
        SELECT e.my_cls, e.my_oid, e.cls, e.oid, COALESCE(
            (pg_identify_object(e.cls, e.oid, 0)).schema,
            CASE e.cls
                WHEN 'pg_attrdef'::regclass THEN (SELECT n.nspname::text FROM pg_attrdef a
                    JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE a.oid = e.oid)
                WHEN 'pg_trigger'::regclass THEN (SELECT n.nspname::text FROM pg_trigger t
                    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE t.oid = e.oid)
                WHEN 'pg_rewrite'::regclass THEN (SELECT n.nspname::text FROM pg_rewrite r
                    JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE r.oid = e.oid)
                WHEN 'pg_namespace'::regclass THEN (SELECT nspname::text FROM pg_namespace WHERE oid = e.oid)
            END) AS schema
        FROM edges e
    )
    SELECT DISTINCT (pg_identify_object(my_cls, my_oid, 0)).identity, (pg_identify_object(cls, oid, 0)).identity
    FROM other
    WHERE schema IS NOT NULL AND schema <> %(name)s AND schema NOT IN {_SYSTEM_SCHEMAS!r}
    ORDER BY 1, 2
    LIMIT 5
"""  # noqa: S608 (module constants only)
_LOCKS_ON_SCHEMA = """
    SELECT l.mode, COALESCE(c.relname, n.nspname)
    FROM pg_locks l
    LEFT JOIN pg_class c ON l.locktype = 'relation' AND c.oid = l.relation
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    LEFT JOIN pg_namespace n ON l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass AND n.oid = l.objid
    WHERE l.pid = pg_backend_pid() AND (c.relnamespace = %(ns)s OR n.oid = %(ns)s)
    ORDER BY 2
    LIMIT 5
"""


def _fetchall(cursor: Any, query: str, params: Any = None) -> list[tuple]:
    cursor.execute(query, params)
    return cursor.fetchall()


def _schema_oid(cursor: Any, name: str) -> int | None:
    rows = _fetchall(cursor, "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(name)s", {"name": name})
    return rows[0][0] if rows else None


def _check_untouched(cursor: Any, live: str | None, live_oid: int | None) -> None:
    """This backend holds no lock on the live schema or on any of its relations."""
    if live_oid is None:
        return
    held = _fetchall(cursor, _LOCKS_ON_SCHEMA, {"ns": live_oid})
    if held:
        shown = ", ".join(f"{mode} on {name}" for mode, name in held)
        raise RestoreIntoError(f"restoring into a new schema locked the live schema {live!r} ({shown}); rolled back")


def _check_isolated(cursor: Any, schema: str) -> None:
    """No object of ``schema`` depends on an object of another (non-system) schema, nor the reverse."""
    oid = _schema_oid(cursor, schema)
    if oid is None:
        raise RestoreIntoError(f"the backup did not create the schema {schema!r}; rolled back")
    links = _fetchall(cursor, _CROSS_SCHEMA_DEPENDENCIES, {"ns": oid, "name": schema})
    if links:
        shown = "; ".join(f"{mine} -> {other}" for mine, other in links)
        raise RestoreIntoError(f"the restored schema {schema!r} is linked to objects of other schemas ({shown})")


def _check_counts(
    cursor: Any, schema: str, expected: dict[str, int], *, exact_tables: bool, loaded: dict[str, int] | None = None
) -> dict[str, int]:
    """The new schema holds the expected rows (and, with ``exact_tables``, exactly the expected tables).

    ``loaded``: the rows each table received by COPY (a table without COPY received none), used
    instead of counting every table again.
    """
    found = [
        name
        for (name,) in _fetchall(
            cursor,
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(name)s AND c.relkind IN ('r', 'p') ORDER BY 1",
            {"name": schema},
        )
    ]
    if exact_tables and set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise RestoreIntoError(
            f"the restored schema has {len(found)} tables but the backup lists {len(expected)} "
            f"(missing: {', '.join(missing) or 'none'}; not listed: {', '.join(extra) or 'none'})"
        )
    counts = {}
    for table in found:
        if loaded is not None:
            counts[table] = loaded.get(table, 0)
            continue
        counts[table] = _fetchall(cursor, f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")[0][0]  # noqa: S608
    wrong = [
        f"{table}: {counts.get(table, 0)} instead of {expected.get(table, 0)}"
        for table in sorted(counts.keys() | expected.keys())
        if counts.get(table, 0) != expected.get(table, 0)
    ]
    if wrong:
        raise RestoreIntoError(f"the restored row counts differ from the backup's ({'; '.join(wrong)})")
    return counts


def _refuse_existing(cursor: Any, schema: str) -> None:
    if _schema_oid(cursor, schema) is not None:
        raise RestoreIntoError(f"the schema {schema!r} already exists; a backup is only restored into a new schema")


def _settings(cursor: Any) -> dict[str, str]:
    names = ", ".join(f"current_setting('{name}')" for name in _SCRIPT_SETTINGS)
    return dict(zip(_SCRIPT_SETTINGS, _fetchall(cursor, f"SELECT {names}")[0], strict=True))  # noqa: S608


def _put_back(cursor: Any, saved: dict[str, str]) -> None:
    for name, value in saved.items():
        cursor.execute("SELECT pg_catalog.set_config(%(name)s, %(value)s, false)", {"name": name, "value": value})


# --- pg payloads ------------------------------------------------------------------------


def restore_into_pg(
    payload: IO[bytes],
    *,
    source_schema: str,
    schema: str,
    expected_counts: dict[str, int],
    tools: PgTools,
    cursor: psycopg.Cursor,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    stderr: IO[bytes] | None = None,
    count_check: Callable[..., None] | None = None,
    app_name: str = "respaldo-restore-into",
) -> dict[str, int]:
    """Restore a ``pg_dump --schema=<source_schema>`` custom-format payload as the NEW schema ``schema``.

    Runs on ``cursor``, inside the transaction its connection has open (the caller commits or
    rolls back; nothing is committed here). Never locks nor changes ``source_schema``. Raises
    :class:`RestoreIntoError` (``schema`` exists, the script refers to something it cannot
    move, pg_restore failed, a check failed), :class:`backups.formats.pg_script.ScriptError` or a
    psycopg error; after any of them the caller must roll back. The session settings the
    script changes (``search_path``, ``lock_timeout``...) are put back as they were. Returns
    {table: rows}. pg_restore's messages go to ``stderr`` if given. ``count_check(cursor,
    schema, expected_counts, loaded=...)``, if given, replaces this module's own count check,
    so that a mismatch raises the caller's error (``backups.formats.pg.check_counts``).
    ``loaded`` is the rows each table received, from the server's own COPY counts: the tables
    are not counted again after the load. ``app_name`` names pg_restore's process (``PGAPPNAME``).
    """
    _check_name(source_schema, "The backup's schema")
    _check_name(schema, "The target schema")
    if schema == source_schema:
        raise RestoreIntoError("the target schema must be a new schema, not the backup's own")
    if cursor.connection.autocommit:
        raise RestoreIntoError("restore_into_pg runs inside the caller's transaction (autocommit is on)")
    saved = _settings(cursor)
    cursor.execute("SELECT pg_catalog.set_config('lock_timeout', %(value)s, true)", {"value": f"{lock_timeout_ms}ms"})
    _refuse_existing(cursor, schema)
    live_oid = _schema_oid(cursor, source_schema)
    rewriter = SchemaRewriter(source_schema, schema, lock_timeout_ms)
    script_cursor = RewritingCursor(cursor, rewriter)
    with contextlib.ExitStack() as stack:
        if stderr is None:
            stderr = stack.enter_context(tempfile.TemporaryFile())
        run_pg_restore(script_cursor, payload, tools, stderr, app_name=app_name)
    if rewriter.schemas_created != 1:
        raise RestoreIntoError(f"the backup does not hold the schema {source_schema!r}; nothing was restored")
    _put_back(cursor, saved)
    _check_untouched(cursor, source_schema, live_oid)
    _check_isolated(cursor, schema)
    if count_check is not None:
        count_check(cursor, schema, expected_counts, loaded=script_cursor.copied)
        return dict(expected_counts)
    return _check_counts(cursor, schema, expected_counts, exact_tables=True, loaded=script_cursor.copied)


# --- json payloads ----------------------------------------------------------------------


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

    _check_name(schema, "The target schema")
    if source_schema is not None:
        _check_name(source_schema, "The backup's schema")
        if schema == source_schema:
            raise RestoreIntoError("the target schema must be a new schema, not the backup's own")
    if not connection.in_atomic_block:
        raise RestoreIntoError("restore_into_json runs inside the caller's transaction.atomic()")
    chosen = payload_models() if models is None else list(models)
    _check_self_contained(chosen)
    with connection.cursor() as cursor:
        saved = _settings(cursor)
        cursor.execute("SELECT set_config('lock_timeout', %(value)s, true)", {"value": f"{lock_timeout_ms}ms"})
        _refuse_existing(cursor, schema)
        live_oid = _schema_oid(cursor, source_schema) if source_schema else None
        cursor.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    with schema_context(schema):
        with connection.cursor() as cursor:  # tables must land in the new schema, nowhere else
            current = _fetchall(cursor, "SELECT current_schema()")[0][0]
            if current != schema:
                raise RestoreIntoError(f"tables would be created in {current!r} instead of {schema!r}")
        with connection.schema_editor(atomic=True) as editor:
            for model in chosen:
                if not model._meta.auto_created:  # many-to-many tables come with their model
                    editor.create_model(model)
        load_json_payload(payload, expected_counts=expected_counts, models=chosen)
    with connection.cursor() as cursor:
        _check_untouched(cursor, source_schema, live_oid)
        _check_isolated(cursor, schema)
        counts = _check_counts(cursor, schema, expected_counts, exact_tables=False)
        _put_back(cursor, {"lock_timeout": saved["lock_timeout"]})
    return counts


# --- The normal restore: fill <clinic>__restoring, then put it in place ------------------


def swap_schema(cursor: Any, *, live: str, replacement: str, old_suffix: str = "__before_restore") -> None:
    """In the caller's transaction: ``replacement`` becomes ``live``; the old ``live`` is dropped.

    For a pg restore: the whole schema (users, migrations included) is the backup's; the normal
    restore first puts the live sessions into ``replacement`` (``backups.services.sessions``).
    Takes an AccessExclusiveLock on every live table (waits up to the session's lock_timeout).
    """
    _check_name(live, "The clinic schema")
    _check_name(replacement, "The restored schema")
    old = quote_ident(live + old_suffix)
    cursor.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")
    cursor.execute(f"ALTER SCHEMA {quote_ident(live)} RENAME TO {old}")
    cursor.execute(f"ALTER SCHEMA {quote_ident(replacement)} RENAME TO {quote_ident(live)}")
    cursor.execute(f"DROP SCHEMA {old} CASCADE")
