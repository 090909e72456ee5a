"""A clinic schema's definitions as SQL, from namespace-filtered catalog queries (``catalog``).

:func:`read_definitions` gives what the plain script of ``pg_dump --no-owner
--no-privileges -n <schema>`` holds, in pg_dump's order: the schema, functions, sequences,
tables, identity columns, views (pre-data); which tables' rows to copy and the sequences
whose values follow them; then constraints, indexes, triggers and comments (post-data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backups.formats.base import quote_ident
from backups.formats.pg.catalog import namespace_oid, rows_of, schema_objects

__all__ = ["Definitions", "TableData", "read_definitions"]


@dataclass
class TableData:
    """One table's rows, as the script copies them."""

    name: str
    columns: list[str]  # stored columns, in order (generated ones are computed again)
    oid: int = 0

    def copy_to(self, schema: str) -> str:
        return f"COPY {self.qualified(schema)} ({', '.join(self.columns)}) TO STDOUT"

    def copy_from(self, schema: str) -> str:
        return f"COPY {self.qualified(schema)} ({', '.join(self.columns)}) FROM stdin;"

    def qualified(self, schema: str) -> str:
        return f"{quote_ident(schema)}.{quote_ident(self.name)}"


@dataclass
class Definitions:
    """A schema's script, but for its rows: statements before and after the data."""

    schema: str
    pre_data: list[str] = field(default_factory=list)
    tables: list[TableData] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)  # every sequence, for its value after the rows
    post_data: list[str] = field(default_factory=list)


def read_definitions(cursor: Any, schema: str) -> Definitions:
    """The schema's definitions (check :func:`unsupported` first: what it lists is left out here).

    ``cursor``'s session must have an empty ``search_path``, so that every name the server
    writes is qualified, and the schema's tables locked (``ACCESS SHARE``), so that the
    definitions are those of the snapshot the rows are copied in.
    """
    nsp = namespace_oid(cursor, schema)
    objects = schema_objects(cursor, nsp)
    out = Definitions(schema)
    q = quote_ident(schema)
    relations = _relations(cursor, objects.get("pg_class", []))
    tables = [r for r in relations if r["relkind"] == "r"]
    table_oids = [r["oid"] for r in tables]
    sequence_oids = [r["oid"] for r in relations if r["relkind"] == "S"]
    owned = _owned_sequences(cursor, sequence_oids)
    options = _sequences(cursor, sequence_oids)
    functions = _functions(cursor, objects.get("pg_proc", []), nsp)

    out.pre_data.append(f"CREATE SCHEMA {q};")
    out.pre_data += [sql for _, sql, on_own_types in functions if not on_own_types]
    for rel in relations:
        if rel["relkind"] == "S" and owned.get(rel["oid"], ("owned",))[0] == "owned":
            out.pre_data.append(_create_sequence(q, rel, options[rel["oid"]]))
    columns = _columns(cursor, table_oids)
    for rel in tables:
        out.pre_data.append(_create_table(q, rel, columns.get(rel["oid"], [])))
        stored = [quote_ident(c["name"]) for c in columns.get(rel["oid"], []) if not c["generated"]]
        out.tables.append(TableData(rel["relname"], stored, rel["oid"]))
    for seq_oid, (how, table, column) in sorted(owned.items()):
        seq = next(r for r in relations if r["oid"] == seq_oid)
        if how != "owned":
            out.pre_data.append(_identity(q, seq, options[seq_oid], how, table, column))
        else:
            out.pre_data.append(f"ALTER SEQUENCE {q}.{quote_ident(seq['relname'])} OWNED BY {table}.{column};")
    out.pre_data += [sql for _, sql, on_own_types in functions if on_own_types]
    out.pre_data += _views(cursor, q, [r for r in relations if r["relkind"] == "v"])
    out.pre_data += _row_security(q, tables)
    out.sequences = [f"{q}.{quote_ident(r['relname'])}" for r in relations if r["relkind"] == "S"]
    out.post_data += _constraints(cursor, table_oids, foreign=False)
    out.post_data += _indexes(cursor, table_oids)
    out.post_data += _constraints(cursor, table_oids, foreign=True)
    out.post_data += _replica_identity(cursor, q, tables)
    out.post_data += _triggers(cursor, q, table_oids)
    out.post_data += _comments(cursor, nsp, q, relations, [oid for oid, _, _ in functions])
    return out


def _relations(cursor: Any, oids: list[int]) -> list[dict[str, Any]]:
    cursor.execute(
        "SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.reloptions, c.relrowsecurity, "
        "c.relforcerowsecurity, c.relreplident FROM pg_catalog.pg_class c "
        "WHERE c.oid = ANY(%(oids)s) AND c.relkind IN ('r', 'S', 'v') ORDER BY c.relname, c.oid",
        {"oids": oids},
    )
    names = [d.name for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _owned_sequences(cursor: Any, sequences: list[int]) -> dict[int, tuple[str, str, str]]:
    """{sequence oid: (how, qualified table, quoted column)}: how is the column's identity
    (``a`` ALWAYS, ``d`` BY DEFAULT) for an identity sequence, ``owned`` for OWNED BY."""
    rows = rows_of(
        cursor,
        "SELECT d.objid, CASE WHEN d.deptype = 'i' THEN a.attidentity::text ELSE 'owned' END, "
        "d.refobjid::pg_catalog.regclass::text, pg_catalog.quote_ident(a.attname) "
        "FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a "
        "ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = ANY(%(oids)s) "
        "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')",
        {"oids": sequences},
    )
    return {oid: (how, table, column) for oid, how, table, column in rows}


def _sequences(cursor: Any, oids: list[int]) -> dict[int, tuple]:
    """{sequence oid: (start, increment, min, max, cache, cycle, type)}, in one query."""
    rows = rows_of(
        cursor,
        "SELECT seqrelid, seqstart, seqincrement, seqmin, seqmax, seqcache, seqcycle, "
        "pg_catalog.format_type(seqtypid, NULL) FROM pg_catalog.pg_sequence WHERE seqrelid = ANY(%(oids)s)",
        {"oids": oids},
    )
    return {row[0]: row[1:] for row in rows}


def _sequence_options(params: tuple, *, with_type: bool) -> str:
    start, increment, minimum, maximum, cache, cycle, typ = params
    options = [f"AS {typ}"] if with_type else []
    options += [
        f"START WITH {start}",
        f"INCREMENT BY {increment}",
        f"MINVALUE {minimum}",
        f"MAXVALUE {maximum}",
        f"CACHE {cache}",
    ]
    if cycle:
        options.append("CYCLE")
    return "\n    ".join(options)


def _create_sequence(q: str, rel: dict[str, Any], params: tuple) -> str:
    unlogged = "UNLOGGED " if rel["relpersistence"] == "u" else ""
    options = _sequence_options(params, with_type=True)
    return f"CREATE {unlogged}SEQUENCE {q}.{quote_ident(rel['relname'])}\n    {options};"


def _identity(q: str, seq: dict[str, Any], params: tuple, how: str, table: str, column: str) -> str:
    when = "ALWAYS" if how == "a" else "BY DEFAULT"
    options = _sequence_options(params, with_type=False)
    return (
        f"ALTER TABLE {table} ALTER COLUMN {column} ADD GENERATED {when} AS IDENTITY (\n"
        f"    SEQUENCE NAME {q}.{quote_ident(seq['relname'])}\n    {options}\n);"
    )


def _columns(cursor: Any, tables: list[int]) -> dict[int, list[dict[str, Any]]]:
    cursor.execute(
        "SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "a.attgenerated, pg_catalog.pg_get_expr(d.adbin, d.adrelid), "
        "CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN "
        "pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.collname) END "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "LEFT JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation "
        "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace "
        "WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
        {"oids": tables},
    )
    found: dict[int, list[dict[str, Any]]] = {}
    for table, name, typ, notnull, generated, default, collation in cursor.fetchall():
        found.setdefault(table, []).append(
            {
                "name": name,
                "type": typ,
                "notnull": notnull,
                "generated": generated == "s",
                "default": default,
                "collation": collation,
            }
        )
    return found


def _create_table(q: str, rel: dict[str, Any], columns: list[dict[str, Any]]) -> str:
    lines = []
    for col in columns:
        line = f"    {quote_ident(col['name'])} {col['type']}"
        if col["collation"]:
            line += f" COLLATE {col['collation']}"
        if col["generated"]:
            line += f" GENERATED ALWAYS AS ({col['default']}) STORED"
        elif col["default"] is not None:
            line += f" DEFAULT {col['default']}"
        if col["notnull"]:
            line += " NOT NULL"
        lines.append(line)
    unlogged = "UNLOGGED " if rel["relpersistence"] == "u" else ""
    body = ",\n".join(lines)
    options = f" WITH ({', '.join(rel['reloptions'])})" if rel["reloptions"] else ""
    return f"CREATE {unlogged}TABLE {q}.{quote_ident(rel['relname'])} (\n{body}\n){options};"


def _functions(cursor: Any, oids: list[int], nsp: int) -> list[tuple[int, str, bool]]:
    """(oid, CREATE FUNCTION ...;, whether its signature uses a type of the schema: made after the tables)."""
    rows = rows_of(
        cursor,
        "SELECT p.oid, pg_catalog.pg_get_functiondef(p.oid), EXISTS (SELECT 1 FROM pg_catalog.pg_type t "
        "WHERE t.typnamespace = %(nsp)s AND (t.oid = p.prorettype OR t.oid = ANY(p.proargtypes::oid[]) "
        "OR t.oid = ANY(COALESCE(p.proallargtypes, '{}'::oid[])))) "
        "FROM pg_catalog.pg_proc p WHERE p.oid = ANY(%(oids)s) AND p.prokind IN ('f', 'p', 'w') "
        "ORDER BY p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)",
        {"oids": oids, "nsp": nsp},
    )
    # pg_get_functiondef writes CREATE OR REPLACE; the schema is new, so plain CREATE says the same.
    return [
        (oid, definition.rstrip().removesuffix(";").replace("CREATE OR REPLACE ", "CREATE ", 1) + ";", bool(own))
        for oid, definition, own in rows
    ]


def _views(cursor: Any, q: str, views: list[dict[str, Any]]) -> list[str]:
    """CREATE VIEW for each view, those a view reads before it."""
    by_oid = {v["oid"]: v for v in views}
    reads: dict[int, set[int]] = {oid: set() for oid in by_oid}
    for view, used in rows_of(
        cursor,
        "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d "
        "ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid "
        "AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass "
        "WHERE r.ev_class = ANY(%(oids)s) AND d.refobjid <> r.ev_class",
        {"oids": list(by_oid)},
    ):
        if used in by_oid:
            reads[view].add(used)
    ordered: list[int] = []
    done: set[int] = set()

    def visit(oid: int) -> None:
        if oid in done:
            return
        done.add(oid)
        for used in sorted(reads[oid], key=lambda o: by_oid[o]["relname"]):
            visit(used)
        ordered.append(oid)

    for oid in by_oid:
        visit(oid)
    statements = []
    for oid in ordered:
        view = by_oid[oid]
        (definition,) = rows_of(cursor, "SELECT pg_catalog.pg_get_viewdef(%(oid)s::oid)", {"oid": oid})[0]
        options = f" WITH ({', '.join(view['reloptions'])})" if view["reloptions"] else ""
        body = definition.rstrip().removesuffix(";")
        statements.append(f"CREATE VIEW {q}.{quote_ident(view['relname'])}{options} AS\n{body};")
    return statements


def _row_security(q: str, tables: list[dict[str, Any]]) -> list[str]:
    out = []
    for rel in tables:
        name = f"{q}.{quote_ident(rel['relname'])}"
        if rel["relrowsecurity"]:
            out.append(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")
        if rel["relforcerowsecurity"]:
            out.append(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY;")
    return out


def _constraints(cursor: Any, tables: list[int], *, foreign: bool) -> list[str]:
    """Keys, unique, exclusion and check constraints; or foreign keys (after the keys and indexes they need)."""
    rows = rows_of(
        cursor,
        "SELECT c.conrelid::pg_catalog.regclass::text, pg_catalog.quote_ident(c.conname), "
        "pg_catalog.pg_get_constraintdef(c.oid), c.contype = 'f' FROM pg_catalog.pg_constraint c "
        "WHERE c.conrelid = ANY(%(oids)s) AND c.contype IN ('p', 'u', 'x', 'c', 'f') AND c.conislocal "
        "AND (c.contype = 'f') = %(foreign)s ORDER BY c.conrelid::pg_catalog.regclass::text, c.conname",
        {"oids": tables, "foreign": foreign},
    )
    return [f"ALTER TABLE ONLY {table}\n    ADD CONSTRAINT {name} {definition};" for table, name, definition, _ in rows]


def _indexes(cursor: Any, tables: list[int]) -> list[str]:
    """Indexes but those of constraints (made with them), and which one a table is clustered on."""
    rows = rows_of(
        cursor,
        "SELECT pg_catalog.pg_get_indexdef(i.indexrelid), i.indisclustered, i.indrelid::pg_catalog.regclass::text, "
        "pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY(%(oids)s) AND i.indisvalid "
        "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid "
        "AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')) ORDER BY c.relname",
        {"oids": tables},
    )
    out = [f"{definition};" for definition, _, _, _ in rows]
    clustered = rows_of(
        cursor,
        "SELECT i.indrelid::pg_catalog.regclass::text, pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = ANY(%(oids)s) AND i.indisclustered "
        "ORDER BY 1",
        {"oids": tables},
    )
    out += [f"ALTER TABLE {table} CLUSTER ON {index};" for table, index in clustered]
    return out


def _replica_identity(cursor: Any, q: str, tables: list[dict[str, Any]]) -> list[str]:
    out = []
    for rel in tables:
        name = f"{q}.{quote_ident(rel['relname'])}"
        if rel["relreplident"] == "f":
            out.append(f"ALTER TABLE ONLY {name} REPLICA IDENTITY FULL;")
        elif rel["relreplident"] == "n":
            out.append(f"ALTER TABLE ONLY {name} REPLICA IDENTITY NOTHING;")
        elif rel["relreplident"] == "i":
            (index,) = rows_of(
                cursor,
                "SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c "
                "ON c.oid = i.indexrelid WHERE i.indrelid = %(oid)s AND i.indisreplident",
                {"oid": rel["oid"]},
            )[0]
            out.append(f"ALTER TABLE ONLY {name} REPLICA IDENTITY USING INDEX {index};")
    return out


_TRIGGER_STATES = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}


def _triggers(cursor: Any, q: str, tables: list[int]) -> list[str]:
    rows = rows_of(
        cursor,
        "SELECT pg_catalog.pg_get_triggerdef(t.oid, false), t.tgenabled, t.tgrelid::pg_catalog.regclass::text, "
        "pg_catalog.quote_ident(t.tgname) FROM pg_catalog.pg_trigger t "
        "WHERE t.tgrelid = ANY(%(oids)s) AND NOT t.tgisinternal "
        "ORDER BY t.tgrelid::pg_catalog.regclass::text, t.tgname",
        {"oids": tables},
    )
    out = []
    for definition, enabled, table, name in rows:
        out.append(f"{definition};")
        if enabled in _TRIGGER_STATES:
            out.append(f"ALTER TABLE {table} {_TRIGGER_STATES[enabled]} {name};")
    return out


def _literal(text: str) -> str:
    """A standard-conforming string literal (the script sets standard_conforming_strings on)."""
    return "'" + text.replace("'", "''") + "'"


def _comments(cursor: Any, nsp: int, q: str, relations: list[dict[str, Any]], procs: list[int]) -> list[str]:
    """COMMENT ON every commented object: the schema, its relations and columns, functions,
    constraints, indexes and triggers."""
    out = []
    rel_oids = [r["oid"] for r in relations]
    kinds = {"r": "TABLE", "S": "SEQUENCE", "v": "VIEW"}
    for (text,) in rows_of(
        cursor,
        "SELECT description FROM pg_catalog.pg_description WHERE objoid = %(nsp)s "
        "AND classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass",
        {"nsp": nsp},
    ):
        out.append(f"COMMENT ON SCHEMA {q} IS {_literal(text)};")
    for oid, relkind, column, text in rows_of(
        cursor,
        "SELECT d.objoid, c.relkind, CASE WHEN d.objsubid > 0 THEN (SELECT pg_catalog.quote_ident(a.attname) "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = d.objoid AND a.attnum = d.objsubid) END, d.description "
        "FROM pg_catalog.pg_description d JOIN pg_catalog.pg_class c ON c.oid = d.objoid "
        "WHERE d.objoid = ANY(%(oids)s) AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass "
        "ORDER BY c.relname, d.objsubid",
        {"oids": rel_oids},
    ):
        name = f"{q}.{quote_ident(next(r['relname'] for r in relations if r['oid'] == oid))}"
        if column:
            out.append(f"COMMENT ON COLUMN {name}.{column} IS {_literal(text)};")
        else:
            out.append(f"COMMENT ON {kinds[relkind]} {name} IS {_literal(text)};")
    for signature, text in rows_of(
        cursor,
        "SELECT p.oid::pg_catalog.regprocedure::text, d.description FROM pg_catalog.pg_description d "
        "JOIN pg_catalog.pg_proc p ON p.oid = d.objoid WHERE d.objoid = ANY(%(oids)s) "
        "AND d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass ORDER BY 1",
        {"oids": procs},
    ):
        out.append(f"COMMENT ON FUNCTION {signature} IS {_literal(text)};")
    for table, name, text in rows_of(
        cursor,
        "SELECT k.conrelid::pg_catalog.regclass::text, pg_catalog.quote_ident(k.conname), d.description "
        "FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_description d ON d.objoid = k.oid "
        "AND d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass WHERE k.conrelid = ANY(%(oids)s) "
        "ORDER BY 1, 2",
        {"oids": rel_oids},
    ):
        out.append(f"COMMENT ON CONSTRAINT {name} ON {table} IS {_literal(text)};")
    for index, text in rows_of(
        cursor,
        "SELECT i.indexrelid::pg_catalog.regclass::text, d.description FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_description d ON d.objoid = i.indexrelid "
        "AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass WHERE i.indrelid = ANY(%(oids)s) ORDER BY 1",
        {"oids": rel_oids},
    ):
        out.append(f"COMMENT ON INDEX {index} IS {_literal(text)};")
    for table, name, text in rows_of(
        cursor,
        "SELECT t.tgrelid::pg_catalog.regclass::text, pg_catalog.quote_ident(t.tgname), d.description "
        "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_description d ON d.objoid = t.oid "
        "AND d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass WHERE t.tgrelid = ANY(%(oids)s) "
        "AND NOT t.tgisinternal ORDER BY 1, 2",
        {"oids": rel_oids},
    ):
        out.append(f"COMMENT ON TRIGGER {name} ON {table} IS {_literal(text)};")
    return out
