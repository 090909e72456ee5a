"""A clinic's uploaded files (the FileFields of tenant models) as backups and restores see them.

Backup: the names are read from the clinic's rows in the dump's own REPEATABLE READ
snapshot, so the archive holds exactly the files its rows name. Each file is hashed once
here (its size and SHA-256 go into the manifest, which comes first in the archive), then
streamed into the archive by the writer, which refuses a file that changed in between. A
name whose file storage does not have is listed in the manifest's ``media_missing`` and the
backup succeeds with a note.

Restore (local storage, ``MEDIA_ROOT/<schema>/``): the files are written to a sibling folder
``<schema>__restoring`` while the data is restored, then, only after the data committed,
switched in by two renames (the old folder is renamed aside and then removed). A failed
restore removes the new folder; the clinic's own folder is never touched before the switch.

Restore (S3, ``clinics.media_storage.TenantS3MediaStorage``): the files are written under a
new generation of the clinic's prefix (``<schema>/~<token>/``) while the data is restored;
the clinic's ``media_generation`` is set to it IN the data's own transaction (``record``), so
rows and files switch in one commit and a crash can never leave them apart. Whatever is
under the clinic's prefix besides its current generation is then garbage (the previous
generation after a switch, a staged one after a failure), removed best effort by the
switch, a failure, crash recovery, and the next restore.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import psycopg
from django.core.exceptions import SuspiciousOperation
from django.core.files.storage import Storage, storages
from django.db import models
from django_tenants.utils import get_public_schema_name, schema_context
from psycopg import sql

from backups.archive.media import MediaFile, MemberStream, media_path_ok
from backups.conf import tenant_app_configs
from backups.exceptions import RespaldoError
from clinics.media_generations import current_generation, new_generation
from clinics.models import Clinic

if TYPE_CHECKING:
    from clinics.media_storage import TenantS3MediaStorage

logger = logging.getLogger(__name__)

STAGING_SUFFIX = "__restoring"
ASIDE_SUFFIX = "__before_restore"
_READ = 1 << 20


def file_columns() -> list[tuple[str, str]]:
    """(table, column) of every FileField (ImageField included) of the tenant apps' models."""
    columns = []
    for config in tenant_app_configs():
        for model in config.get_models():
            for field in model._meta.concrete_fields:
                if isinstance(field, models.FileField):
                    columns.append((model._meta.db_table, field.column))
    return sorted(set(columns))


def named_files(conn: psycopg.Connection, schema: str) -> list[str]:
    """The file names the clinic's rows hold, as ``conn`` (the dump's snapshot) sees them."""
    names: set[str] = set()
    for table, column in file_columns():
        query = sql.SQL("SELECT DISTINCT {col} FROM {schema}.{table} WHERE {col} IS NOT NULL AND {col} <> ''").format(
            col=sql.Identifier(column), schema=sql.Identifier(schema), table=sql.Identifier(table)
        )
        names.update(row[0] for row in conn.execute(query).fetchall())
    return sorted(names)


def _clinic_storage() -> Storage:
    return storages["default"]


def _local_root(schema: str) -> Path | None:
    """The clinic's media folder when the default storage is a local disk (None otherwise)."""
    with schema_context(schema):
        try:
            return Path(_clinic_storage().path(""))
        except NotImplementedError:
            return None


def _s3_storage() -> TenantS3MediaStorage | None:
    storage = _clinic_storage()
    if "clinics.media_storage" not in sys.modules:
        return None  # the storage cannot be one, and boto3 stays unloaded on a local disk
    from clinics.media_storage import TenantS3MediaStorage

    return storage if isinstance(storage, TenantS3MediaStorage) else None


def _opener(schema: str, name: str, root: Path | None, generation: str | None) -> Callable[[], IO[bytes]]:
    if root is not None:
        path = root / name
        return lambda: open(path, "rb")  # noqa: SIM115 -- the writer closes it
    s3 = _s3_storage()
    if s3 is not None and generation is not None:  # streamed, from the generation read once

        def open_s3() -> IO[bytes]:
            try:
                key = s3.clinic_key(name, schema=schema, generation=generation)
            except SuspiciousOperation:  # a name that cannot be in this generation
                raise FileNotFoundError(name) from None
            return s3.open_key(key)

        return open_s3

    def open_remote() -> IO[bytes]:
        with schema_context(schema):
            return _clinic_storage().open(name, "rb")

    return open_remote


def _hash(opener: Callable[[], IO[bytes]]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with opener() as handle:
        while data := handle.read(_READ):
            digest.update(data)
            size += len(data)
    return size, digest.hexdigest()


def media_list(schema: str, names: list[str]) -> tuple[list[MediaFile], list[str]]:
    """(the files to archive, the names storage does not have) for ``names`` of clinic ``schema``.

    A name that is not a safe relative path (``..``, absolute) is listed as missing: it
    cannot be restored inside the clinic's folder.
    """
    root = _local_root(schema)
    generation = current_generation(schema) if root is None and _s3_storage() is not None else None
    found, missing = [], []
    for name in names:
        opener = _opener(schema, name, root, generation)
        try:
            if not media_path_ok(name):
                raise FileNotFoundError(name)
            size, sha256 = _hash(opener)
        except FileNotFoundError:
            missing.append(name)
            continue
        found.append(MediaFile(path=name, size=size, sha256=sha256, open=opener))
    return found, missing


class Staging(Protocol):
    """What a restore does with the files of an archive (local folder or S3 generation)."""

    def prepare(self) -> None: ...
    def sink(self, path: str, stream: MemberStream) -> None: ...
    def record(self, cursor: Any | None = None) -> None: ...
    def switch(self) -> None: ...
    def discard(self) -> None: ...


def media_staging(schema: str) -> Staging:
    """The staging for a restore of clinic ``schema``'s files, for the default storage in use.

    NotImplementedError for a storage that is neither the local disk nor ``TenantS3MediaStorage``.
    """
    s3 = _s3_storage()
    if s3 is not None:
        return S3MediaStaging(schema, s3)
    return MediaStaging(schema)


def private_mkdir(folder: Path) -> None:
    """Make ``folder`` and every missing folder above it readable by this user alone (0700).

    ``Path.mkdir(mode=..., parents=True)`` gives the parents it makes the default mode (0755).
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # whatever the umask


class MediaStaging:
    """The files of a restore, written beside the clinic's folder and switched in after the data commits."""

    def __init__(self, schema: str) -> None:
        root = _local_root(schema)
        if root is None:
            raise NotImplementedError("restoring files is implemented for local media storage only")
        self.root = root
        self.staging = root.with_name(root.name + STAGING_SUFFIX)
        self.aside = root.with_name(root.name + ASIDE_SUFFIX)

    def prepare(self) -> None:
        """An empty staging folder (what an earlier, failed restore left there is removed)."""
        self.discard()
        private_mkdir(self.staging)

    def sink(self, path: str, stream: MemberStream) -> None:
        """Write one file of the archive into the staging folder (the reader checks its SHA-256)."""
        if not media_path_ok(path):  # the reader checked it already; a restore checks again
            raise ValueError(f"unsafe media path {path[:80]!r}")
        target = self.staging / path
        private_mkdir(target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while data := stream.read(_READ):
                out.write(data)
            out.flush()
            os.fsync(out.fileno())

    def record(self, cursor: Any | None = None) -> None:
        """Nothing to write in the data's transaction: local files switch by renames after it."""

    def switch(self) -> None:
        """The staged folder becomes the clinic's; its previous files are removed."""
        shutil.rmtree(self.aside, ignore_errors=True)
        if self.root.exists():
            os.rename(self.root, self.aside)
        os.rename(self.staging, self.root)
        shutil.rmtree(self.aside, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging folder, if any."""
        shutil.rmtree(self.staging, ignore_errors=True)


class S3MediaStaging:
    """The files of a restore, written under a new generation of the clinic's S3 prefix.

    ``record`` points the clinic at it inside the data's transaction; after that, whatever
    generation the clinic's row does not name is removed (best effort) by ``switch``,
    ``discard`` and crash recovery alike: what the database committed decides which files stay.
    """

    def __init__(self, schema: str, storage: TenantS3MediaStorage) -> None:
        self.schema, self.storage = schema, storage
        self.generation = new_generation()

    def prepare(self) -> None:
        """Remove what earlier restores left under the clinic's prefix (its current files stay)."""
        s3_settle(self.schema, self.storage)

    def sink(self, path: str, stream: MemberStream) -> None:
        """Upload one file of the archive into the new generation (the reader checks its SHA-256)."""
        if not media_path_ok(path):  # the reader checked it already; a restore checks again
            raise ValueError(f"unsafe media path {path[:80]!r}")
        key = self.storage.clinic_key(path, schema=self.schema, generation=self.generation)
        self.storage.put_key(key, stream)

    def record(self, cursor: Any | None = None) -> None:
        """Point the clinic at the new generation in the caller's transaction: ``cursor`` (psycopg)
        when the data is restored on a connection of its own, else Django's connection."""
        if cursor is None:
            Clinic.objects.filter(schema_name=self.schema).update(media_generation=self.generation)
            return
        cursor.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                sql.Identifier(get_public_schema_name(), Clinic._meta.db_table),
                sql.Identifier(Clinic._meta.get_field("media_generation").column),
                sql.Identifier(Clinic._meta.get_field("schema_name").column),
            ),
            [self.generation, self.schema],
        )

    def switch(self) -> None:
        """After the data committed: the clinic on the new generation (already, when ``record`` ran
        in the transaction), and the previous generation removed."""
        Clinic.objects.filter(schema_name=self.schema).exclude(media_generation=self.generation).update(
            media_generation=self.generation
        )
        s3_settle(self.schema, self.storage)

    def discard(self) -> None:
        """After a failure: remove the generation the clinic's row does not name (this one, unless
        the data committed after all)."""
        s3_settle(self.schema, self.storage)


def s3_settle(schema: str, storage: TenantS3MediaStorage) -> None:
    """Delete every generation under the clinic's prefix but the one its row names (best effort:
    a leftover is harmless, and the next restore or crash recovery removes it)."""
    try:
        keep = current_generation(schema)
        garbage = [
            key for generation, keys in storage.generations(schema).items() if generation != keep for key in keys
        ]
        storage.delete_keys(garbage)
    except Exception:
        logger.warning("Could not remove the old files of clinic %s from S3", schema, exc_info=True)


def missing_files_note(manifest: dict, message_id: str) -> RespaldoError | None:
    """A job's note naming (up to five of) the files the manifest lists as missing, or None."""
    missing = manifest.get("media_missing") or []
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
    return RespaldoError("media_missing", message_id, count=len(missing), files=shown)


def media_recover(schema: str, *, restored: bool) -> None:
    """Settle the files of a restore whose worker died (local storage or S3; elsewhere nothing to do).

    The data commits only after the archive was read to its authenticated end, every file
    staged included: so a restore whose data committed (``restored``) has a complete staging
    folder if the switch did not happen (or happened half), and the switch is finished here.
    A restore that did not commit only leaves a staging folder to remove. On S3 the clinic's
    row already names the right generation either way (written with the data): the others go.
    """
    s3 = _s3_storage()
    if s3 is not None:
        s3_settle(schema, s3)
        return
    try:
        files = MediaStaging(schema)
    except NotImplementedError:
        return
    if not files.staging.exists():
        return
    if restored:
        files.switch()
    else:
        files.discard()
