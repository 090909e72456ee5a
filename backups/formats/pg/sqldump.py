"""Writing a pg payload as a plain SQL script, without pg_dump: what a clinic's backup costs
no longer depends on how many other clinics the database holds.

The script is what ``pg_dump --format=plain --no-owner --no-privileges -n <schema>`` would
write: session settings, the schema's definitions (``definitions``, from namespace-filtered
catalog queries), each table's rows as a ``COPY ... FROM stdin;`` block, the sequences'
values, then constraints, indexes and triggers. ``psql --single-transaction`` restores it by
hand (``docs/archive-format.md``); Respaldo runs it through ``pg.script`` with the schema
renamed, as it runs what ``pg_restore -f -`` writes for older archives.

It is read on a connection of its own inside the backup's exported snapshot, after locking
the schema's tables (``ACCESS SHARE``, as pg_dump does: the definitions the server writes are
the current ones, so no migration may change them meanwhile).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO

import psycopg
from psycopg import sql

from backups.conf import conf
from backups.formats.base import ChunkReader, quote_ident
from backups.formats.pg import copyout
from backups.formats.pg.catalog import namespace_oid, rows_of
from backups.formats.pg.definitions import Definitions, read_definitions
from backups.postgres import DumpError, PgTools, connect_separately

__all__ = ["SCRIPT_END", "SCRIPT_HEADER", "sql_dump_stream"]

# The script's last line: a script cut short anywhere lacks it (the by-hand restore checks it).
SCRIPT_END = "-- Respaldo: end of the script\n"

# pg_dump's own preamble (the settings ``backups.formats.scratch`` saves and puts back).
SCRIPT_HEADER = """--
-- Respaldo: one clinic schema as a plain SQL script (pg_dump's plain format, without owners
-- or privileges). Restore by hand into a database without that schema:
--     psql --single-transaction -v ON_ERROR_STOP=1 -f <this file>
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';
SET default_table_access_method = heap;

"""


class _Script:
    """The script's bytes, in order; ``finished`` once the last one was given."""

    def __init__(self, cursor: psycopg.Cursor, defs: Definitions, rows: copyout.PsqlRows | None = None) -> None:
        self.cursor, self.defs, self.rows = cursor, defs, rows
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        defs = self.defs
        yield SCRIPT_HEADER.encode()
        for statement in defs.pre_data:
            yield statement.encode() + b"\n\n"
        for table in defs.tables:
            yield table.copy_from(defs.schema).encode() + b"\n"
            if self.rows is not None:
                yield from self.rows.table()
            else:
                with self.cursor.copy(table.copy_to(defs.schema)) as copy:
                    for block in copy:
                        yield bytes(block)
            yield b"\\.\n\n"
        if self.rows is not None:
            self.rows.close()
        for sequence, value, called in self._sequence_values():
            literal = "'" + sequence.replace("'", "''") + "'"
            yield f"SELECT pg_catalog.setval({literal}, {value}, {'true' if called else 'false'});\n".encode()
        yield b"\n"
        for statement in defs.post_data:
            yield statement.encode() + b"\n\n"
        yield SCRIPT_END.encode()
        self.finished = True

    def _sequence_values(self) -> list[tuple[str, int, bool]]:
        """(sequence, last_value, is_called) of every sequence of the schema, in one query."""
        if not self.defs.sequences:
            return []
        parts = [
            sql.SQL("SELECT {}, last_value, is_called FROM {}").format(sql.Literal(name), sql.SQL(name))
            for name in self.defs.sequences
        ]
        return self.cursor.execute(sql.SQL(" UNION ALL ").join(parts)).fetchall()


def _estimated_rows(cursor: psycopg.Cursor, defs: Definitions) -> int:
    """The clinic's rows as the planner's statistics estimate them (``pg_class.reltuples``)."""
    oids = [table.oid for table in defs.tables]
    row = cursor.execute(
        "SELECT COALESCE(sum(GREATEST(reltuples, 0)), 0)::bigint FROM pg_catalog.pg_class WHERE oid = ANY(%s)", [oids]
    ).fetchone()
    return int(row[0])


def _lock_tables(cursor: psycopg.Cursor, schema: str) -> None:
    nsp = namespace_oid(cursor, schema)
    tables = rows_of(
        cursor,
        "SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c "
        "ON c.oid = d.objid WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
        "AND d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = %(nsp)s "
        "AND c.relkind = 'r' ORDER BY c.relname",
        {"nsp": nsp},
    )
    if tables:
        names = ", ".join(f"{quote_ident(schema)}.{name}" for (name,) in tables)
        cursor.execute(f"LOCK TABLE {names} IN ACCESS SHARE MODE")


@contextlib.contextmanager
def sql_dump_stream(
    schema: str, *, snapshot_id: str, tools: PgTools | None = None, app_name: str = "respaldo-dump"
) -> Iterator[IO[bytes]]:
    """Yield the schema's plain SQL script, as seen by the exported snapshot ``snapshot_id``.

    The rows stream from the server as they are read (memory stays flat whatever the
    clinic's size): in this process for a small clinic, through ``psql`` (``copyout``, given
    ``tools``) past :data:`copyout.PSQL_ROWS` estimated rows. Raises DumpError if the snapshot
    or the tables cannot be had.
    """
    try:
        conn = connect_separately(autocommit=False, application_name=app_name)
    except psycopg.Error as exc:
        raise DumpError(f"could not connect to take the dump: {exc}") from exc
    with conn:
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            conn.execute("SET client_encoding = 'UTF8'")
            conn.execute("SELECT pg_catalog.set_config('search_path', '', false)")
            conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", [f"{conf.lock_wait_timeout_ms}ms"])
            cursor = conn.cursor()
            _lock_tables(cursor, schema)
            defs = read_definitions(cursor, schema)
        except psycopg.Error as exc:
            raise DumpError(f"the clinic's definitions could not be read: {exc}") from exc
        rows = None
        if tools is not None and _estimated_rows(cursor, defs) >= copyout.PSQL_ROWS:
            rows = copyout.PsqlRows(tools, schema, defs.tables, snapshot_id, app_name=app_name)
        script = _Script(cursor, defs, rows)
        try:
            yield io.BufferedReader(ChunkReader(iter(script)), 1 << 20)
        except psycopg.Error as exc:
            conn.close()  # a COPY may be under way: drop the session, the server ends it
            raise DumpError(f"the clinic's rows could not be read: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        finally:
            if rows is not None and not script.finished:
                rows.kill()
        if script.finished:
            conn.rollback()
        else:  # the reader stopped half-way through a COPY
            conn.close()
