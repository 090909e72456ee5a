"""Run the plain SQL script that ``pg_restore -f -`` writes, through psycopg, without psql.

Why not psql: a plain script can carry psql meta-commands (``\\! <shell command>``,
CVE-2025-8714), and the psql bundled with the embedded server (16.2) has no ``\\restrict``.
Here nothing is a meta-command: SQL text goes to the server with the simple query protocol,
and each ``COPY ... FROM stdin;`` block goes through the COPY protocol, byte for byte.
A line starting with a backslash outside a COPY block is refused, except the
``\\restrict``/``\\unrestrict`` pair that newer pg_restore releases write around the script.

The script is read as a stream: SQL between COPY blocks is gathered (it is schema DDL, small)
and data is forwarded in blocks of about a megabyte, so memory stays flat whatever the
clinic's size (bounded by its longest row).

The text format of COPY escapes every backslash in the data, so a line that is exactly
``\\.`` can only be the end-of-data marker.
"""

from __future__ import annotations

from typing import IO

import psycopg

_READ = 256 << 10
_END_OF_DATA = b"\\.\n"
_ALLOWED_META = (b"\\restrict ", b"\\unrestrict ")


class ScriptError(Exception):
    """The script holds something this runner does not execute (a psql meta-command)."""


def _is_copy_from_stdin(line: bytes) -> bool:
    return line.startswith(b"COPY ") and line.rstrip(b"\r\n").endswith(b" FROM stdin;")


class _ScriptRunner:
    def __init__(self, cursor: psycopg.Cursor) -> None:
        self.cursor = cursor
        self.pending: list[bytes] = []
        self.statements = 0
        self.copies = 0
        self.copy_header = b""  # the COPY statement found by _run_sql, without its ';'
        self.copy_rest = b""  # what followed that statement's line in the buffer

    def flush_sql(self) -> None:
        text = b"".join(self.pending)
        self.pending.clear()
        if text.strip():
            self.cursor.execute(text)
            self.statements += 1

    def sql_line(self, line: bytes) -> bool:
        """Take one line of SQL; return True when it opens a COPY block."""
        if line.startswith(b"\\"):
            if line.startswith(_ALLOWED_META):
                return False
            raise ScriptError(f"the restore script holds a psql meta-command ({line[:40]!r}); nothing was run")
        if _is_copy_from_stdin(line):
            self.flush_sql()
            return True
        self.pending.append(line)
        return False


def run_script(cursor: psycopg.Cursor, script: IO[bytes]) -> tuple[int, int]:
    """Execute the whole script on ``cursor``'s connection (inside the caller's transaction).

    Returns (SQL batches, COPY blocks) executed. Raises ``ScriptError`` for a meta-command or
    a COPY block without its end marker, and psycopg errors for anything the server refuses.
    """
    runner = _ScriptRunner(cursor)
    buffer = b""
    eof = False
    while True:
        if not eof:
            data = script.read(_READ)
            eof = not data
            buffer += data
        buffer = _run_sql(runner, buffer, eof)
        if buffer is None:  # a COPY block starts at the head of what is left
            buffer = _run_copy(cursor, script, runner)
            continue
        if eof:
            if buffer:
                runner.sql_line(buffer)
            runner.flush_sql()
            return runner.statements, runner.copies


def _run_sql(runner: _ScriptRunner, buffer: bytes, eof: bool) -> bytes | None:
    """Feed whole lines to the runner; return the unfinished rest, or None at a COPY header."""
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            return buffer[start:]
        line = buffer[start : end + 1]
        start = end + 1
        if runner.sql_line(line):
            runner.copy_header = line.rstrip(b"\r\n").removesuffix(b";")
            runner.copy_rest = buffer[start:]
            return None


def _run_copy(cursor: psycopg.Cursor, script: IO[bytes], runner: _ScriptRunner) -> bytes:
    """Stream one COPY block's data to the server; return what follows its end marker."""
    buffer: bytes = runner.copy_rest
    runner.copy_rest = b""
    with cursor.copy(runner.copy_header) as copy:
        while True:
            if buffer.startswith(_END_OF_DATA):
                runner.copies += 1
                return buffer[len(_END_OF_DATA) :]
            marker = buffer.find(b"\n" + _END_OF_DATA)
            if marker >= 0:
                copy.write(buffer[: marker + 1])
                buffer = buffer[marker + 1 :]
                continue
            last_line = buffer.rfind(b"\n")
            if last_line >= 0:  # keep the unfinished last line: it may be the marker
                copy.write(buffer[: last_line + 1])
                buffer = buffer[last_line + 1 :]
            data = script.read(_READ)
            if not data:
                raise ScriptError("the restore script ends inside a COPY block")
            buffer += data
