"""The decrypting thread of the archive reader: ``pyrage.decrypt_io(stream -> pipe)`` (see ``backups.archive``).

``DecryptWorker`` runs age decryption in a background thread and hands the plaintext (a zstd
stream) to ``ArchiveReader`` through an ``os.pipe``; ``_Tap`` counts, hashes and keeps the
first bytes of the archive as it is read, and ``failure()`` turns what pyrage raised into an
``ArchiveError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from typing import Any, BinaryIO

import pyrage

from backups.archive.common import (
    AGE_MAGICS,
    COPY,
    PIPE_SIZE,
    ArchiveCorrupt,
    ArchiveNotRecognized,
    ArchiveWrongKey,
)


class _Cancelled(Exception):
    """Raised inside the decrypt thread's writer when the reader is closed early."""


class _Tap:
    """Wraps the archive stream for ``decrypt_io``: counts, hashes, keeps the first bytes and errors."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.error: BaseException | None = None
        self.bytes = 0
        self.sha256 = hashlib.sha256()
        self.head = b""
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        try:
            if size is None or size < 0:
                size = COPY
            if self._pending:
                data, self._pending = self._pending[:size], self._pending[size:]
                return data
            data = self._stream.read(size)
            if data is None:
                raise TypeError("the archive stream returned None (non-blocking streams are not supported)")
            data = bytes(data)
        except BaseException as exc:
            self.error = exc
            raise
        self.bytes += len(data)
        self.sha256.update(data)
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        if len(data) > size:  # a misbehaving stream; pyrage would fail on it
            data, self._pending = data[:size], data[size:]
        return data


class DecryptWorker:
    """Runs ``pyrage.decrypt_io(stream -> pipe)`` in a thread; the reader reads the pipe's other end.

    Holds no reference to the ``ArchiveReader`` so that an abandoned reader can be collected
    (its ``close()`` then stops this thread).
    """

    def __init__(self, stream: BinaryIO, identities: list[Any]) -> None:
        self.tap = _Tap(stream)
        self.error: BaseException | None = None
        self._cancelled = False
        read_fd, self._write_fd = os.pipe()
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self._write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.pipe = open(read_fd, "rb", buffering=0)  # noqa: SIM115 -- closed in shutdown()
        self._thread = threading.Thread(
            target=self._run, args=(identities,), name="respaldo-archive-decrypt", daemon=True
        )
        self._thread.start()

    def _run(self, identities: list[Any]) -> None:
        try:
            pyrage.decrypt_io(self.tap, self, identities)
        except BaseException as exc:
            self.error = exc
        finally:
            os.close(self._write_fd)

    # The writer side, called by pyrage from the thread.
    def write(self, data: bytes) -> int:
        if self._cancelled:
            raise _Cancelled()
        return os.write(self._write_fd, data)

    def flush(self) -> None:
        return None

    def finish(self) -> None:
        """Wait for the thread (it has closed the pipe: the reader saw EOF)."""
        self._thread.join()

    def shutdown(self) -> None:
        """Stop the thread and close the pipe; safe to call more than once."""
        if self._thread.is_alive():
            self._cancelled = True
            # Drain until the thread closes its end: it is blocked in at most one write.
            with contextlib.suppress(OSError, ValueError):
                while self.pipe.read(COPY):
                    pass
            self._thread.join()
        self.pipe.close()

    def failure(self) -> BaseException | None:
        """The thread's error as an ``ArchiveError`` (or the stream's own error), if any."""
        if self.tap.error is not None:
            return self.tap.error
        error = self.error
        if error is None or isinstance(error, _Cancelled):
            return None
        text = str(error)
        if isinstance(error, pyrage.DecryptError):
            head = self.tap.head.lstrip()
            if not head or not (head.startswith(AGE_MAGICS) or any(m.startswith(head) for m in AGE_MAGICS)):
                return ArchiveNotRecognized()
            if "No matching keys" in text:
                return ArchiveWrongKey()
            return ArchiveCorrupt(f"encryption header: {text}")
        if isinstance(error, OSError):
            return ArchiveCorrupt(f"encrypted data: {text}")
        return error
