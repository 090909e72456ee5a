"""The backup operations every storage backend provides (``BackupStorage``), and how a plain
Django storage gets them (``adopt``).

``backups.storage``'s public functions (``store_stream``, ``open_stored``, ``purge_stored``,
``check_storage``, ...) call these methods and never ask which backend they have, like
django-q2's ``brokers/``: a base class with the operations, one module per backend overriding
what differs (``local.py``, ``s3.py``). A new backend is one module: a ``Storage`` subclass
that mixes in ``BackupStorage`` and overrides what its kind does differently.

The defaults here use only Django's ``Storage`` API, so any storage works, if less well
(no fsync, no links, no cleanup of unfinished uploads).
"""

from __future__ import annotations

import functools
from typing import Any, BinaryIO

from django.core.files import File
from django.core.files.storage import Storage

from backups.storage.errors import StorageError, generic_error

CHECK_NAME = ".respaldo-check"


class BackupStorage:
    """Mixed into a ``Storage`` class (before it): the operations a backup storage provides."""

    # --- storing

    def save_stream(self, name: str, source: BinaryIO) -> str:
        """Store the non-seekable ``source`` (read to its end) under ``name`` or a free name like it;
        return the name used."""
        return self.save(name, File(source, name=name))  # type: ignore[attr-defined]

    def make_durable(self, name: str) -> None:
        """Make a stored object survive a crash of the machine (a local disk: fsync). Default: nothing."""

    def abort_partial(self, name: str) -> int:
        """Remove what an unfinished upload of ``name`` left that ``delete`` does not see (S3: pending
        multipart uploads); return how many. Default: nothing."""
        return 0

    # --- reading

    def open_stream(self, name: str) -> Any:
        """An object with ``read(n)`` and ``close()`` streaming the stored bytes of ``name``."""
        return self.open(name, "rb")  # type: ignore[attr-defined]

    def link(self, name: str, *, filename: str, seconds: int) -> str | None:
        """A URL that downloads ``name`` as ``filename`` for ``seconds``, or None when the backend cannot
        hand out links (then the bytes are streamed through the application). Default: None."""
        return None

    # --- deleting

    def remove(self, name: str) -> bool:
        """Delete ``name`` and what an unfinished upload of it left; return whether there was something."""
        self.abort_partial(name)
        if not self.exists(name):  # type: ignore[attr-defined]
            return False
        self.delete(name)  # type: ignore[attr-defined]
        return True

    def purge(self, name: str) -> bool:
        """Delete ``name`` for good (a versioned bucket: every version); return whether there was something."""
        return self.remove(name)

    # --- checking and describing

    def check(self) -> None:
        """A cheap reachability check; raise what the backend raises when it is not usable."""
        self.exists(CHECK_NAME)  # type: ignore[attr-defined]

    def describe(self) -> str:
        """Where the backups are, for an operator's error message."""
        return type(self).__name__

    def unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the backend could not be reached at all (nothing to clean up there)."""
        return isinstance(exc, ConnectionError)

    def describe_error(self, exc: BaseException, *, action: str, where: str, what: str) -> StorageError:
        """Translate an error only this backend raises (the operating system's are done already)."""
        return generic_error(exc, action=action, where=where)


def adopt(storage: Storage, methods: type[BackupStorage]) -> BackupStorage:
    """``storage`` rebuilt with the same options as a class that has ``methods`` mixed in.

    For a storage configured with Django's own class (``FileSystemStorage`` in a test's
    ``override_settings``, ``S3Storage`` in an older settings file). The rebuilt object
    has the same class name and behaves the same, plus the backup operations.
    """
    _path, args, kwargs = storage.deconstruct()  # type: ignore[attr-defined]
    return _with_methods(methods, type(storage))(*args, **kwargs)


@functools.cache
def _with_methods(methods: type[BackupStorage], cls: type[Storage]) -> type[Any]:
    if issubclass(methods, cls):  # e.g. BackupLocalStorage for a plain FileSystemStorage
        return methods
    return type(cls.__name__, (methods, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})


class PlainStorage(BackupStorage):
    """Any other storage class, wrapped (not rebuilt) with the default operations.

    Every attribute but the operations is the wrapped storage's.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def describe(self) -> str:
        """The wrapped storage's class name."""
        return type(self._storage).__name__
