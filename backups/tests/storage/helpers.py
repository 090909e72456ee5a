"""Helpers shared by the storage tests: producers of streams, leak checks, storage configurations."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from datetime import UTC, datetime

from backups.storage import (
    backup_key,
)
from backups.tests.helpers import BUCKET

MiB = 1024 * 1024
CREATED = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
BLOCK = os.urandom(MiB)


# --- helpers ------------------------------------------------------------------------


class PgDumpFailed(Exception):
    """Stands for the caller's own error (e.g. pg_dump exiting non-zero)."""


def chunk(i: int, size: int) -> bytes:
    """Deterministic, position-dependent data (part reordering would change the hash)."""
    return i.to_bytes(8, "big") + BLOCK[8:size]


def expected(total: int, piece: int) -> tuple[int, str]:
    sha, n, i = hashlib.sha256(), 0, 0
    while n < total:
        data = chunk(i, min(piece, total - n))
        sha.update(data)
        n += len(data)
        i += 1
    return n, sha.hexdigest()


class Producer:
    """Writes ``total`` bytes in pieces of ``piece`` bytes (plus tiny writes), optionally failing."""

    def __init__(self, total: int, piece: int = MiB - 3, fail_after: int | None = None):
        self.total, self.piece, self.fail_after = total, piece, fail_after
        self.written = 0
        self.raised: BaseException | None = None
        self.thread: threading.Thread | None = None

    def __call__(self, writer) -> str:
        self.thread = threading.current_thread()
        i = 0
        try:
            while self.written < self.total:
                data = chunk(i, min(self.piece, self.total - self.written))
                # a few tiny writes go through the writer's small-write buffer
                head, tail = data[:5], data[5:]
                writer.write(head)
                writer.write(tail)
                self.written += len(data)
                i += 1
                if self.fail_after is not None and self.written >= self.fail_after:
                    raise PgDumpFailed(f"pg_dump: error: connection lost after {self.written} bytes")
        except BaseException as exc:
            self.raised = exc
            raise
        return "producer-result"


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def no_leaks():
    """Threads and file descriptors are back to their count after the block."""
    threads, fds = threading.active_count(), fd_count()
    yield
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    assert fd_count() == fds


KEY = backup_key(schema="clinica", kind="full", created_at=CREATED)


def s3_leftovers(client, bucket: str = BUCKET) -> tuple[list[str], list[str]]:
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return objects, uploads
