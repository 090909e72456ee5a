"""PostgreSQL as the backups use it: client tools, child processes, connections, snapshots.

Client tools: pg_dump refuses to dump a server newer than itself, and a dump must be
restored with a pg_restore at least as new as the pg_dump that wrote it. We look, in order,
in ``BACKUPS_PG_BIN_DIR`` (set automatically for the embedded server), then in ``PATH``,
Debian's ``/usr/lib/postgresql/<major>/bin`` and the tools bundled with the embedded
server's package, and pick the oldest set whose major version is at least the server's
(and the dump's, when restoring).

Snapshots: a dump starts by opening a REPEATABLE READ transaction on its own connection and
exporting its snapshot: the row counts written into the manifest and the payload (pg_dump
``--snapshot``, or the JSON writer's transaction) then see exactly the same data.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from django.db import connection
from psycopg import sql

from backups.conf import conf

TOOLS = ("pg_dump", "pg_restore", "psql")
VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class PgToolsError(Exception):
    """No usable client tools were found; the message says what was found and what is needed."""

    code = "pg_tools"  # backups.exceptions renders it, with this text as the detail


@dataclass(frozen=True)
class PgTools:
    """Paths of one matching set of client tools, and their major version."""

    bin_dir: Path
    major: int
    version: str

    @property
    def pg_dump(self) -> str:
        return str(self.bin_dir / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.bin_dir / "pg_restore")

    @property
    def psql(self) -> str:
        return str(self.bin_dir / "psql")


def tool_version(executable: str | Path) -> tuple[int, str]:
    """Return (major, full version text) of a PostgreSQL client tool."""
    out = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=30)
    match = VERSION_RE.search(out.stdout)
    if out.returncode != 0 or not match:
        raise PgToolsError(f"{executable} --version did not report a PostgreSQL version: {out.stdout or out.stderr}")
    major = int(match.group(1))
    return major, match.group(0).split()[-1]


def _major_of(version: str) -> int:
    """The major number of a version text such as "16.2" or "15.19 (Debian 15.19-0+deb12u1)"."""
    match = re.match(r"\s*(\d+)", str(version))
    if not match:
        raise PgToolsError(f"Unrecognised PostgreSQL version {str(version)[:40]!r} in the backup's manifest.")
    return int(match.group(1))


def server_major_version() -> tuple[int, str]:
    """Return (major, "16.2"-style text) of the server behind the default connection."""
    connection.ensure_connection()
    num = connection.pg_version  # e.g. 160002 or 150020
    major = num // 10000
    return major, f"{major}.{num % 10000}"


def _bundled_dirs() -> list[Path]:
    """The tools bundled with the embedded server's package (PostgreSQL 16), if installed."""
    # Found without importing pgserver, whose import has side effects (runtime folders).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"]


def _candidate_dirs(configured: str | None) -> list[Path]:
    if configured:
        return [Path(configured)]
    dirs: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(os.path.realpath(on_path)).parent)
    dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    dirs += _bundled_dirs()
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_pg_tools(
    *, bin_dir: str | None = None, server_major: int | None = None, dump_version: str | None = None
) -> PgTools:
    """Return client tools usable against the server, or raise :class:`PgToolsError`.

    ``bin_dir`` defaults to ``settings.BACKUPS_PG_BIN_DIR``; when it is set, only that
    folder is considered. ``server_major`` defaults to the connected server's version.
    ``dump_version`` (e.g. "16.2", from a backup's manifest) asks for tools that can also
    read a dump written by that pg_dump: pg_restore cannot read a newer pg_dump's archives.
    """
    if server_major is None:
        server_major, server_text = server_major_version()
    else:
        server_text = str(server_major)
    dump_major = _major_of(dump_version) if dump_version else 0
    configured = bin_dir if bin_dir is not None else conf.pg_bin_dir
    found: list[tuple[int, str, Path]] = []
    for directory in _candidate_dirs(configured):
        if not all((directory / tool).is_file() and os.access(directory / tool, os.X_OK) for tool in TOOLS):
            continue
        major, text = tool_version(directory / "pg_dump")
        found.append((major, text, directory))
    usable = sorted((f for f in found if f[0] >= max(server_major, dump_major)), key=lambda f: f[0])
    if usable:
        major, text, directory = usable[0]
        return PgTools(bin_dir=directory, major=major, version=text)
    where = f"in BACKUPS_PG_BIN_DIR={configured}" if configured else "on PATH, in /usr/lib/postgresql or pgserver"
    if dump_major > server_major and any(f[0] >= server_major for f in found):
        newest = max(found, key=lambda f: f[0])
        raise PgToolsError(
            f"This backup was made with pg_dump {dump_version}, which pg_restore {newest[1]} "
            f"(the newest found {where}) cannot read: set BACKUPS_PG_BIN_DIR to PostgreSQL {dump_major} "
            "(or newer) client tools."
        )
    if not found:
        raise PgToolsError(
            f"No pg_dump/pg_restore/psql found {where}; the database server is PostgreSQL {server_text}. "
            f"Install the PostgreSQL {server_major} client tools or set BACKUPS_PG_BIN_DIR."
        )
    seen = ", ".join(f"pg_dump {text} ({directory})" for _, text, directory in found)
    raise PgToolsError(
        f"The database server is PostgreSQL {server_text} but the newest client tools found {where} are older: "
        f"{seen}. Install the PostgreSQL {server_major} client tools or set BACKUPS_PG_BIN_DIR."
    )


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
    schema: str
    table_counts: dict[str, int]
    migrations: dict[str, list[str]]
    server_version: str
    # The snapshot's own connection, to read more of what it saw (the file names of its rows)
    # from the thread that opened it, before the dump starts.
    conn: psycopg.Connection | None = None


# The tables of one schema (%(schema)s), by name. Found from pg_depend's entries pointing at the
# schema (by index), not by pg_class.relnamespace, which has no index: that would read every
# clinic's relations, and a clinic's backup and restore would cost more with every clinic.
SCHEMA_TABLES = (
    "SELECT c.relname FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid "
    "WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
    "AND d.refobjid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s) "
    "AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.relkind IN ('r', 'p') ORDER BY c.relname"
)


def _table_counts(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    tables = conn.execute(SCHEMA_TABLES, {"schema": schema}).fetchall()
    counts = {}
    for (table,) in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[table] = conn.execute(query).fetchone()[0]
    return counts


def table_counts(schema: str) -> dict[str, int]:
    """Rows per table of ``schema`` now, counted on Django's own connection ({table: rows})."""
    connection.ensure_connection()
    return _table_counts(connection.connection, schema)


def applied_migrations(conn: psycopg.Connection, schema: str) -> dict[str, list[str]]:
    """The migrations ``schema``'s ``django_migrations`` records, {app: [names]}."""
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
            schema=schema,
            table_counts=_table_counts(conn, schema),
            migrations=applied_migrations(conn, schema),
            server_version=version,
            conn=conn,
        )
        conn.rollback()
