"""Reading a clinic's schema out of PostgreSQL, consistently and as a stream.

A dump starts by opening a REPEATABLE READ transaction on its own connection and
exporting its snapshot: the row counts written into the manifest and the payload
(pg_dump ``--snapshot``, or the JSON writer's transaction) then see exactly the same data.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import psycopg
from django.db import connection
from psycopg import sql

from backups.conf import conf
from backups.pg_binaries import PgTools

_PR_SET_PDEATHSIG = 1


class DumpError(Exception):
    """A dump could not be taken; the message carries the tool's own words."""

    code = "dump_failed"  # backups.exceptions renders it, with this text as the detail


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A child tool must not outlive the worker that reads or feeds it (SIGKILL included).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "options": "PGOPTIONS",
}


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Start a PostgreSQL client tool that dies with the worker that started it."""
    return subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs)


def libpq_environment() -> dict[str, str]:
    """Environment for pg_dump/pg_restore/psql pointing at the default database.

    Built from the same parameters Django connects with; the password travels in the
    environment, never on the command line.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in connection.get_connection_params().items():
        if key in LIBPQ_ENV and value not in (None, ""):
            env[LIBPQ_ENV[key]] = str(value)
    env["PGAPPNAME"] = "respaldo"
    return env


def connect_separately(**kwargs) -> psycopg.Connection:
    """A new psycopg connection to the default database, outside Django's connection."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params.pop("server_side_binding", None)
    return psycopg.connect(**params, **kwargs)


def schema_exists(schema: str) -> bool:
    """True when the schema is present in the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        return cursor.fetchone() is not None


@dataclass
class SchemaSnapshot:
    """An open, exported REPEATABLE READ snapshot and what it saw of one schema."""

    snapshot_id: str
    table_counts: dict[str, int]
    migrations: dict[str, list[str]]
    server_version: str


def _table_counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
        [schema],
    ).fetchall()
    counts = {}
    for (table,) in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[table] = conn.execute(query).fetchone()[0]
    return counts


def _migrations(conn: psycopg.Connection, schema: str) -> dict[str, list[str]]:
    query = sql.SQL("SELECT app, name FROM {}.django_migrations ORDER BY app, name").format(sql.Identifier(schema))
    applied: dict[str, list[str]] = {}
    for app, name in conn.execute(query).fetchall():
        applied.setdefault(app, []).append(name)
    return applied


@contextlib.contextmanager
def schema_snapshot(schema: str) -> Iterator[SchemaSnapshot]:
    """Open a read-only REPEATABLE READ snapshot of ``schema`` and keep it open while in use."""
    with connect_separately(autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        lock_wait = conf.lock_wait_timeout_ms
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_wait}ms")))
        snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        yield SchemaSnapshot(
            snapshot_id=snapshot_id,
            table_counts=_table_counts(conn, schema),
            migrations=_migrations(conn, schema),
            server_version=version,
        )
        conn.rollback()


@contextlib.contextmanager
def pg_dump_stream(tools: PgTools, *, schema: str, snapshot_id: str) -> Iterator[IO[bytes]]:
    """Run pg_dump for one schema and yield its stdout, a custom-format dump.

    Dumps with ``-Z0``: compression happens later in the pipeline (zstd is several times
    faster than pg_dump's zlib). On leaving, waits for pg_dump and raises DumpError with
    its stderr if it failed.
    """
    lock_wait = conf.lock_wait_timeout_ms
    args = [
        tools.pg_dump,
        "--format=custom",
        "--compress=0",
        f'--schema="{schema}"',
        "--no-owner",
        "--no-privileges",
        f"--snapshot={snapshot_id}",
        f"--lock-wait-timeout={lock_wait}",
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = spawn(args, stdout=subprocess.PIPE, stderr=stderr, env=libpq_environment())
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        code = proc.wait()
        if code != 0:
            stderr.seek(0)
            message = stderr.read().decode("utf-8", "replace").strip()
            raise DumpError(f"pg_dump failed (exit status {code}): {message or 'no message'}")
