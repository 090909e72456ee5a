"""The S3 backend (``STORAGES["backups"]`` when ``BACKUPS_STORAGE=s3``): S3 or S3-compatible stores.

``S3BackupMethods`` gives any django-storages ``S3Storage`` the backup operations
(``backups.storage.base.BackupStorage``): a streaming GET instead of ``open()``'s temporary
copy, aborting unfinished multipart uploads, deleting every version of an object, a HEAD of
the bucket as the check, pre-signed download links, and botocore's errors in an operator's
words. A plain ``S3Storage`` in settings gets them too (``backups.storage`` rebuilds it).

``BackupS3Storage`` is django-storages' ``S3Storage`` with those operations and the settings
a backup store needs made the defaults, and with an upload path that streams a non-seekable
source in bounded memory:

* boto3's default ``TransferConfig`` keeps up to 10 parts of a non-seekable upload in
  memory (and 10 threads); here: 8 MiB parts, ``max_concurrency=2`` and
  ``max_in_memory_upload_chunks=2`` (an attribute, not a constructor argument);
* a failed ``UploadPart`` does not stop s3transfer from reading the rest of the source
  (it skips the remaining parts, but still drains the stream to the end before reporting
  the error): ``_save`` makes the source raise as soon as the transfer has failed, so a
  broken upload stops the producer (e.g. a running pg_dump) instead of consuming it all;
* presigned URLs with ``s3v4``; ``ServerSideEncryption=AES256``; ``file_overwrite=False``;
  connect/read timeouts and a bounded number of retries (botocore's defaults: 60 s
  connect timeout, retried).

No boto3 client is created here at import time or in ``__init__``: django-storages
creates one per thread on first use (``S3Storage.connection``).

The module-level ``s3_*`` helpers work with any ``S3Storage`` (also the plain class).
Importing this module loads boto3: ``backups.storage`` imports it only for an S3 storage.
"""

from __future__ import annotations

from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore import exceptions as boto
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.exceptions import ImproperlyConfigured
from s3transfer.subscribers import BaseSubscriber
from storages.backends.s3 import S3Storage, _filter_download_params
from storages.utils import clean_name, is_seekable, setting

from backups.storage.base import BackupStorage
from backups.storage.errors import StorageError, StoredObjectNotFound, generic_error

MiB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MiB


def bounded_transfer_config(
    *, chunksize: int = 8 * MiB, max_concurrency: int = 2, max_in_memory_upload_chunks: int = 2
) -> TransferConfig:
    """A TransferConfig whose memory use does not grow with the size of a streamed upload.

    For a non-seekable source s3transfer holds at most ``max_in_memory_upload_chunks``
    parts queued or in flight, plus the one it is reading: about 3 x ``chunksize``.
    """
    if chunksize < S3_MIN_PART_SIZE:
        raise ImproperlyConfigured(f"S3 multipart parts must be at least 5 MiB (got {chunksize} bytes).")
    config = TransferConfig(
        multipart_threshold=chunksize,
        multipart_chunksize=chunksize,
        max_concurrency=max_concurrency,
        use_threads=True,
        # The CRT client (if awscrt were installed) ignores the in-memory bound.
        preferred_transfer_client="classic",
    )
    # Not a constructor argument of boto3's TransferConfig; s3transfer reads the attribute.
    config.max_in_memory_upload_chunks = max_in_memory_upload_chunks
    return config


class UploadAlreadyFailed(Exception):
    """Raised into s3transfer's reading thread once the transfer has failed (stops reading)."""


class _StopWhenFailed:
    """Read-only view of the upload source that refuses to read once the transfer failed."""

    def __init__(self, content: Any):
        self._content = content
        self.future = None  # set by _CaptureFuture before s3transfer reads anything

    def read(self, *args: Any) -> bytes:
        future = self.future
        if future is not None and future.done():
            raise UploadAlreadyFailed("the S3 transfer already failed; not reading further")
        data = self._content.read(*args)
        if isinstance(data, str):
            data = data.encode("utf-8")
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        # s3transfer may close the source (boto/s3transfer#80); the caller owns it.
        pass


class _CaptureFuture(BaseSubscriber):
    def __init__(self, body: _StopWhenFailed):
        self._body = body

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        self._body.future = future


class S3BackupMethods(BackupStorage):
    """The backup operations of an ``S3Storage`` (mixed in before it)."""

    def abort_partial(self, name: str) -> int:
        """Abort the pending multipart uploads of ``name``; return how many."""
        return s3_abort_incomplete_uploads(self, name)  # type: ignore[arg-type]

    def open_stream(self, name: str) -> Any:
        """A GET stream of the object (``S3Storage.open()`` would download it whole first)."""
        return s3_open_stream(self, name)  # type: ignore[arg-type]

    def link(self, name: str, *, filename: str, seconds: int) -> str | None:
        """A pre-signed URL that downloads ``name`` as ``filename`` for ``seconds``."""
        disposition = f'attachment; filename="{filename}"'
        return self.url(  # type: ignore[attr-defined]
            name,
            parameters={"ResponseContentDisposition": disposition, "ResponseContentType": "application/octet-stream"},
            expire=seconds,
        )

    def purge(self, name: str) -> bool:
        """Delete every version (and delete marker) of ``name``; whether there was one."""
        return s3_delete_all_versions(self, name) > 0  # type: ignore[arg-type]

    def check(self) -> None:
        """HEAD the bucket: checks endpoint, credentials and bucket in one request."""
        s3_check_bucket(self)  # type: ignore[arg-type]

    def describe(self) -> str:
        """``S3 bucket '<name>' at <endpoint>``."""
        return s3_describe(self)  # type: ignore[arg-type]

    def unreachable(self, exc: BaseException) -> bool:
        """Also botocore's connection errors and read timeouts."""
        return super().unreachable(exc) or isinstance(exc, boto.ConnectionError | boto.ReadTimeoutError)

    def describe_error(self, exc: BaseException, *, action: str, where: str, what: str) -> StorageError:
        """botocore's errors and what S3 answered, in an operator's words."""
        if isinstance(exc, boto.ConnectionError | boto.ReadTimeoutError | boto.ConnectionClosedError):
            return StorageError(f"backup storage unreachable: {where}: {exc}")
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return StorageError(f"backup storage credentials are missing or incomplete ({where}).")
        if isinstance(exc, boto.ClientError):
            return _s3_refusal(exc, bucket=getattr(self, "bucket_name", "?"), action=action, where=where, what=what)
        if isinstance(exc, boto.BotoCoreError):
            return StorageError(f"backup storage {action} failed: {exc} ({where}).")
        return generic_error(exc, action=action, where=where)


_FULL_CODES = {"XMinioStorageFull", "StorageFull", "QuotaExceeded", "InsufficientStorage", "StorageCapExceeded"}


def _s3_refusal(exc: Any, *, bucket: str, action: str, where: str, what: str) -> StorageError:
    """What S3 (or an S3-compatible store) answered with an error status, for an operator."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = error.get("Message") or ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
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


class BackupS3Storage(S3BackupMethods, S3Storage):
    """S3 (or S3-compatible: MinIO, Backblaze B2) storage for backup files.

    Extra options (besides django-storages' own): ``multipart_chunksize``,
    ``max_concurrency``, ``max_in_memory_upload_chunks``, ``connect_timeout``,
    ``read_timeout``, ``max_attempts``. An explicit ``client_config`` or
    ``transfer_config`` replaces the one built from them.
    """

    def get_default_settings(self) -> dict[str, Any]:
        defaults = super().get_default_settings()
        defaults.update(
            {
                "file_overwrite": False,
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 3600,
                "object_parameters": {"ServerSideEncryption": "AES256"},
                "gzip": False,
                "multipart_chunksize": 8 * MiB,
                "max_concurrency": 2,
                "max_in_memory_upload_chunks": 2,
                "connect_timeout": 10,
                "read_timeout": 120,
                "max_attempts": 5,
            }
        )
        return defaults

    def __init__(self, **settings: Any):
        own_client_config = settings.get("client_config", setting("AWS_S3_CLIENT_CONFIG")) is not None
        own_transfer_config = settings.get("transfer_config", setting("AWS_S3_TRANSFER_CONFIG")) is not None
        super().__init__(**settings)
        if not self.bucket_name:
            raise ImproperlyConfigured("BackupS3Storage needs a bucket_name.")
        if not own_client_config:
            self.client_config = Config(
                s3={"addressing_style": self.addressing_style},
                signature_version=self.signature_version,
                proxies=self.proxies,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"mode": "standard", "max_attempts": self.max_attempts},
            )
        if not own_transfer_config:
            self.transfer_config = bounded_transfer_config(
                chunksize=self.multipart_chunksize,
                max_concurrency=self.max_concurrency,
                max_in_memory_upload_chunks=self.max_in_memory_upload_chunks,
            )

    def _save(self, name: str, content: Any) -> str:
        cleaned_name = clean_name(name)
        key = self._normalize_name(cleaned_name)
        params = self._get_write_parameters(key, content)
        if is_seekable(content):
            content.seek(0)
        body = _StopWhenFailed(content)
        with create_transfer_manager(self.connection.meta.client, self.transfer_config) as manager:
            future = manager.upload(
                fileobj=body,
                bucket=self.bucket_name,
                key=key,
                extra_args=params,
                subscribers=[_CaptureFuture(body)],
            )
            future.result()
        return cleaned_name


# --- helpers for any S3Storage ---------------------------------------------------------


def s3_key(storage: S3Storage, name: str) -> str:
    """The object key of a storage name (with the storage's ``location`` prefix)."""
    return storage._normalize_name(clean_name(name))


def s3_open_stream(storage: S3Storage, name: str) -> Any:
    """A streaming body (botocore ``StreamingBody``) of the object; nothing is buffered whole.

    (``S3Storage.open()`` downloads the whole object into a temporary file first.)
    """
    key = s3_key(storage, name)
    params = _filter_download_params(storage.get_object_parameters(key))
    response = storage.connection.meta.client.get_object(Bucket=storage.bucket_name, Key=key, **params)
    return response["Body"]


def s3_abort_incomplete_uploads(storage: S3Storage, name: str) -> int:
    """Abort pending multipart uploads of exactly this object; returns how many."""
    key = s3_key(storage, name)
    client = storage.connection.meta.client
    aborted = 0
    response = client.list_multipart_uploads(Bucket=storage.bucket_name, Prefix=key)
    for upload in response.get("Uploads", []):
        if upload.get("Key") == key:
            try:
                client.abort_multipart_upload(Bucket=storage.bucket_name, Key=key, UploadId=upload["UploadId"])
                aborted += 1
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
    return aborted


def s3_delete_all_versions(storage: S3Storage, name: str) -> int:
    """Delete every version (and delete marker) of exactly this object; returns how many.

    On a bucket without versioning this is the object itself. Used where a deleted object
    must really be gone (an erased clinic key), not hidden behind a delete marker.
    """
    key = s3_key(storage, name)
    client = storage.connection.meta.client
    deleted = 0
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=storage.bucket_name, Prefix=key):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if entry.get("Key") == key:
                client.delete_object(Bucket=storage.bucket_name, Key=key, VersionId=entry["VersionId"])
                deleted += 1
    return deleted


def s3_check_bucket(storage: S3Storage) -> None:
    """HEAD the bucket: checks endpoint, credentials and bucket in one request."""
    storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)


def s3_describe(storage: S3Storage) -> str:
    """``S3 bucket '<name>' at <endpoint>`` (AWS S3 without an endpoint)."""
    where = storage.endpoint_url or "AWS S3"
    return f"S3 bucket {storage.bucket_name!r} at {where}"
