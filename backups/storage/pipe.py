"""The pipe between a backup's producer thread and the backend's ``save_stream()`` (see
``backups.storage.store_stream``).

The producer writes into an ``os.pipe`` through ``PipeWriter`` (gathering small writes);
the storage reads the other end through ``HashingPipeReader``, which counts and hashes what it
hands over and raises at end-of-file if the producer failed, so that a truncated object is
never saved as if complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO, Generic, TypeVar

T = TypeVar("T")

PIPE_SIZE = 1024 * 1024  # kernel pipe buffer (Linux F_SETPIPE_SZ; default 64 KiB)
READ_CHUNK = 1024 * 1024
_WRITE_BUFFER = 64 * 1024  # small producer writes are gathered up to this size


# --- the pipe between producer and storage -------------------------------------------


class _ProducerFailed(Exception):
    """Raised by the pipe reader at end-of-file when the producer did not finish."""


class ProducerState(Generic[T]):
    def __init__(self) -> None:
        self.ok = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.bytes_written = 0
        self.reader_closed = False  # the storage side is gone: writes fail at once


class PipeWriter(io.BufferedIOBase):
    """What ``produce`` writes into. ``write`` blocks until the storage has taken the bytes.

    ``close()`` only flushes: the pipe itself is closed by ``store_stream`` once the
    producer has returned, so that end-of-file always comes with a known outcome.
    """

    def __init__(self, fd: int, state: ProducerState[Any]):
        super().__init__()
        self._fd = fd
        self._state = state
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed backup stream")
        if self._state.reader_closed:
            raise self._broken()
        view = memoryview(data).cast("B")
        size = view.nbytes
        if len(self._buffer) + size < _WRITE_BUFFER:
            self._buffer += view
        else:
            self._flush_buffer()
            self._write_all(view)
        return size

    def flush(self) -> None:
        if not self.closed:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        if self._buffer:
            data, self._buffer = self._buffer, bytearray()
            self._write_all(memoryview(data))

    def _write_all(self, view: memoryview) -> None:
        if self._fd < 0:
            raise BrokenPipeError(errno.EPIPE, "backup stream already released")
        while view:
            try:
                written = os.write(self._fd, view)
            except BrokenPipeError as exc:
                raise self._broken() from exc
            self._state.bytes_written += written
            view = view[written:]

    @staticmethod
    def _broken() -> BrokenPipeError:
        return BrokenPipeError(errno.EPIPE, "backup storage stopped reading (the upload failed or was cancelled)")

    def _release(self) -> None:
        """Forget the fd (store_stream closes it) without flushing: no late write can land in a reused fd."""
        self._buffer = bytearray()
        self._fd = -1
        super().close()


class HashingPipeReader(io.RawIOBase):
    """Read end of the pipe, handed to ``Storage.save()``. Non-seekable.

    ``read(n)`` returns exactly ``n`` bytes unless end-of-file comes first (s3transfer takes
    a short read of a non-seekable source for its end, and would store a truncated object).
    At end-of-file it raises unless the producer returned normally.
    """

    def __init__(self, fd: int, state: ProducerState[Any]):
        super().__init__()
        self._fd = fd
        self._state = state
        self._sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed backup stream")
        if size is None or size < 0:
            return self.readall()
        chunks = []
        remaining = size
        while remaining > 0:
            data = os.read(self._fd, min(remaining, PIPE_SIZE))
            if not data:
                self._reached_eof()
                break
            chunks.append(data)
            remaining -= len(data)
        out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._sha256.update(out)
        self.bytes_read += len(out)
        return out

    def readall(self) -> bytes:
        chunks = []
        while data := self.read(READ_CHUNK):
            chunks.append(data)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _reached_eof(self) -> None:
        self.eof = True
        if not self._state.ok:
            raise _ProducerFailed("the backup producer did not finish; refusing to store a truncated file") from (
                self._state.error
            )

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def close(self) -> None:
        if not self.closed:
            self._state.reader_closed = True
            try:
                os.close(self._fd)
            finally:
                super().close()


def run_producer(produce: Callable[[BinaryIO], T], writer: PipeWriter, fd: int, state: ProducerState[T]) -> None:
    try:
        result = produce(writer)  # type: ignore[arg-type]
        writer.flush()
    except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
        state.error = exc
    else:
        state.result = result
        state.ok = True
    finally:
        # The outcome is published before the reader can see end-of-file.
        writer._release()
        os.close(fd)


def new_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_fd, write_fd
