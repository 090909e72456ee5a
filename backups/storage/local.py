"""The local-folder backend: ``BackupLocalStorage``, Django's ``FileSystemStorage`` with the
backup operations (``STORAGES["backups"]`` when ``BACKUPS_STORAGE=local``).

What it does differently from a plain ``FileSystemStorage``:

* a stored backup is created 0600 from its first byte (``save_stream``), whatever the
  storage's options or the umask, and fsynced with its folders once complete (``make_durable``);
* ``check`` creates the folder if needed and writes, fsyncs and removes a probe file;
* errors name the folder (``describe``).

A plain ``FileSystemStorage`` in ``STORAGES["backups"]`` (a test's ``override_settings``)
gets the same behaviour: ``backups.storage`` rebuilds it as this class (``base.adopt``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import BinaryIO

from django.core.files.storage import FileSystemStorage
from django.utils._os import safe_makedirs

from backups.storage.base import CHECK_NAME, BackupStorage
from backups.storage.errors import StorageError
from backups.storage.pipe import READ_CHUNK

FILE_MODE = 0o600  # local backup files, from their creation (see save_stream)


class BackupLocalStorage(BackupStorage, FileSystemStorage):
    """A local folder for backup files (same options as ``FileSystemStorage``)."""

    def save_stream(self, name: str, source: BinaryIO) -> str:
        """Write ``source`` into a new file, 0600 from its first byte; return its name.

        ``FileSystemStorage.save()`` creates its file 0666 minus the umask and applies
        ``file_permissions_mode`` only after the last byte: a backup being written would be
        readable by other accounts meanwhile. Here the file is created 0600 (folders: the
        storage's directory mode, else 0700), whatever the storage's options or the umask.
        """
        path = self.path(name)
        safe_makedirs(os.path.dirname(path), self.directory_permissions_mode or 0o700, exist_ok=True)
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                break
            except FileExistsError:
                name = self.get_available_name(name)
                path = self.path(name)
        try:
            os.fchmod(fd, FILE_MODE)  # a umask like 0277 would have left it read-only
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
        return os.path.relpath(path, self.location).replace(os.sep, "/")

    def make_durable(self, name: str) -> None:
        """fsync a stored file and its folders up to the storage's root (FileSystemStorage does not)."""
        path = self.path(name)
        root = os.path.realpath(self.location)
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

    def check(self) -> None:
        """The folder exists (created if missing) and a file can be written and fsynced in it."""
        location = self.location
        if os.path.exists(location) and not os.path.isdir(location):
            raise StorageError(f"backup storage folder {location} is not a folder.")
        safe_makedirs(location, self.directory_permissions_mode or 0o700, exist_ok=True)
        probe = os.path.join(location, f"{CHECK_NAME}-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.remove(probe)

    def describe(self) -> str:
        """``local folder <location>``."""
        return f"local folder {self.location}"
