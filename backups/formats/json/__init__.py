"""The portable ``json`` payload format: the clinic's records (the payload apps' tables) as lossless json.

Written by ``dump`` (``payload`` says the format), loaded by ``load``; uploaded fixtures are
checked by ``fixture``. A restore loads IN PLACE, over the live tables (tables made by the
schema editor would have the model's column order, not the one the migrations left); a
scratch or new clinic's schema is made by ``into`` (the schema editor) or by the tenant
migrations. :data:`FORMAT` is what ``backups.formats`` maps ``"json"`` to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import connection, transaction
from django_tenants.utils import schema_context

from backups import archive
from backups.exceptions import BackupRefused, RestoreRefused
from backups.formats.base import Replacing, RestoreIntoError
from backups.formats.json.dump import json_dump_stream
from backups.formats.json.into import restore_into_json
from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import payload_models
from backups.formats.scratch import check_read_to_the_end
from backups.models import Backup
from backups.postgres import SchemaSnapshot

__all__ = ["FORMAT", "JsonDumper", "JsonFormat"]


def _payload_tables() -> set[str]:
    return {model._meta.db_table for model in payload_models()}


@dataclass
class JsonDumper:
    """The clinic's records (the payload apps' tables), as lossless json."""

    dump_tool: str = "json"
    payload: str | None = None
    written: dict[str, int] = field(default_factory=dict)

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]:
        payload_tables = _payload_tables()
        return {table: rows for table, rows in snap.table_counts.items() if table in payload_tables}

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]:
        return json_dump_stream(schema, snap.snapshot_id, self.written)

    def check(self, tables: dict[str, int]) -> None:
        if self.written != tables:
            raise BackupRefused("json_export_mismatch", wrote=self.written, expected=tables)


class JsonFormat:
    """The payload apps' tables only (no users, sessions nor migrations), as json."""

    name = "json"
    label = "JSON"
    in_place = True
    carries_schema = False
    holds_accounts = False

    def dumper(self) -> JsonDumper:
        """A new dumper (it counts the rows it writes, checked after the stream)."""
        return JsonDumper()

    def tools_for(self, manifest: dict) -> None:
        """A json payload needs no client tools."""
        return None

    def replace_live(
        self, payload: archive.ArchiveReader, manifest: dict, *, schema: str, tools: Any, hooks: Replacing
    ) -> None:
        """The clinic's payload tables emptied and loaded with COPY, in one transaction of Django's
        connection that records the outcome (in place: see the module)."""
        with schema_context(schema), transaction.atomic():
            with connection.cursor() as cursor:
                taken = hooks.take_sessions(cursor, schema, _payload_tables())
            load_json_payload(payload, expected_counts=manifest["tables"])
            hooks.read_to_the_end()
            with connection.cursor() as cursor:
                hooks.put_sessions(cursor, schema, taken)
            hooks.restored(None)

    @contextlib.contextmanager
    def into_scratch(
        self, backup: Backup, payload: archive.ArchiveReader, manifest: dict, *, schema: str, app_name: str
    ) -> Iterator[Any]:
        """The payload restored into ``schema`` in a transaction of Django's connection (counts
        checked, read to its authenticated end); yields a cursor of it; always rolled back."""
        try:
            with transaction.atomic():
                restore_into_json(
                    payload, schema=schema, expected_counts=manifest["tables"], source_schema=backup.clinic.schema_name
                )
                check_read_to_the_end(payload, backup)
                try:
                    with connection.cursor() as cursor:
                        yield cursor
                finally:
                    transaction.set_rollback(True)  # the scratch schema is never kept
        except RestoreIntoError as exc:
            raise RestoreRefused("restore_into", detail=str(exc)) from exc
        finally:
            connection.set_schema_to_public()

    def into_new_clinic(
        self,
        payload: archive.ArchiveReader,
        manifest: dict,
        *,
        source_schema: str,
        schema: str,
        tools: Any,
        app_name: str,
        create_schema: Callable[[], None],
        read_to_the_end: Callable[[], None],
    ) -> None:
        """A schema made by ``create_schema`` (the tenant migrations, as a new clinic's), then the
        payload loaded in place, in the caller's transaction."""
        create_schema()
        with schema_context(schema):
            load_json_payload(payload, expected_counts=manifest["tables"])
        read_to_the_end()


FORMAT = JsonFormat()
