"""Writing a pg payload: ``pg_dump --format=custom -Z0`` of one schema, read from an exported snapshot."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO

from backups.conf import conf
from backups.postgres import DumpError, PgTools, libpq_environment, spawn


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
