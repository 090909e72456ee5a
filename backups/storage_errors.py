"""What the backup storage can fail with, translated for an operator (``StorageError``).

Local folders and S3 fail in their own words (errno, botocore exceptions, S3 error codes);
``storage_error`` turns each into one clear sentence naming where and what: full, refused,
unreachable, missing. ``backups.exceptions`` renders it (code ``storage_failed``).
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from django.core.files.storage import FileSystemStorage, Storage


class StorageError(Exception):
    """The backup storage failed; the message is meant for a clinic admin or operator."""

    code = "storage_failed"  # backups.exceptions renders it, with this text as the detail


class StoredObjectNotFound(StorageError):
    """The named backup file is not in the storage."""


def is_s3(storage: Storage) -> bool:
    """Whether ``storage`` is django-storages' S3 storage (or a subclass); never imports boto3.

    An S3 storage object exists only once its module is loaded, so a process on the local disk
    answers without loading boto3 (about 25 MB).
    """
    module = sys.modules.get("storages.backends.s3")
    return module is not None and isinstance(storage, module.S3Storage)


def _describe(storage: Storage) -> str:
    if isinstance(storage, FileSystemStorage):
        return f"local folder {storage.location}"
    if is_s3(storage):
        from backups.storage_backends import s3_describe

        return s3_describe(storage)
    return type(storage).__name__


_FULL_CODES = {"XMinioStorageFull", "StorageFull", "QuotaExceeded", "InsufficientStorage", "StorageCapExceeded"}


def storage_error(exc: BaseException, *, storage: Storage, action: str, name: str | None = None) -> StorageError:
    """Translate what a storage raised into a StorageError an operator can act on."""
    if isinstance(exc, StorageError):
        return exc
    where = _describe(storage)
    what = f" {name!r}" if name else ""
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
    if "botocore" not in sys.modules:  # boto3 never loaded: nothing it raises can be here
        return StorageError(f"backup storage {action} failed: {type(exc).__name__}: {exc} ({where}).")
    from botocore import exceptions as boto

    if isinstance(exc, boto.ConnectionError | boto.ReadTimeoutError | boto.ConnectionClosedError):
        return StorageError(f"backup storage unreachable: {where}: {exc}")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return StorageError(f"backup storage credentials are missing or incomplete ({where}).")
    if isinstance(exc, boto.ClientError):
        return _s3_refusal(exc, storage=storage, action=action, where=where, what=what)
    if isinstance(exc, boto.BotoCoreError):
        return StorageError(f"backup storage {action} failed: {exc} ({where}).")
    return StorageError(f"backup storage {action} failed: {type(exc).__name__}: {exc} ({where}).")


def _s3_refusal(exc: Any, *, storage: Storage, action: str, where: str, what: str) -> StorageError:
    """What S3 (or an S3-compatible store) answered with an error status, for an operator."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = error.get("Message") or ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    bucket = getattr(storage, "bucket_name", "?")
    if code == "NoSuchBucket" or (action == "check" and status == 404):
        return StorageError(f"S3 bucket {bucket!r} does not exist ({where}).")
    if code in {"NoSuchKey", "404", "NotFound"} and action in {"download", "delete"}:
        return StoredObjectNotFound(f"backup file{what} not found in {where}.")
    if code in _FULL_CODES or "storage cap" in message.lower():
        return StorageError(f"backup storage is full: S3 refused the {action}: {code} {message}".rstrip())
    if action == "check" and status == 403:
        return StorageError(f"S3 refused access to bucket {bucket!r}: 403 Forbidden (check the keys and policy).")
    detail = f"{code} {message}".strip() or f"HTTP {status}"
    return StorageError(f"S3 refused the {action}: {detail} ({where}).")
