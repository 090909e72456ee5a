"""Verifying a stored backup before it is used: its SHA-256 against the catalog, this deployment's
authentication, its clinic and the migrations it was made with, and a private verified copy whose
bytes (and only those) a restore, drill, clone or patient pick then reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from collections.abc import Iterator
from typing import IO

from django.db.migrations.loader import MigrationLoader

from backups import archive, storage
from backups.archive.reader import MediaSink
from backups.conf import conf, tenant_app_configs
from backups.exceptions import RestoreRefused
from backups.keys.clinic import manifest_of_other_clinic, reading_identities
from backups.manifest import manifest_check
from backups.models import Backup
from clinics.models import Clinic


def tenant_app_labels() -> set[str]:
    """Labels of the apps whose tables live in a clinic's schema."""
    return {config.label for config in tenant_app_configs()}


def code_migrations() -> set[tuple[str, str]]:
    """Every migration the code knows for the clinic's apps, as (app, name)."""
    labels = tenant_app_labels()
    return {node for node in MigrationLoader(None, ignore_no_migrations=True).graph.nodes if node[0] in labels}


def check_migrations(manifest_migrations: dict[str, list[str]]) -> bool:
    """Refuse a backup from a newer release; return True when it must be migrated forward.

    Only the clinic's own apps count: shared apps' tables are not in a clinic's schema.
    """
    known = code_migrations()
    labels = tenant_app_labels()
    applied = {(app, name) for app, names in manifest_migrations.items() for name in names if app in labels}
    unknown = sorted(applied - known)
    if unknown:
        shown = ", ".join(f"{app}.{name}" for app, name in unknown[:5])
        raise RestoreRefused("newer_release", migrations=shown)
    return bool(known - applied)


def _max_payload_bytes() -> int:
    return conf.max_payload_bytes


class _Tee(io.RawIOBase):
    """Reads ``source`` and writes every byte read to ``copy`` as well."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        super().__init__()
        self._source, self._copy = source, copy

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._copy.write(data)
        return data


@dataclasses.dataclass(frozen=True)
class VerifiedCopy:
    """A private copy of a stored archive (an unnamed 0600 temporary file) and what verifying it found."""

    spool: IO[bytes]
    summary: archive.ArchiveSummary
    backup_id: int

    def open(self, identities: list[str], *, media_sink: MediaSink | None = None) -> archive.ArchiveReader:
        """Read the payload of the verified bytes again, from the start.

        Age authenticates every chunk it decrypts; the MAC and the payload's SHA-256, which
        the verification pass checked over these very bytes, are not computed twice (about
        10 % of a restore's CPU). The archive's end must agree with the verification's summary.
        """
        self.spool.seek(0)
        reader = archive.open_archive(
            self.spool,
            identities=identities,
            max_payload_bytes=_max_payload_bytes(),
            media_sink=media_sink,
            verified=self.summary,
        )
        if reader.manifest != self.summary.manifest:  # cannot happen to a private copy; checked all the same
            reader.close()
            raise RestoreRefused("archive_changed", "archive_changed_during_restore", backup=self.backup_id)
        return reader


@contextlib.contextmanager
def verified_copy(backup: Backup, clinic: Clinic) -> Iterator[tuple[dict, VerifiedCopy]]:
    """Read the stored archive ONCE, verify it, and yield (its manifest, a private copy of those bytes).

    The copy is an unnamed temporary file (0600, gone when closed): what a restore later
    reads (``VerifiedCopy.open``) is exactly what was checked here (SHA-256 against the
    catalog, this deployment's authentication, the manifest), whatever happens to the stored
    object meanwhile.
    """
    with tempfile.TemporaryFile(prefix="respaldo-restore-") as spool:
        summary = _verify(backup, clinic, copy_to=spool)
        spool.flush()
        yield summary.manifest, VerifiedCopy(spool, summary, backup.pk)


def verify_stored(backup: Backup, clinic: Clinic) -> dict:
    """Read the stored object once and return its manifest, or raise: it must be the catalog's
    (SHA-256), authenticated by this deployment's keys, and of ``clinic``."""
    return _verify(backup, clinic).manifest


def _verify(backup: Backup, clinic: Clinic, *, copy_to: IO[bytes] | None = None) -> archive.ArchiveSummary:
    """``verify_stored``, giving the whole summary; ``copy_to`` gets the bytes as they are read."""
    try:
        with storage.open_stored(backup.storage_name) as stream:
            source = _Tee(stream, copy_to) if copy_to is not None else stream
            summary = archive.verify_archive(
                source, identities=reading_identities(clinic), max_payload_bytes=_max_payload_bytes()
            )
    except archive.ArchiveWrongKey:
        with storage.open_stored(backup.storage_name) as stream:  # whose is it? (only to say so)
            other = manifest_of_other_clinic(stream, exclude=clinic)
        if other is not None:
            manifest_check(other, clinic, error=RestoreRefused)
        raise
    if summary.archive_sha256 != backup.sha256:
        raise RestoreRefused("archive_changed", backup=backup.pk)
    manifest_check(summary.manifest, clinic, error=RestoreRefused)
    return summary
