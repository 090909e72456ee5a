"""What every format's restore into a NEW schema shares: the checks after it, and the payload's end.

A backup restored into a schema of its own (a drill, a comparison, a patient pick, a clone,
the staging schema of a pg restore) must leave the live clinic unlocked and untouched, make
a schema linked to no other, and hold the manifest's rows; see ``docs/decisions/restore-into.md``.
"""

from __future__ import annotations

import re
from typing import Any

from backups import archive
from backups.exceptions import RestoreRefused
from backups.formats.base import RestoreIntoError, quote_ident
from backups.models import Backup
from backups.postgres import SCHEMA_TABLES

STAGING_SUFFIX = "__restoring"  # the normal restore fills <clinic>__restoring, then swaps


def check_read_to_the_end(payload: archive.ArchiveReader, backup: Backup) -> None:
    """The payload was read to its authenticated end, and it is the catalog's object (before COMMIT)."""
    if payload.read(1) or payload.summary is None:
        raise RestoreRefused("archive_extra_data", backup=backup.pk)
    if payload.summary.archive_sha256 != backup.sha256:
        raise RestoreRefused("archive_changed", "archive_changed_during_restore", backup=backup.pk)


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


def check_name(name: str, what: str) -> None:
    """Refuse a name that is not a clinic schema name (``what`` says whose, in the error)."""
    if not _SCHEMA_NAME.fullmatch(name or "") or name.startswith("pg_") or name in _RESERVED_SCHEMAS:
        raise RestoreIntoError(f"{what} {name!r} is not a clinic schema name (lowercase letters, digits, _).")


# Every object of a schema: those pg_depend says are in it (found by index, as DROP SCHEMA finds
# them), then what hangs from its relations and types (indexes, row and array types, constraints,
# defaults, triggers, rules), each by its own catalog's index, from arrays of oids (the planner
# knows their length; a CTE's estimate made it scan pg_depend and pg_constraint whole). Never by
# scanning pg_class or pg_type for the namespace: those catalogs hold every clinic's objects.
_NAMED_IN_SCHEMA = """
    SELECT d.classid::regclass::text, d.objid FROM pg_catalog.pg_depend d
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = %(ns)s
"""
_RELATIONS_OF_TYPES = "SELECT typrelid FROM pg_catalog.pg_type WHERE oid = ANY(%(types)s) AND typrelid <> 0"
_HANGING_FROM = """
    SELECT 'pg_type', c.reltype FROM pg_class c WHERE c.oid = ANY(%(rels)s) AND c.reltype <> 0
    UNION ALL SELECT 'pg_type', t.typarray FROM pg_class c JOIN pg_type t ON t.oid = c.reltype
        WHERE c.oid = ANY(%(rels)s) AND t.typarray <> 0
    UNION ALL SELECT 'pg_type', t.typarray FROM pg_type t WHERE t.oid = ANY(%(types)s) AND t.typarray <> 0
    UNION ALL SELECT 'pg_class', i.indexrelid FROM pg_index i WHERE i.indrelid = ANY(%(rels)s)
    UNION ALL SELECT 'pg_constraint', k.oid FROM pg_constraint k WHERE k.conrelid = ANY(%(rels)s)
    UNION ALL SELECT 'pg_constraint', k.oid FROM pg_constraint k WHERE k.contypid = ANY(%(types)s)
    UNION ALL SELECT 'pg_attrdef', a.oid FROM pg_attrdef a WHERE a.adrelid = ANY(%(rels)s)
    UNION ALL SELECT 'pg_trigger', t.oid FROM pg_trigger t WHERE t.tgrelid = ANY(%(rels)s)
    UNION ALL SELECT 'pg_rewrite', r.oid FROM pg_rewrite r WHERE r.ev_class = ANY(%(rels)s)
"""
_CROSS_SCHEMA_DEPENDENCIES = f"""
    WITH mine AS (SELECT * FROM unnest(%(classes)s::regclass[], %(oids)s::oid[]) AS m(cls, oid)),
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


def fetchall(cursor: Any, query: str, params: Any = None) -> list[tuple]:
    """Run ``query`` on ``cursor`` and return every row."""
    cursor.execute(query, params)
    return cursor.fetchall()


def schema_oid(cursor: Any, name: str) -> int | None:
    """The oid of the schema ``name``, or None when there is none."""
    rows = fetchall(cursor, "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(name)s", {"name": name})
    return rows[0][0] if rows else None


def check_untouched(cursor: Any, live: str | None, live_oid: int | None) -> None:
    """This backend holds no lock on the live schema or on any of its relations."""
    if live_oid is None:
        return
    held = fetchall(cursor, _LOCKS_ON_SCHEMA, {"ns": live_oid})
    if held:
        shown = ", ".join(f"{mode} on {name}" for mode, name in held)
        raise RestoreIntoError(f"restoring into a new schema locked the live schema {live!r} ({shown}); rolled back")


def objects_of_schema(cursor: Any, ns: int) -> list[tuple[str, int]]:
    """(catalog, oid) of every object of the schema whose oid is ``ns`` (three queries, by index)."""
    named = [(cls, oid) for cls, oid in fetchall(cursor, _NAMED_IN_SCHEMA, {"ns": ns})]
    types = [oid for cls, oid in named if cls == "pg_type"]
    rels = [oid for cls, oid in named if cls == "pg_class"]
    rels += [oid for (oid,) in fetchall(cursor, _RELATIONS_OF_TYPES, {"types": types})] if types else []
    hanging = fetchall(cursor, _HANGING_FROM, {"rels": rels, "types": types})
    return sorted(set(named) | {("pg_class", oid) for oid in rels} | set(hanging))


def check_isolated(cursor: Any, schema: str) -> None:
    """No object of ``schema`` depends on an object of another (non-system) schema, nor the reverse."""
    oid = schema_oid(cursor, schema)
    if oid is None:
        raise RestoreIntoError(f"the backup did not create the schema {schema!r}; rolled back")
    mine = objects_of_schema(cursor, oid)
    params = {"classes": [cls for cls, _ in mine], "oids": [oid for _, oid in mine], "name": schema}
    links = fetchall(cursor, _CROSS_SCHEMA_DEPENDENCIES, params)
    if links:
        shown = "; ".join(f"{mine} -> {other}" for mine, other in links)
        raise RestoreIntoError(f"the restored schema {schema!r} is linked to objects of other schemas ({shown})")


def check_row_counts(
    cursor: Any, schema: str, expected: dict[str, int], *, exact_tables: bool, loaded: dict[str, int] | None = None
) -> dict[str, int]:
    """The new schema holds the expected rows (and, with ``exact_tables``, exactly the expected tables).

    ``loaded``: the rows each table received by COPY (a table without COPY received none), used
    instead of counting every table again.
    """
    found = [name for (name,) in fetchall(cursor, SCHEMA_TABLES, {"schema": schema})]
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
        counts[table] = fetchall(cursor, f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")[0][0]  # noqa: S608
    wrong = [
        f"{table}: {counts.get(table, 0)} instead of {expected.get(table, 0)}"
        for table in sorted(counts.keys() | expected.keys())
        if counts.get(table, 0) != expected.get(table, 0)
    ]
    if wrong:
        raise RestoreIntoError(f"the restored row counts differ from the backup's ({'; '.join(wrong)})")
    return counts


def refuse_existing(cursor: Any, schema: str) -> None:
    """Refuse a target schema that already exists: a backup is only restored into a new one."""
    if schema_oid(cursor, schema) is not None:
        raise RestoreIntoError(f"the schema {schema!r} already exists; a backup is only restored into a new schema")


def session_settings(cursor: Any) -> dict[str, str]:
    """The session settings a restore script changes, as they are now (for :func:`put_back`)."""
    names = ", ".join(f"current_setting('{name}')" for name in _SCRIPT_SETTINGS)
    return dict(zip(_SCRIPT_SETTINGS, fetchall(cursor, f"SELECT {names}")[0], strict=True))  # noqa: S608


def put_back(cursor: Any, saved: dict[str, str]) -> None:
    """Put back the session settings :func:`session_settings` saved."""
    for name, value in saved.items():
        cursor.execute("SELECT pg_catalog.set_config(%(name)s, %(value)s, false)", {"name": name, "value": value})
