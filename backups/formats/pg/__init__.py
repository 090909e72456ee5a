"""The ``pg`` payload format: ``pg_dump --format=custom -Z0`` of the clinic's whole schema, both ways.

Dump (``dump``): pg_dump reads one schema from an exported snapshot as a stream (the
pipeline compresses with zstd, on the other core: several times faster than pg_dump's zlib).
Read back (``into``): the payload goes to ``pg_restore -f -`` and the plain script it writes
runs through ``script`` (psycopg, never psql) with the schema name rewritten (``rewrite``),
always into a NEW schema: a scratch one, a new clinic's, or ``<clinic>__restoring`` that is
then swapped in for the live clinic. :data:`FORMAT` is what ``backups.formats`` maps ``"pg"`` to.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from backups import archive, postgres
from backups.conf import conf
from backups.exceptions import RestoreRefused
from backups.formats.base import Replacing, RestoreIntoError
from backups.formats.pg.catalog import unsupported
from backups.formats.pg.dump import pg_dump_stream
from backups.formats.pg.into import (
    OLD_SCHEMA_SUFFIX,
    STAGING_SUFFIX,
    check_counts,
    restore_into_pg,
    rolled_back,
    swap_schema,
)
from backups.formats.pg.script import ScriptError
from backups.formats.pg.sqldump import sql_dump_stream
from backups.formats.scratch import check_read_to_the_end
from backups.models import Backup
from backups.postgres import PgTools, SchemaSnapshot, find_pg_tools

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "OLD_SCHEMA_SUFFIX", "PgDumper", "PgFormat", "check_counts", "rolled_back"]


@dataclass
class PgDumper:
    """Every table of the schema: as a plain SQL script read from the catalog (``sql``, the
    default), or by ``pg_dump --format=custom -Z0`` (``custom``: ``BACKUPS_PG_PAYLOAD``, and for
    a schema holding objects the catalog reader does not carry)."""

    tools: PgTools
    payload: str = "sql"
    not_carried: list[str] = field(default_factory=list)  # why this backup fell back to pg_dump

    @property
    def dump_tool(self) -> str:
        return self.tools.version

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]:
        if self.payload == "sql" and snap.conn is not None:
            with snap.conn.cursor() as cursor:
                self.not_carried = unsupported(cursor, snap.schema)
            if self.not_carried:
                logger.warning(
                    "Clinic schema %s holds objects the SQL payload does not carry (%s): backed up by pg_dump",
                    snap.schema,
                    "; ".join(self.not_carried),
                )
                self.payload = "custom"
        return snap.table_counts

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]:
        if self.payload == "sql":
            return sql_dump_stream(schema, snapshot_id=snap.snapshot_id, tools=self.tools)
        return pg_dump_stream(self.tools, schema=schema, snapshot_id=snap.snapshot_id)

    def check(self, tables: dict[str, int]) -> None:
        """pg_dump's own exit status was checked when its stream closed; the script's rows are counted at restore."""


def plain_script(manifest: dict) -> bool:
    """Whether the manifest's pg payload is a plain SQL script (older ones are ``pg_dump -Fc`` files)."""
    return (manifest.get("postgresql") or {}).get("payload") == "sql"


def _checking(hooks: Replacing) -> Callable[..., None]:
    """:func:`check_counts`, first telling the restore that the counts are being checked."""

    def check(cursor: psycopg.Cursor, schema: str, tables: dict[str, int], *, loaded: dict[str, int]) -> None:
        hooks.checking()
        check_counts(cursor, schema, tables, loaded=loaded)

    return check


class PgFormat:
    """The whole schema (users, sessions, migrations included), by pg_dump and pg_restore."""

    name = "pg"
    label = "PostgreSQL"
    in_place = False
    carries_schema = True
    holds_accounts = True

    def dumper(self) -> PgDumper:
        """A dumper with the client tools of this server (found now: a backup fails before it starts)."""
        payload = conf.pg_payload
        if payload not in ("sql", "custom"):
            raise ImproperlyConfigured(f"BACKUPS_PG_PAYLOAD must be 'sql' or 'custom', not {payload!r}")
        return PgDumper(find_pg_tools(), payload=payload)

    def tools_for(self, manifest: dict) -> PgTools:
        """Client tools that can read this backup's payload (pg_restore cannot read a newer pg_dump's)."""
        dump_tool = (manifest.get("postgresql") or {}).get("dump_tool")
        return find_pg_tools(dump_version=str(dump_tool) if dump_tool else None)

    def replace_live(
        self, payload: archive.ArchiveReader, manifest: dict, *, schema: str, tools: PgTools, hooks: Replacing
    ) -> None:
        """The payload restored as ``<clinic>__restoring`` (the live clinic keeps working), then swapped in.

        One transaction on a connection of its own: restore into the staging schema (counts
        checked), the payload's end authenticated, the live sessions carried over, the live
        schema renamed aside, the staging one renamed in, the old one dropped, the outcome
        recorded. The clinic's tables are locked only for the swap.
        """
        staging = schema + STAGING_SUFFIX
        with tempfile.TemporaryFile() as restore_err:
            try:
                with (
                    postgres.connect_separately(autocommit=False, application_name=hooks.app_name) as conn,
                    conn.cursor() as cursor,
                ):
                    cursor.execute("SET client_connection_check_interval = '1s'")
                    restore_into_pg(
                        payload,
                        source_schema=schema,
                        schema=staging,
                        expected_counts=manifest["tables"],
                        tools=tools,
                        plain=plain_script(manifest),
                        cursor=cursor,
                        lock_timeout_ms=hooks.lock_timeout_ms,
                        stderr=restore_err,
                        count_check=_checking(hooks),
                        app_name=hooks.app_name,
                    )
                    hooks.read_to_the_end()
                    hooks.closing()
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{hooks.lock_timeout_ms}ms"])
                    # Whoever is signed in now stays signed in if the restored data still knows them
                    # (the backup's own sessions are of another time).
                    hooks.put_sessions(cursor, staging, hooks.take_sessions(cursor, schema, None))
                    swap_schema(cursor, live=schema, replacement=staging, old_suffix=OLD_SCHEMA_SUFFIX)
                    hooks.restored(cursor)
                    conn.commit()
            except (psycopg.Error, ScriptError, RestoreIntoError) as exc:
                raise rolled_back("the database", restore_err, text=str(exc)) from exc

    @contextlib.contextmanager
    def into_scratch(
        self, backup: Backup, payload: archive.ArchiveReader, manifest: dict, *, schema: str, app_name: str
    ) -> Iterator[psycopg.Cursor]:
        """The payload restored into ``schema`` on a connection of its own (counts checked, read to
        its authenticated end); yields that connection's cursor; always rolled back."""
        tools = self.tools_for(manifest)
        with tempfile.TemporaryFile() as errors:
            try:
                with postgres.connect_separately(autocommit=False, application_name=app_name) as conn:
                    try:
                        with conn.cursor() as cursor:
                            restore_into_pg(
                                payload,
                                source_schema=backup.clinic.schema_name,
                                schema=schema,
                                expected_counts=manifest["tables"],
                                tools=tools,
                                plain=plain_script(manifest),
                                cursor=cursor,
                                stderr=errors,
                                count_check=check_counts,
                                app_name=app_name,
                            )
                            check_read_to_the_end(payload, backup)
                            yield cursor
                    finally:
                        conn.rollback()  # the scratch schema is never kept
            except RestoreIntoError as exc:
                raise RestoreRefused("restore_into", detail=str(exc)) from exc
            except (psycopg.Error, ScriptError) as exc:
                raise rolled_back("the database", errors, text=str(exc)) from exc

    def into_new_clinic(
        self,
        payload: archive.ArchiveReader,
        manifest: dict,
        *,
        source_schema: str,
        schema: str,
        tools: PgTools,
        app_name: str,
        create_schema: Callable[[], None],
        read_to_the_end: Callable[[], None],
    ) -> None:
        """The source schema's dump restored as ``schema``, on Django's connection (its transaction).

        The payload makes the schema itself: ``create_schema`` is not called.
        """
        connection.ensure_connection()
        with tempfile.TemporaryFile() as errors:
            try:
                with psycopg.Cursor(connection.connection) as cursor:
                    restore_into_pg(
                        payload,
                        source_schema=source_schema,
                        schema=schema,
                        expected_counts=manifest["tables"],
                        tools=tools,
                        plain=plain_script(manifest),
                        cursor=cursor,
                        stderr=errors,
                        count_check=check_counts,
                        app_name=app_name,
                    )
                read_to_the_end()
            except RestoreIntoError as exc:
                raise RestoreRefused("restore_into", detail=str(exc)) from exc
            except (psycopg.Error, ScriptError) as exc:
                raise rolled_back("the database", errors, text=str(exc)) from exc


FORMAT = PgFormat()
