"""One clinic schema's definitions read from the catalog, filtered by its namespace, as SQL.

``pg_dump -n <schema>`` reads the catalog of the whole database (every schema's tables,
types, functions...) however few schemas it dumps: with thousands of clinics, that and not
the clinic's data is what a backup costs. Here every query starts from the schema's own
objects: ``pg_depend``'s entries that point at the namespace (the way ``DROP SCHEMA``
finds them, by index), then each object's rows by oid or by its table's oid, also by index.
The SQL text (``definitions``) comes from the server's own ``pg_get_*def`` functions, with ``search_path``
empty so that every name is schema-qualified as pg_dump writes it.

What ``definitions`` writes is what the plain script of ``pg_dump --no-owner
--no-privileges -n <schema>`` holds, in pg_dump's order: the schema, functions, sequences,
tables, identity columns, views, comments (pre-data); then the rows (``COPY``) and sequence
values; then constraints, indexes, triggers (post-data). The test that checks it restores a
clinic with every kind of object and compares ``pg_dump --schema-only`` of both schemas.

Object kinds it does not carry (types, materialized views, partitioned or inherited tables,
rules, policies, extended statistics, aggregates, operators, collations, extensions...) are
never dropped: :func:`unsupported` names them, and the backup then uses pg_dump.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["namespace_oid", "rows_of", "schema_objects", "unsupported"]

# pg_depend's view of a schema: every object whose namespace it is (classid names the catalog).
_IN_SCHEMA = """
SELECT d.classid::pg_catalog.regclass::text, d.objid
FROM pg_catalog.pg_depend d
WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = %(nsp)s
"""

_CARRIED_RELKINDS = {"r": "table", "S": "sequence", "v": "view"}
_RELKIND_NAMES = {
    "m": "materialized view",
    "p": "partitioned table",
    "f": "foreign table",
    "c": "composite type",
}


def rows_of(cursor: Any, query: str, params: dict[str, Any]) -> list[tuple]:
    """All rows of ``query``."""
    cursor.execute(query, params)
    return cursor.fetchall()


def namespace_oid(cursor: Any, schema: str) -> int:
    """The schema's oid (``LookupError`` if there is none)."""
    rows = rows_of(cursor, "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s", {"schema": schema})
    if not rows:
        raise LookupError(f"schema {schema!r} does not exist")
    return rows[0][0]


def schema_objects(cursor: Any, nsp: int) -> dict[str, list[int]]:
    """{catalog (``pg_class``, ``pg_proc``...): oids} of every object in the namespace ``nsp``."""
    found: dict[str, list[int]] = {}
    for catalog, oid in rows_of(cursor, _IN_SCHEMA, {"nsp": nsp}):
        found.setdefault(catalog.removeprefix("pg_catalog."), []).append(oid)
    return found


def unsupported(cursor: Any, schema: str) -> list[str]:
    """What the schema holds that :func:`read_definitions` would not carry (empty: it carries everything).

    Each entry names one kind and up to three of its objects, e.g. ``"type: clin.mood"``.
    """
    nsp = namespace_oid(cursor, schema)
    objects = schema_objects(cursor, nsp)
    found: dict[str, list[str]] = {}

    def note(kind: str, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            found.setdefault(kind, []).extend(names)

    relations = objects.pop("pg_class", [])
    procs = objects.pop("pg_proc", [])
    types = objects.pop("pg_type", [])
    for catalog, oids in objects.items():
        note(catalog.removeprefix("pg_").replace("_", " "), [str(oid) for oid in oids[:3]])
    for relkind, name in rows_of(
        cursor, "SELECT relkind, relname FROM pg_catalog.pg_class WHERE oid = ANY(%(oids)s)", {"oids": relations}
    ):
        if relkind not in _CARRIED_RELKINDS:
            note(_RELKIND_NAMES.get(relkind, f"relation of kind {relkind}"), [name])
    for (name,) in rows_of(
        cursor,
        "SELECT proname FROM pg_catalog.pg_proc WHERE oid = ANY(%(oids)s) AND prokind NOT IN ('f', 'p', 'w')",
        {"oids": procs},
    ):
        note("aggregate", [name])
    # A relation's row type and array types depend on their relation, not on the namespace:
    # a type listed here was made by CREATE TYPE or CREATE DOMAIN.
    for (name,) in rows_of(cursor, "SELECT typname FROM pg_catalog.pg_type WHERE oid = ANY(%(oids)s)", {"oids": types}):
        note("type", [name])
    tables = [oid for oid, kind in _relkinds(cursor, relations).items() if kind in ("r", "v")]
    for kind, query in _TABLE_CHECKS:
        note(kind, [str(name) for (name,) in rows_of(cursor, query, {"oids": tables})])
    return [f"{kind}: {', '.join(f'{schema}.{n}' for n in names[:3])}" for kind, names in sorted(found.items())]


def _relkinds(cursor: Any, oids: list[int]) -> dict[int, str]:
    rows = rows_of(cursor, "SELECT oid, relkind FROM pg_catalog.pg_class WHERE oid = ANY(%(oids)s)", {"oids": oids})
    return dict(rows)


_TABLE_CHECKS = [
    (
        "inherited table",
        "SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhrelid = ANY(%(oids)s) OR i.inhparent = ANY(%(oids)s)",
    ),
    (
        "rule",
        "SELECT rulename FROM pg_catalog.pg_rewrite WHERE ev_class = ANY(%(oids)s) AND rulename <> '_RETURN'",
    ),
    ("row security policy", "SELECT polname FROM pg_catalog.pg_policy WHERE polrelid = ANY(%(oids)s)"),
    ("extended statistics", "SELECT stxname FROM pg_catalog.pg_statistic_ext WHERE stxrelid = ANY(%(oids)s)"),
    (
        "table in a tablespace or access method of its own",
        "SELECT relname FROM pg_catalog.pg_class WHERE oid = ANY(%(oids)s) AND (reltablespace <> 0 "
        "OR (relkind = 'r' AND relam <> (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'heap')))",
    ),
    (
        "index in a tablespace of its own",
        "SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = ANY(%(oids)s) AND c.reltablespace <> 0",
    ),
    (
        # attoptions: only n_distinct and n_distinct_inherited are column options; a server may keep
        # its own entries there, which pg_dump does not write either
        "column setting (statistics target, n_distinct, storage or compression)",
        "SELECT c.relname || '.' || a.attname FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 "
        "AND NOT a.attisdropped AND (COALESCE(a.attstattarget, -1) >= 0 "
        "OR EXISTS (SELECT 1 FROM unnest(a.attoptions) o WHERE o LIKE 'n\\_distinct%%') "
        "OR a.attstorage <> t.typstorage OR a.attcompression <> '')",
    ),
    (
        "security label",
        "SELECT c.relname FROM pg_catalog.pg_seclabel l JOIN pg_catalog.pg_class c ON c.oid = l.objoid "
        "WHERE l.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND l.objoid = ANY(%(oids)s)",
    ),
]
