"""What every payload format is: the :class:`Format` protocol, and what all formats share.

A format (``backups.formats.pg``, ``backups.formats.json``) is one object that writes a
payload (:class:`Dumper`) and reads one back: over the live clinic (``replace_live``), into
a scratch schema that is always rolled back (``into_scratch``), or as a new clinic's schema
(``into_new_clinic``). It knows nothing of jobs or people: what a restore must record on the
way (its phase, its outcome, the live sessions) reaches it as :class:`Replacing` callbacks.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

from backups import archive
from backups.models import Backup
from backups.postgres import SchemaSnapshot

DEFAULT_LOCK_TIMEOUT_MS = 10_000


class RestoreIntoError(Exception):
    """The backup cannot be restored into that schema, or what was restored is not the backup."""

    code = "restore_into"  # backups.exceptions renders it, with this text as the detail


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (a payload made as it is read)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class Dumper(Protocol):
    """What a backup asks of a payload format."""

    dump_tool: str
    payload: str | None  # the manifest's ``postgresql.payload`` (pg: ``custom`` or ``sql``), if it says

    def tables(self, snap: SchemaSnapshot) -> dict[str, int]: ...

    def stream(self, schema: str, snap: SchemaSnapshot) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def check(self, tables: dict[str, int]) -> None: ...


class Replacing(Protocol):
    """What a restore over the live clinic records on the way (implemented by the restore service).

    ``cursor``: a DB-API cursor in the restoring transaction, or None for Django's connection.
    """

    app_name: str  # the restoring connection's application_name
    lock_timeout_ms: int  # how long the swap waits for the clinic's tables

    def read_to_the_end(self) -> None:
        """The payload was read to its authenticated end and is the catalog's object (before COMMIT)."""

    def checking(self) -> None:
        """The restored row counts are about to be checked against the manifest."""

    def closing(self) -> None:
        """The clinic's tables are about to be locked (its pages close); nothing else touched the restore's row yet."""

    def take_sessions(self, cursor: Any, schema: str, replaced: set[str] | None) -> Any:
        """The live sessions of ``schema``, if restoring ``replaced`` (None: every table) replaces them."""

    def put_sessions(self, cursor: Any, schema: str, taken: Any) -> None:
        """The sessions ``take_sessions`` gave put in ``schema`` (nothing if it gave None)."""

    def restored(self, cursor: Any | None) -> None:
        """The data is in place, in the transaction about to commit: record the outcome (and the files)."""


class Format(Protocol):
    """One payload format: everything a backup, restore, drill, comparison, pick or clone asks of it."""

    name: str  # the ``Backup.Format`` value, as in manifests
    label: str  # as shown in the console
    in_place: bool  # its restore loads over the live tables (readers wait from the load to the commit)
    carries_schema: bool  # the payload holds the schema as the backup's migrations left it
    holds_accounts: bool  # the payload holds the clinic's users and sessions

    def dumper(self) -> Dumper:
        """What writes a payload (finding its tools now, so a backup fails before it starts)."""

    def tools_for(self, manifest: dict) -> Any:
        """What reading this manifest's payload needs, found now (so a job fails before it starts)."""

    def replace_live(
        self, payload: archive.ArchiveReader, manifest: dict, *, schema: str, tools: Any, hooks: Replacing
    ) -> None:
        """The clinic ``schema``'s data replaced by the payload, in one transaction that commits here."""

    def into_scratch(
        self, backup: Backup, payload: archive.ArchiveReader, manifest: dict, *, schema: str, app_name: str
    ) -> contextlib.AbstractContextManager[Any]:
        """The payload restored into the new ``schema`` (checked, read to its end); yields a cursor
        of the transaction holding it, always rolled back."""

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
        """The payload as the new clinic ``schema``, in the caller's transaction on Django's connection.

        ``create_schema`` makes an empty clinic schema (the tenant migrations), for a format
        whose payload does not carry one.
        """
