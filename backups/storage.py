"""Where backup files live: ``STORAGES["backups"]``, read through ``backup_storage()``.

Everything streams. ``store_stream()`` runs a producer (pg_dump -> compressor -> encryptor)
in a background thread that writes into an ``os.pipe``; the calling thread hands the read
end to ``Storage.save()`` (a local folder is written by ``_save_local()`` instead, so that
the file is 0600 from its creation). Neither side ever holds the whole backup, in memory or
in a temporary file. The bytes the storage actually consumed are counted and hashed on the way.

Failure rules of ``store_stream()``:

* the producer fails -> its exception is re-raised unchanged and nothing is left in the
  storage: the pipe reader raises at end-of-file (so ``save()`` fails instead of storing a
  truncated object), the partial local file is deleted, a pending S3 multipart upload is
  aborted;
* the storage fails (disk full, S3 error, endpoint unreachable) -> the read end is closed,
  so a producer blocked on (or later attempting) a write gets ``BrokenPipeError``; the
  thread is joined; ``StorageError`` is raised with a message an operator can act on, the
  original exception chained.

Keys: ``clinics/<schema>/<yyyy>/<mm>/<yyyymmddTHHMMSSffffffZ>-<kind>.<ext>`` (``backup_key``).
Always record the name ``store_stream()`` returns: with ``file_overwrite=False`` the
storage may add a suffix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils._os import safe_makedirs

from backups.storage_errors import StorageError, is_s3, storage_error
from backups.storage_errors import StoredObjectNotFound as StoredObjectNotFound  # re-exported: callers catch it here
from backups.storage_pipe import (
    READ_CHUNK,
    HashingPipeReader,
    PipeWriter,
    ProducerState,
    new_pipe,
    run_producer,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

STORAGE_ALIAS = "backups"
KEY_PREFIX = "clinics"

_FILE_MODE = 0o600  # local backup files, from their creation (see _save_local)
PRODUCER_STOP_TIMEOUT = 60.0  # seconds, see _join_producer()

_SCHEMA_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}\Z")
_KIND_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}\Z")
_EXT_RE = re.compile(r"[a-z0-9]{1,16}(?:\.[a-z0-9]{1,16}){0,2}\Z")


# --- results (errors: storage_errors.py) ---------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    name: str  # as returned by Storage.save(): record this one
    size: int
    sha256: str


# --- accessor and names --------------------------------------------------------------


def backup_storage() -> Storage:
    """The backups storage. Read on every call, never cached here.

    ``storages`` caches the instance, and Django's ``setting_changed`` handler resets that
    cache whenever ``STORAGES`` is overridden (``override_settings``, pytest-django's
    ``settings`` fixture) -- as long as ``STORAGES`` is *assigned*, not mutated in place.
    """
    return storages[STORAGE_ALIAS]


def backup_key(*, schema: str, kind: str, created_at: datetime, ext: str = "respaldo") -> str:
    """``clinics/<schema>/<yyyy>/<mm>/<yyyymmddTHHMMSSffffffZ>-<kind>.<ext>``, in UTC."""
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise ValueError(f"Unsafe schema name for a backup key: {schema!r}.")
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValueError(f"Unsafe backup kind: {kind!r} (use lower-case letters, digits, '-' and '_').")
    if not isinstance(ext, str) or not _EXT_RE.match(ext):
        raise ValueError(f"Unsafe backup file extension: {ext!r}.")
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware.")
    utc = created_at.astimezone(UTC)
    stamp = utc.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{KEY_PREFIX}/{schema}/{utc:%Y}/{utc:%m}/{stamp}-{kind}.{ext}"


# --- error translation ---------------------------------------------------------------


# --- storing --------------------------------------------------------------------------


def store_stream(name: str, produce: Callable[[BinaryIO], T]) -> tuple[StoredObject, T]:
    """Store what ``produce(writer)`` writes under ``name``; return the stored object and its result.

    See the module docstring for the failure rules.
    """
    storage = backup_storage()
    try:
        final_name = storage.get_available_name(name)
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="upload", name=name) from exc

    read_fd, write_fd = new_pipe()
    state: ProducerState[T] = ProducerState()
    reader = HashingPipeReader(read_fd, state)
    writer = PipeWriter(write_fd, state)
    thread = threading.Thread(
        target=run_producer, args=(produce, writer, write_fd, state), name=f"backup-producer:{name}", daemon=True
    )
    try:
        thread.start()
    except BaseException:
        reader.close()
        os.close(write_fd)
        raise

    saved_name: str | None = None
    storage_exc: BaseException | None = None
    producer_failed_first = False
    try:
        if isinstance(storage, FileSystemStorage):
            saved_name = _save_local(storage, final_name, reader)
        else:
            saved_name = storage.save(final_name, File(reader, name=final_name))
    except BaseException as exc:
        storage_exc = exc
        producer_failed_first = state.error is not None  # before closing our end (-> BrokenPipeError)
    finally:
        reader.close()  # unblocks a producer stuck in write(): it gets BrokenPipeError
        _join_producer(thread, finished=reader.eof)

    if storage_exc is not None:
        _discard(storage, final_name, storage_exc)
        if producer_failed_first and state.error is not None:
            raise state.error
        if not isinstance(storage_exc, Exception):  # KeyboardInterrupt, SystemExit
            raise storage_exc
        raise storage_error(storage_exc, storage=storage, action="upload", name=final_name) from storage_exc

    assert saved_name is not None
    _keep_if_complete(storage, saved_name, reader, state)
    stored = StoredObject(name=saved_name, size=reader.bytes_read, sha256=reader.hexdigest())
    return stored, state.result  # type: ignore[return-value]


def _keep_if_complete(storage: Storage, saved_name: str, reader: HashingPipeReader, state: ProducerState) -> None:
    """Keep a saved object only if the producer finished and the storage read it all; then make it durable."""
    if state.error is not None or not reader.eof:
        # The storage returned without reading to the end: never keep such an object.
        _discard(storage, saved_name, None)
        if state.error is not None:
            raise state.error
        raise StorageError(f"backup storage stopped reading before the end of {saved_name!r}; nothing was kept.")
    try:
        _make_durable(storage, saved_name)
    except OSError as exc:
        _discard(storage, saved_name, exc)
        raise storage_error(exc, storage=storage, action="upload", name=saved_name) from exc


def _save_local(storage: FileSystemStorage, name: str, source: BinaryIO) -> str:
    """Write ``source`` into a new file of a local storage, 0600 from its first byte; return its name.

    ``FileSystemStorage.save()`` creates its file 0666 minus the umask and applies
    ``file_permissions_mode`` only after the last byte: a backup being written would be
    readable by other accounts meanwhile. Here the file is created 0600 (folders: the
    storage's directory mode, else 0700), whatever the storage's options or the umask.
    """
    path = storage.path(name)
    safe_makedirs(os.path.dirname(path), storage.directory_permissions_mode or 0o700, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            break
        except FileExistsError:
            name = storage.get_available_name(name)
            path = storage.path(name)
    try:
        os.fchmod(fd, _FILE_MODE)  # a umask like 0277 would have left it read-only
        while data := source.read(READ_CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise
    os.close(fd)
    return os.path.relpath(path, storage.location).replace(os.sep, "/")


def _join_producer(thread: threading.Thread, *, finished: bool) -> None:
    """Wait for the producer. After end-of-file it has already returned.

    Otherwise its next write fails at once (broken pipe); a producer stuck elsewhere (not
    writing) gets ``PRODUCER_STOP_TIMEOUT`` seconds, then is left to end at its next write,
    so a failed store never hangs the caller.
    """
    thread.join(None if finished else PRODUCER_STOP_TIMEOUT)
    if thread.is_alive():
        logger.error(
            "The backup producer %r did not stop within %s s after the storage stopped reading; "
            "it will end at its next write.",
            thread.name,
            PRODUCER_STOP_TIMEOUT,
        )


def _discard(storage: Storage, name: str, cause: BaseException | None) -> None:
    """Best effort: leave nothing behind under ``name`` after a failed store."""
    if cause is not None and _unreachable(cause):
        logger.warning(
            "Backup storage unreachable: could not remove what may remain of %r (for S3 a lifecycle rule "
            "'AbortIncompleteMultipartUpload' cleans up).",
            name,
        )
        return
    if is_s3(storage):
        from backups.storage_backends import s3_abort_incomplete_uploads

        try:
            if aborted := s3_abort_incomplete_uploads(storage, name):
                logger.info("Aborted %d pending multipart upload(s) of %r.", aborted, name)
        except Exception as exc:
            logger.warning("Could not abort pending multipart uploads of %r: %s", name, exc)
    try:
        if storage.exists(name):
            storage.delete(name)
    except Exception as exc:
        logger.warning("Could not delete the partial backup file %r: %s", name, exc)


def _unreachable(exc: BaseException) -> bool:
    if "botocore" not in sys.modules:  # boto3 never loaded (local disk): only the OS's own errors
        return isinstance(exc, ConnectionError)
    from botocore import exceptions as boto

    return isinstance(exc, ConnectionError | boto.ConnectionError | boto.ReadTimeoutError)


def _make_durable(storage: Storage, name: str) -> None:
    """fsync a locally stored file and its directories (FileSystemStorage does not)."""
    if not isinstance(storage, FileSystemStorage):
        return
    path = storage.path(name)
    root = os.path.realpath(storage.location)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.path.dirname(path)
    while True:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if os.path.realpath(directory) == root or os.path.dirname(directory) == directory:
            break
        directory = os.path.dirname(directory)


# --- reading, verifying, deleting ----------------------------------------------------


class _StoredReader(io.RawIOBase):
    """Streaming read of a stored object; storage errors become StorageError."""

    def __init__(self, raw: Any, storage: Storage, name: str):
        super().__init__()
        self._raw = raw
        self._storage = storage
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._raw.read(len(view))
        except Exception as exc:
            raise storage_error(exc, storage=self._storage, action="download", name=self._name) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


def open_stored(name: str) -> BinaryIO:
    """Open a stored backup for a streaming read (S3: a GET stream, not a temporary copy)."""
    storage = backup_storage()
    try:
        if is_s3(storage):
            from backups.storage_backends import s3_open_stream

            raw = s3_open_stream(storage, name)
        else:
            raw = storage.open(name, "rb")
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="download", name=name) from exc
    return io.BufferedReader(_StoredReader(raw, storage, name), buffer_size=READ_CHUNK)  # type: ignore[return-value]


def stored_sha256(name: str) -> StoredObject:
    """Stream a stored backup and hash it (to verify it before a restore)."""
    sha256 = hashlib.sha256()
    size = 0
    with open_stored(name) as stream:
        while chunk := stream.read(READ_CHUNK):
            sha256.update(chunk)
            size += len(chunk)
    return StoredObject(name=name, size=size, sha256=sha256.hexdigest())


def list_stored(prefix: str = "") -> Iterator[str]:
    """Every object of the backup storage (under the folder ``prefix``), sorted, by its storage
    name (a missing local folder is empty).

    The Storage API's ``listdir``, recursively: a local folder and django-storages' S3 (which lists
    by prefix and delimiter) both answer it.
    """
    backend = backup_storage()
    try:
        yield from _walk(backend, prefix)
    except FileNotFoundError:
        return
    except Exception as exc:
        raise storage_error(exc, storage=backend, action="list") from exc


def _walk(backend: Storage, path: str) -> Iterator[str]:
    folders, files = backend.listdir(path)
    for name in sorted(files):
        yield f"{path}/{name}" if path else name
    for folder in sorted(folders):
        yield from _walk(backend, f"{path}/{folder}" if path else folder)


def delete_stored(name: str) -> bool:
    """Delete a stored backup, or what a dead writer left of it (a partial file, an
    unfinished S3 multipart upload); returns whether there was something to delete."""
    storage = backup_storage()
    try:
        if is_s3(storage):
            from backups.storage_backends import s3_abort_incomplete_uploads

            s3_abort_incomplete_uploads(storage, name)
        if not storage.exists(name):
            return False
        storage.delete(name)
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="delete", name=name) from exc
    return True


def purge_stored(name: str) -> bool:
    """Delete an object for good: on S3 every version of it too (a versioned bucket keeps
    deleted objects otherwise); returns whether there was something to delete."""
    backend = backup_storage()
    if not is_s3(backend):
        return delete_stored(name)
    from backups.storage_backends import s3_delete_all_versions

    try:
        return s3_delete_all_versions(backend, name) > 0
    except Exception as exc:
        raise storage_error(exc, storage=backend, action="delete", name=name) from exc


def store_bytes(name: str, data: bytes) -> StoredObject:
    """Store a small object (a wrapped key) under exactly ``name``; an existing one is an error."""
    stored, _result = store_stream(name, lambda out: out.write(data))
    if stored.name != name:  # the storage renamed it: the name was taken
        delete_stored(stored.name)
        raise StorageError(f"backup storage already holds {name}.")
    return stored


def read_stored_bytes(name: str, limit: int = 1 << 20) -> bytes:
    """The whole content of a small stored object (at most ``limit`` bytes, else ValueError)."""
    with open_stored(name) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{name} is larger than {limit} bytes")
    return data


def check_storage() -> None:
    """Cheap reachability check; raises StorageError saying what is wrong."""
    storage = backup_storage()
    try:
        if isinstance(storage, FileSystemStorage):
            _check_local(storage)
        elif is_s3(storage):
            from backups.storage_backends import s3_check_bucket

            s3_check_bucket(storage)
        else:
            storage.exists(".respaldo-check")
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="check") from exc


def _check_local(storage: FileSystemStorage) -> None:
    location = storage.location
    if os.path.exists(location) and not os.path.isdir(location):
        raise StorageError(f"backup storage folder {location} is not a folder.")
    mode = storage.directory_permissions_mode or 0o700
    safe_makedirs(location, mode, exist_ok=True)
    probe = os.path.join(location, f".respaldo-check-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.remove(probe)


def download_link(name: str, *, filename: str, seconds: int) -> str | None:
    """A pre-signed URL that downloads ``name`` as ``filename`` for ``seconds`` (S3), or None
    when the storage cannot hand out links (a local folder: stream it with ``open_stored``)."""
    storage = backup_storage()
    if not is_s3(storage):
        return None
    disposition = f'attachment; filename="{filename}"'
    try:
        return storage.url(
            name,
            parameters={"ResponseContentDisposition": disposition, "ResponseContentType": "application/octet-stream"},
            expire=seconds,
        )
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="download", name=name) from exc
