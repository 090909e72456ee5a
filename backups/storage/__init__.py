"""Where backup files live: ``STORAGES["backups"]``, read through ``backup_storage()``.

This is the public API of the backup storage: other modules import from here only. The
package: ``base.py`` (``BackupStorage``: the operations each backend provides), ``local.py``
(``BackupLocalStorage``), ``s3.py`` (``BackupS3Storage``; imported only for an S3 storage,
as it loads boto3), ``pipe.py`` (the producer's pipe), ``errors.py`` (``StorageError``).
The functions here call the backend's operations (``backend()``) and never ask which backend
they have; a storage configured with Django's own class gets them too (``as_backup_storage``).

Everything streams. ``store_stream()`` runs a producer (pg_dump -> compressor -> encryptor)
in a background thread that writes into an ``os.pipe``; the calling thread hands the read
end to the backend's ``save_stream()`` (a local folder creates the file 0600 from its first
byte). Neither side ever holds the whole backup, in memory or in a temporary file. The bytes
the storage actually consumed are counted and hashed on the way.

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

import hashlib
import io
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar

from django.core.files.storage import FileSystemStorage, Storage, storages

from backups.storage.base import BackupStorage, PlainStorage, adopt
from backups.storage.errors import StorageError, storage_error
from backups.storage.errors import StoredObjectNotFound as StoredObjectNotFound  # re-exported: callers catch it here
from backups.storage.local import BackupLocalStorage
from backups.storage.pipe import (
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

PRODUCER_STOP_TIMEOUT = 60.0  # seconds, see _join_producer()

_SCHEMA_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}\Z")
_KIND_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}\Z")
_EXT_RE = re.compile(r"[a-z0-9]{1,16}(?:\.[a-z0-9]{1,16}){0,2}\Z")


# --- results (errors: errors.py) -----------------------------------------------------


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


def is_s3(storage: Storage) -> bool:
    """Whether ``storage`` is django-storages' S3 storage (or a subclass); never imports boto3.

    An S3 storage object exists only once its module is loaded, so a process on the local disk
    answers without loading boto3 (about 25 MB).
    """
    module = sys.modules.get("storages.backends.s3")
    return module is not None and isinstance(storage, module.S3Storage)


_adopted: weakref.WeakKeyDictionary[Storage, BackupStorage] = weakref.WeakKeyDictionary()
_adopted_lock = threading.Lock()


def as_backup_storage(storage: Storage) -> BackupStorage:
    """``storage`` with the backup operations of its kind.

    ``BackupLocalStorage`` and ``BackupS3Storage`` have them. A storage configured with Django's
    or django-storages' own class (``FileSystemStorage`` in a test's ``override_settings``,
    ``S3Storage``) is rebuilt with the same options as a subclass that has them; any other
    storage is wrapped with the defaults. Made once per storage object (``storages`` caches it).
    """
    if isinstance(storage, BackupStorage):
        return storage
    if not isinstance(storage, FileSystemStorage) and not is_s3(storage):
        return PlainStorage(storage)  # a wrapper: not kept (it would keep its storage alive)
    with _adopted_lock:
        adopted = _adopted.get(storage)
        if adopted is None:
            if isinstance(storage, FileSystemStorage):
                adopted = adopt(storage, BackupLocalStorage)
            else:
                from backups.storage.s3 import S3BackupMethods

                adopted = adopt(storage, S3BackupMethods)
            _adopted[storage] = adopted
    return adopted


def backend() -> BackupStorage:
    """The backups storage with its backup operations (``as_backup_storage(backup_storage())``)."""
    return as_backup_storage(backup_storage())


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


# --- storing --------------------------------------------------------------------------


def store_stream(name: str, produce: Callable[[BinaryIO], T]) -> tuple[StoredObject, T]:
    """Store what ``produce(writer)`` writes under ``name``; return the stored object and its result.

    See the module docstring for the failure rules.
    """
    storage = backend()
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
        saved_name = storage.save_stream(final_name, reader)
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


def _keep_if_complete(storage: BackupStorage, saved_name: str, reader: HashingPipeReader, state: ProducerState) -> None:
    """Keep a saved object only if the producer finished and the storage read it all; then make it durable."""
    if state.error is not None or not reader.eof:
        # The storage returned without reading to the end: never keep such an object.
        _discard(storage, saved_name, None)
        if state.error is not None:
            raise state.error
        raise StorageError(f"backup storage stopped reading before the end of {saved_name!r}; nothing was kept.")
    try:
        storage.make_durable(saved_name)
    except OSError as exc:
        _discard(storage, saved_name, exc)
        raise storage_error(exc, storage=storage, action="upload", name=saved_name) from exc


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


def _discard(storage: BackupStorage, name: str, cause: BaseException | None) -> None:
    """Best effort: leave nothing behind under ``name`` after a failed store."""
    if cause is not None and storage.unreachable(cause):
        logger.warning(
            "Backup storage unreachable: could not remove what may remain of %r (for S3 a lifecycle rule "
            "'AbortIncompleteMultipartUpload' cleans up).",
            name,
        )
        return
    try:
        if aborted := storage.abort_partial(name):
            logger.info("Aborted %d pending multipart upload(s) of %r.", aborted, name)
    except Exception as exc:
        logger.warning("Could not abort pending multipart uploads of %r: %s", name, exc)
    try:
        if storage.exists(name):
            storage.delete(name)
    except Exception as exc:
        logger.warning("Could not delete the partial backup file %r: %s", name, exc)


# --- reading, verifying, deleting ----------------------------------------------------


class _StoredReader(io.RawIOBase):
    """Streaming read of a stored object; storage errors become StorageError."""

    def __init__(self, raw: Any, storage: BackupStorage, name: str):
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
    storage = backend()
    try:
        raw = storage.open_stream(name)
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
    storage = backend()
    try:
        yield from _walk(storage, prefix)
    except FileNotFoundError:
        return
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="list") from exc


def _walk(storage: BackupStorage, path: str) -> Iterator[str]:
    folders, files = storage.listdir(path)  # type: ignore[attr-defined]
    for name in sorted(files):
        yield f"{path}/{name}" if path else name
    for folder in sorted(folders):
        yield from _walk(storage, f"{path}/{folder}" if path else folder)


def delete_stored(name: str) -> bool:
    """Delete a stored backup, or what a dead writer left of it (a partial file, an
    unfinished S3 multipart upload); returns whether there was something to delete."""
    storage = backend()
    try:
        return storage.remove(name)
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="delete", name=name) from exc


def purge_stored(name: str) -> bool:
    """Delete an object for good: on S3 every version of it too (a versioned bucket keeps
    deleted objects otherwise); returns whether there was something to delete."""
    storage = backend()
    try:
        return storage.purge(name)
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="delete", name=name) from exc


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
    storage = backend()
    try:
        storage.check()
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="check") from exc


def download_link(name: str, *, filename: str, seconds: int) -> str | None:
    """A pre-signed URL that downloads ``name`` as ``filename`` for ``seconds`` (S3), or None
    when the storage cannot hand out links (a local folder: stream it with ``open_stored``)."""
    storage = backend()
    try:
        return storage.link(name, filename=filename, seconds=seconds)
    except Exception as exc:
        raise storage_error(exc, storage=storage, action="download", name=name) from exc
