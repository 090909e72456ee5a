"""Payload formats, picked from a mapping (like django-dbbackup's connectors), never by an ``if``.

Each format's dump and restore live together: ``pg`` (pg_dump custom format; its restore in
``pg``, ``pg_script``, ``pg_rewrite``, ``restore_into``) and ``json`` (``json/``).
``dumper_for(payload_format)`` returns what a backup needs of a format: the tables its
payload holds, the tool that wrote it, the payload stream, and a check after the stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

from backups.exceptions import BackupRefused
from backups.formats import pg
from backups.formats.json.dump import json_dump_stream
from backups.formats.json.payload import payload_models
from backups.postgres import PgTools, SchemaSnapshot, find_pg_tools


class Dumper(Protocol):
    """What a backup asks of a payload format."""

    dump_tool: str

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]: ...

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def check(self, tables: dict[str, int]) -> None: ...


@dataclass
class PgDumper:
    """Every table of the schema, by ``pg_dump --format=custom -Z0``."""

    tools: PgTools

    @property
    def dump_tool(self) -> str:
        return self.tools.version

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]:
        return snap.table_counts

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]:
        return pg.pg_dump_stream(self.tools, schema=schema, snapshot_id=snap.snapshot_id)

    def check(self, tables: dict[str, int]) -> None:
        """pg_dump's own exit status was checked when its stream closed."""


@dataclass
class JsonDumper:
    """The clinic's records (the payload apps' tables), as lossless json."""

    dump_tool: str = "json"
    written: dict[str, int] = field(default_factory=dict)

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]:
        payload_tables = {model._meta.db_table for model in payload_models()}
        return {table: rows for table, rows in snap.table_counts.items() if table in payload_tables}

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]:
        return json_dump_stream(schema, snap.snapshot_id, self.written)

    def check(self, tables: dict[str, int]) -> None:
        if self.written != tables:
            raise BackupRefused("json_export_mismatch", wrote=self.written, expected=tables)


DUMPERS: dict[str, Callable[[], Dumper]] = {
    "pg": lambda: PgDumper(find_pg_tools()),
    "json": JsonDumper,
}


def dumper_for(payload_format: str) -> Dumper:
    """The dumper of a payload format (finding its tools now, so a backup fails before it starts)."""
    return DUMPERS[payload_format]()
