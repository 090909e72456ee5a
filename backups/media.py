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
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psycopg
from django.apps import apps as django_apps
from django.conf import settings
from django.core.files.storage import Storage, storages
from django.db import models
from django_tenants.utils import schema_context
from psycopg import sql

from backups.archive.media import MediaFile, MemberStream, media_path_ok
from backups.exceptions import RespaldoError

STAGING_SUFFIX = "__restoring"
ASIDE_SUFFIX = "__before_restore"
_READ = 1 << 20


def file_columns() -> list[tuple[str, str]]:
    """(table, column) of every FileField (ImageField included) of the tenant apps' models."""
    columns = []
    for name in settings.TENANT_APPS:
        config = django_apps.get_app_config(name.rsplit(".", 1)[-1])
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


def _opener(schema: str, name: str, root: Path | None) -> Callable[[], IO[bytes]]:
    if root is not None:
        path = root / name
        return lambda: open(path, "rb")  # noqa: SIM115 -- the writer closes it

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
    found, missing = [], []
    for name in names:
        opener = _opener(schema, name, root)
        try:
            if not media_path_ok(name):
                raise FileNotFoundError(name)
            size, sha256 = _hash(opener)
        except FileNotFoundError:
            missing.append(name)
            continue
        found.append(MediaFile(path=name, size=size, sha256=sha256, open=opener))
    return found, missing


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
        self.staging.mkdir(mode=0o700, parents=True)

    def sink(self, path: str, stream: MemberStream) -> None:
        """Write one file of the archive into the staging folder (the reader checks its SHA-256)."""
        if not media_path_ok(path):  # the reader checked it already; a restore checks again
            raise ValueError(f"unsafe media path {path[:80]!r}")
        target = self.staging / path
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while data := stream.read(_READ):
                out.write(data)
            out.flush()
            os.fsync(out.fileno())

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


def missing_files_note(manifest: dict, message_id: str) -> RespaldoError | None:
    """A job's note naming (up to five of) the files the manifest lists as missing, or None."""
    missing = manifest.get("media_missing") or []
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
    return RespaldoError("media_missing", message_id, count=len(missing), files=shown)


def media_recover(schema: str, *, restored: bool) -> None:
    """Settle the files of a restore whose worker died (local storage; elsewhere nothing to do).

    The data commits only after the archive was read to its authenticated end, every file
    staged included: so a restore whose data committed (``restored``) has a complete staging
    folder if the switch did not happen (or happened half), and the switch is finished here.
    A restore that did not commit only leaves a staging folder to remove.
    """
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
