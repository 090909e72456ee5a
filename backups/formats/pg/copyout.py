"""A big clinic's rows for the SQL payload, copied by psql: C speed, not a Python call per row.

The in-process ``COPY … TO STDOUT`` (psycopg) hands Python one row at a time: ≈ 1 µs a row,
nothing for a small clinic, seconds for one of millions of rows (bench: the S clinic's backup
job took 2× the raw ``pg_dump | zstd | age`` pipe). Past :data:`PSQL_ROWS` estimated rows
(``pg_class.reltuples``), one ``psql`` process copies every table in the backup's exported
snapshot, writing each table's rows then a line ``\\.`` (``\\echo``); COPY's text format escapes
every backslash in the data, so that line can only be the end of a table. The script's own
``COPY … FROM stdin;`` headers are written around them by ``sqldump``, as before.

psql waits at most ``BACKUPS_LOCK_WAIT_TIMEOUT_MS`` for each table: the dump's own connection
holds the tables (``ACCESS SHARE``) meanwhile, and a migration queued behind it would otherwise
keep psql waiting for ever.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator

from backups.conf import conf
from backups.formats.pg.definitions import TableData
from backups.postgres import DumpError, PgTools, libpq_environment, spawn

__all__ = ["PSQL_ROWS", "PsqlRows"]

PSQL_ROWS = 100_000  # estimated rows of a clinic past which psql copies its data
_READ = 1 << 20
_END = b"\\.\n"


class PsqlRows:
    """One psql process copying ``tables`` in order, inside the exported snapshot ``snapshot_id``."""

    def __init__(
        self, tools: PgTools, schema: str, tables: list[TableData], snapshot_id: str, *, app_name: str
    ) -> None:
        lines = [
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
            "SET TRANSACTION SNAPSHOT '" + snapshot_id.replace("'", "''") + "';",
            f"SET LOCAL lock_timeout = '{int(conf.lock_wait_timeout_ms)}ms';",
        ]
        for table in tables:
            lines += [table.copy_to(schema) + ";", "\\echo '\\\\.'"]
        lines.append("COMMIT;")
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close() or kill()
        env = libpq_environment() | {"PGAPPNAME": app_name, "PGCLIENTENCODING": "UTF8"}
        self._proc = spawn(
            [tools.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._proc.stdin.write(("\n".join(lines) + "\n").encode())
        self._proc.stdin.close()
        self._buffer = b""

    def table(self) -> Iterator[bytes]:
        """The next table's rows (COPY text), in chunks; raises DumpError if psql stopped first."""
        buffer = self._buffer
        while True:
            if buffer.startswith(_END):
                self._buffer = buffer[len(_END) :]
                return
            marker = buffer.find(b"\n" + _END)
            if marker >= 0:
                yield buffer[: marker + 1]
                buffer = buffer[marker + 1 :]
                continue
            last_line = buffer.rfind(b"\n")
            if last_line >= 0:  # keep the unfinished last line: it may be the marker
                yield buffer[: last_line + 1]
                buffer = buffer[last_line + 1 :]
            data = self._proc.stdout.read1(_READ)
            if not data:
                self.close()
                raise DumpError("psql stopped before the end of a table (no message)")
            buffer += data

    def close(self) -> None:
        """Wait for psql; raise DumpError with its own words if it failed."""
        if self._proc.poll() is None:
            self._proc.stdout.read()
        code = self._proc.wait()
        self._proc.stdout.close()
        self._stderr.seek(0)
        message = self._stderr.read().decode("utf-8", "replace").strip()
        self._stderr.close()
        if code != 0:
            raise DumpError(f"psql failed copying the clinic's rows (exit status {code}): {message or 'no message'}")

    def kill(self) -> None:
        """Stop psql now (the dump is abandoned)."""
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()
