"""What the backup storage can fail with, translated for an operator (``StorageError``).

Local folders and S3 fail in their own words (errno, botocore exceptions, S3 error codes);
``storage_error`` turns each into one clear sentence naming where and what: full, refused,
unreachable, missing. The operating system's errors are translated here for every backend;
what only one backend raises is translated by its ``describe_error`` (``s3.py`` for botocore).
``backups.exceptions`` renders the result (code ``storage_failed``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backups.storage.base import BackupStorage


class StorageError(Exception):
    """The backup storage failed; the message is meant for a clinic admin or operator."""

    code = "storage_failed"  # backups.exceptions renders it, with this text as the detail


class StoredObjectNotFound(StorageError):
    """The named backup file is not in the storage."""


def storage_error(exc: BaseException, *, storage: BackupStorage, action: str, name: str | None = None) -> StorageError:
    """Translate what a storage raised into a StorageError an operator can act on."""
    if isinstance(exc, StorageError):
        return exc
    where = storage.describe()
    what = f" {name!r}" if name else ""
    return _os_error(exc, action=action, where=where, what=what) or storage.describe_error(
        exc, action=action, where=where, what=what
    )


def _os_error(exc: BaseException, *, action: str, where: str, what: str) -> StorageError | None:
    """The operating system's errors (any backend: a full disk, a refused file, a closed port)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"backup storage is full: no space left in {where} (while writing{what}).")
    if isinstance(exc, FileNotFoundError) and action in {"download", "delete"}:
        return StoredObjectNotFound(f"backup file{what} not found in {where}.")
    if isinstance(exc, PermissionError):
        return StorageError(f"backup storage refused access: permission denied on {exc.filename or where}.")
    if isinstance(exc, ConnectionError | TimeoutError):
        return StorageError(f"backup storage unreachable: {where}: {exc}")
    if isinstance(exc, OSError):
        return StorageError(f"backup storage {action} failed: {exc.strerror or exc} ({exc.filename or where}).")
    return None


def generic_error(exc: BaseException, *, action: str, where: str) -> StorageError:
    """The sentence for an error no backend knows better."""
    return StorageError(f"backup storage {action} failed: {type(exc).__name__}: {exc} ({where}).")
