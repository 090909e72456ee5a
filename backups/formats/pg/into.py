"""A pg payload restored into a NEW schema: ``pg_restore -f -``'s script run through psycopg
(``script``) with the schema name rewritten (``rewrite``), inside the caller's transaction.

What drills, comparisons, patient picks, clones and the normal pg restore itself (into
``<clinic>__restoring``, then :func:`swap_schema`) run. Why a rewrite, and the evidence that
it neither locks nor touches the live clinic: ``docs/decisions/restore-into.md``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any

import psycopg

from backups.exceptions import RestoreRefused
from backups.formats import scratch
from backups.formats.base import DEFAULT_LOCK_TIMEOUT_MS, RestoreIntoError, quote_ident
from backups.formats.pg import script as pg_script
from backups.formats.pg.rewrite import RewritingCursor, SchemaRewriter, rewrite_schema
from backups.formats.scratch import (
    STAGING_SUFFIX,
    check_isolated,
    check_name,
    put_back,
    refuse_existing,
    schema_oid,
    session_settings,
)
from backups.formats.scratch import check_untouched as _check_untouched  # a name of this module: tests replace it
from backups.postgres import SCHEMA_TABLES, PgTools, libpq_environment, spawn

__all__ = [
    "OLD_SCHEMA_SUFFIX",
    "STAGING_SUFFIX",
    "RestoreIntoError",
    "SchemaRewriter",
    "check_counts",
    "restore_into_pg",
    "rewrite_schema",
    "rolled_back",
    "run_pg_restore",
    "swap_schema",
]

OLD_SCHEMA_SUFFIX = "__before_restore"


def restore_into_pg(
    payload: IO[bytes],
    *,
    source_schema: str,
    schema: str,
    expected_counts: dict[str, int],
    tools: PgTools,
    cursor: psycopg.Cursor,
    plain: bool = False,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    stderr: IO[bytes] | None = None,
    count_check: Callable[..., None] | None = None,
    app_name: str = "respaldo-restore-into",
) -> dict[str, int]:
    """Restore a ``pg_dump --schema=<source_schema>`` custom-format payload (or, ``plain``, the
    plain SQL script ``sqldump`` writes) as the NEW schema ``schema``.

    Runs on ``cursor``, inside the transaction its connection has open (the caller commits or
    rolls back; nothing is committed here). Never locks nor changes ``source_schema``. Raises
    :class:`RestoreIntoError` (``schema`` exists, the script refers to something it cannot
    move, pg_restore failed, a check failed), :class:`backups.formats.pg.script.ScriptError` or a
    psycopg error; after any of them the caller must roll back. The session settings the
    script changes (``search_path``, ``lock_timeout``...) are put back as they were. Returns
    {table: rows}. pg_restore's messages go to ``stderr`` if given. ``count_check(cursor,
    schema, expected_counts, loaded=...)``, if given, replaces this module's own count check,
    so that a mismatch raises the caller's error (``check_counts`` below).
    ``loaded`` is the rows each table received, from the server's own COPY counts: the tables
    are not counted again after the load. ``app_name`` names pg_restore's process (``PGAPPNAME``).
    """
    check_name(source_schema, "The backup's schema")
    check_name(schema, "The target schema")
    if schema == source_schema:
        raise RestoreIntoError("the target schema must be a new schema, not the backup's own")
    if cursor.connection.autocommit:
        raise RestoreIntoError("restore_into_pg runs inside the caller's transaction (autocommit is on)")
    saved = session_settings(cursor)
    cursor.execute("SELECT pg_catalog.set_config('lock_timeout', %(value)s, true)", {"value": f"{lock_timeout_ms}ms"})
    refuse_existing(cursor, schema)
    live_oid = schema_oid(cursor, source_schema)
    rewriter = SchemaRewriter(source_schema, schema, lock_timeout_ms)
    script_cursor = RewritingCursor(cursor, rewriter)
    with contextlib.ExitStack() as stack:
        if stderr is None:
            stderr = stack.enter_context(tempfile.TemporaryFile())
        if plain:
            pg_script.run_script(script_cursor, payload)
        else:
            run_pg_restore(script_cursor, payload, tools, stderr, app_name=app_name)
    if rewriter.schemas_created != 1:
        raise RestoreIntoError(f"the backup does not hold the schema {source_schema!r}; nothing was restored")
    put_back(cursor, saved)
    _check_untouched(cursor, source_schema, live_oid)
    check_isolated(cursor, schema)
    if count_check is not None:
        count_check(cursor, schema, expected_counts, loaded=script_cursor.copied)
        return dict(expected_counts)
    return scratch.check_row_counts(cursor, schema, expected_counts, exact_tables=True, loaded=script_cursor.copied)


def check_counts(cursor: psycopg.Cursor, schema: str, tables: dict[str, int], *, loaded: dict[str, int]) -> None:
    """Inside the restoring transaction: the schema holds exactly the manifest's tables and rows.

    ``loaded`` is the rows each table received, as the server counted them for each COPY of
    the script (``RewritingCursor.copied``); a table with no COPY received none. The script
    is pg_restore's, from an authenticated archive: COPY is the only way it fills a table, and
    nothing else in the transaction writes to the new schema, so this is ``count(*)`` without
    reading every table again (0.1 s at size S, 0.4 s at M).
    """
    found = {name for (name,) in cursor.execute(SCHEMA_TABLES, {"schema": schema})}
    if found != set(tables):
        missing, extra = sorted(set(tables) - found), sorted(found - set(tables))
        raise RestoreRefused(
            "count_mismatch",
            "table_count_mismatch",
            found=len(found),
            listed=len(tables),
            missing=", ".join(missing) or "-",
            extra=", ".join(extra) or "-",
        )
    for table, expected in sorted(tables.items()):
        count = loaded.get(table, 0)
        if count != expected:
            raise RestoreRefused("count_mismatch", "row_count_mismatch", table=table, count=count, expected=expected)


def run_pg_restore(
    cursor: psycopg.Cursor, payload: IO[bytes], tools: PgTools, stderr: IO[bytes], *, app_name: str
) -> None:
    """Feed the payload to ``pg_restore -f -`` and run the script it writes on ``cursor``."""
    pg_restore = spawn(
        [tools.pg_restore, "--no-owner", "--no-privileges", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=libpq_environment() | {"PGAPPNAME": app_name},
    )
    feeder = _Feeder(payload, pg_restore.stdin)
    try:
        pg_script.run_script(cursor, pg_restore.stdout)
    except BaseException:
        pg_restore.kill()
        raise
    finally:
        pg_restore.stdout.close()
        code = pg_restore.wait()
        feeder.join()
        # A damaged payload is the cause of whatever pg_restore or the script did next.
        if feeder.error is not None:
            raise feeder.error
    if code != 0:
        raise rolled_back("pg_restore", stderr)


class _Feeder:
    """Copies the archive's payload into pg_restore's stdin from a thread; keeps its error."""

    def __init__(self, payload: IO[bytes], stdin: IO[bytes]) -> None:
        self.error: BaseException | None = None
        self._payload, self._stdin = payload, stdin
        self._thread = threading.Thread(target=self._run, name="respaldo-restore-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            shutil.copyfileobj(self._payload, self._stdin, 1 << 20)
        except BrokenPipeError:
            pass  # pg_restore stopped: its exit status says why
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self._stdin.close()

    def join(self) -> None:
        self._thread.join()


def rolled_back(tool: str, stderr_file: IO[bytes], *, text: str = "") -> RestoreRefused:
    stderr_file.seek(0)
    messages = [m for m in (text.strip(), stderr_file.read().decode("utf-8", "replace").strip()[-2000:]) if m]
    return RestoreRefused("rolled_back", "restore_rolled_back", tool=tool, detail=" | ".join(messages) or "-")


def swap_schema(cursor: Any, *, live: str, replacement: str, old_suffix: str = OLD_SCHEMA_SUFFIX) -> None:
    """In the caller's transaction: ``replacement`` becomes ``live``; the old ``live`` is dropped.

    For a pg restore: the whole schema (users, migrations included) is the backup's; the normal
    restore first puts the live sessions into ``replacement`` (``backups.services.sessions``).
    Takes an AccessExclusiveLock on every live table (waits up to the session's lock_timeout).
    """
    check_name(live, "The clinic schema")
    check_name(replacement, "The restored schema")
    old = quote_ident(live + old_suffix)
    cursor.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")
    cursor.execute(f"ALTER SCHEMA {quote_ident(live)} RENAME TO {old}")
    cursor.execute(f"ALTER SCHEMA {quote_ident(replacement)} RENAME TO {quote_ident(live)}")
    cursor.execute(f"DROP SCHEMA {old} CASCADE")
