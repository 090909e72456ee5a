"""Writing a pg payload: ``pg_dump --format=custom -Z0`` of one schema, read from an exported snapshot."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO

from backups.conf import conf
from backups.postgres import DumpError, PgTools, libpq_environment, spawn

# pg_dump reads the whole database's catalog, however few schemas it dumps: its cost grows with
# the number of clinics. On analyzed catalogs PostgreSQL 16 plans some of its catalog queries as
# nested loops (its materialized-view dependency query alone: 8 s at 1,000 clinics); with nested
# loops off they run as hash joins: one small clinic's dump at 1,000 clinics went from 8.3 s to
# 1.0 s, byte-identical once restored to SQL (bench: the scale group, issue 28). It only changes
# plans of pg_dump's own session (its COPYs have no joins), never the dump.
PG_DUMP_SESSION_OPTIONS = "-c enable_nestloop=off"


def pg_dump_environment() -> dict[str, str]:
    """libpq's environment for pg_dump: the database's, plus our session options after any of its own."""
    env = libpq_environment()
    env["PGOPTIONS"] = " ".join(filter(None, [env.get("PGOPTIONS", ""), PG_DUMP_SESSION_OPTIONS]))
    return env


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
        proc = spawn(args, stdout=subprocess.PIPE, stderr=stderr, env=pg_dump_environment())
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
