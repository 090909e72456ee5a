"""A verified backup restored into a scratch schema that is never kept: what drills and the
selective restore's preview read, while the live clinic is neither touched nor locked."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import psycopg

from backups import archive, postgres
from backups.exceptions import RestoreRefused
from backups.formats import pg
from backups.formats.pg_script import ScriptError
from backups.formats.restore_into import RestoreIntoError, restore_into_pg
from backups.models import Backup
from backups.postgres import PgTools, find_pg_tools


def tools_for(manifest: dict) -> PgTools | None:
    """Client tools that can read this backup's pg payload (None for a json payload)."""
    if manifest["payload_format"] != Backup.Format.PG:
        return None
    dump_tool = (manifest.get("postgresql") or {}).get("dump_tool")
    return find_pg_tools(dump_version=str(dump_tool) if dump_tool else None)


def check_read_to_the_end(payload: archive.ArchiveReader, backup: Backup) -> None:
    """The payload was read to its authenticated end, and it is the catalog's object (before COMMIT)."""
    if payload.read(1) or payload.summary is None:
        raise RestoreRefused("archive_extra_data", backup=backup.pk)
    if payload.summary.archive_sha256 != backup.sha256:
        raise RestoreRefused("archive_changed", "archive_changed_during_restore", backup=backup.pk)


@contextlib.contextmanager
def scratch_pg(
    backup: Backup, payload: archive.ArchiveReader, manifest: dict, *, schema: str, app_name: str
) -> Iterator[psycopg.Cursor]:
    """The backup's pg payload restored into ``schema`` on a connection of its own (counts checked,
    read to its authenticated end); yields that connection's cursor; always rolled back."""
    tools = tools_for(manifest)
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
                            cursor=cursor,
                            stderr=errors,
                            count_check=pg.check_counts,
                            app_name=app_name,
                        )
                        check_read_to_the_end(payload, backup)
                        yield cursor
                finally:
                    conn.rollback()  # the scratch schema is never kept
        except RestoreIntoError as exc:
            raise RestoreRefused("restore_into", detail=str(exc)) from exc
        except (psycopg.Error, ScriptError) as exc:
            raise pg.rolled_back("the database", errors, text=str(exc)) from exc
