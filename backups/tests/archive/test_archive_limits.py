"""The archive's limits: payload size, decompression bombs stopped early, bounded memory while
streaming, no thread or file descriptor leaks. No database, no Django.
"""

import gc
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from backups.archive import (
    ArchiveError,
    ArchiveTooLarge,
    open_archive,
    verify_archive,
)
from backups.tests.archive.helpers import (
    CHUNK,
    K1,
    K2,
    make,
    seal,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def decrypt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "respaldo-archive-decrypt"]


# --- size limits and bombs --------------------------------------------------------------


def test_max_payload_bytes():
    payload = os.urandom(CHUNK * 3)
    data, summary = make(payload)
    assert verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=len(payload)) == summary
    with pytest.raises(ArchiveTooLarge):
        verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=len(payload) - 1)
    with pytest.raises(ArchiveTooLarge, match="larger than the allowed size"):
        verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=0)
    assert verify_archive(io.BytesIO(make(b"")[0]), identities=[K1], max_payload_bytes=0).payload_bytes == 0


def _bomb(member_size: int, members: int) -> bytes:
    """~1 MB of ciphertext expanding to members * member_size bytes (multi-frame zstd)."""
    compress = zstandard.ZstdCompressor(level=1).compress
    zeros = compress(bytes(member_size))
    header = tarfile.TarInfo("manifest.json")
    manifest = b'{"archive_version": 1}'
    header.size = len(manifest)
    parts = [compress(header.tobuf(tarfile.USTAR_FORMAT) + manifest + bytes(-len(manifest) % 512))]
    for i in range(1, members + 1):
        info = tarfile.TarInfo(f"payload/{i:06d}")
        info.size = member_size
        parts += [compress(info.tobuf(tarfile.USTAR_FORMAT)), zeros]
    return seal(b"".join(parts))


def test_decompression_bomb_is_stopped_early():
    bomb = _bomb(8 << 20, 512)  # 4 GiB of zeros
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ArchiveTooLarge):
            verify_archive(io.BytesIO(bomb), identities=[K1], max_payload_bytes=32 << 20)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.5, elapsed  # expanding and hashing 4 GiB takes several seconds
    assert peak < 16 << 20, peak

    # A single member that merely claims to be huge is refused at its header.
    info = tarfile.TarInfo("payload/000001")
    info.size = (8 << 30) - 1
    manifest = b'{"archive_version": 1}'
    head = tarfile.TarInfo("manifest.json")
    head.size = len(manifest)
    tar = head.tobuf(tarfile.USTAR_FORMAT) + manifest + bytes(-len(manifest) % 512) + info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ArchiveTooLarge):
        verify_archive(io.BytesIO(seal(zstandard.ZstdCompressor().compress(tar))), identities=[K1], max_payload_bytes=1)


# --- memory and streaming ----------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading, time, tracemalloc
    from backups.archive import generate_identity, open_archive, write_archive

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    SIZE = 200 * 1000 * 1000
    # Slices of a random pool, 3 MiB apart: incompressible within zstd's 2 MiB window, and cheap.
    POOL = os.urandom(17 << 20)

    class Payload:  # generator-like: only .read(n)
        def __init__(self):
            self.left, self.offset, self.sha = SIZE, 0, hashlib.sha256()
        def read(self, n):
            n = min(n, self.left, 1 << 20)
            self.offset = (self.offset + (3 << 20) + 7919) % (16 << 20)
            data = POOL[self.offset : self.offset + n]
            self.left -= n
            self.sha.update(data)
            return data

    key = generate_identity()
    payload = Payload()
    read_fd, write_fd = os.pipe()
    result = {}

    def produce():
        with open(write_fd, "wb") as out:
            result["written"] = write_archive(payload, out, manifest={"format_version": 1}, identities=[key])

    base = rss("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    sha, total = hashlib.sha256(), 0
    with open(read_fd, "rb") as stream, open_archive(stream, identities=[key]) as reader:
        buf = bytearray(1 << 16)
        while n := reader.readinto(buf):
            sha.update(memoryview(buf)[:n])
            total += n
        summary = reader.summary
    producer.join()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({
        "ok": sha.hexdigest() == payload.sha.hexdigest() == summary.payload_sha256 and total == SIZE
              and summary == result["written"],
        "archive_bytes": summary.archive_bytes,
        "seconds": elapsed, "traced_peak": peak, "rss_growth": rss("VmHWM") - base,
    }))
    """
)


def test_memory_stays_bounded_for_200_mb():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print(report)
    assert report["ok"], report
    assert report["archive_bytes"] > 190_000_000  # really incompressible: nothing was cheated
    assert report["traced_peak"] < 40_000_000, report  # the payload alone would be 200 MB
    assert report["rss_growth"] < 40_000_000, report


# --- threads and file descriptors ----------------------------------------------------------


def test_no_thread_or_fd_leaks():
    payload = os.urandom(4 << 20)  # more than the pipe holds: the thread is blocked writing
    data, _ = make(payload, chunk_size=1 << 20)
    gc.collect()
    base_fds, base_threads = fds(), len(decrypt_threads())

    with open_archive(io.BytesIO(data), identities=[K1]) as reader:
        assert reader.read(10) == payload[:10]
        assert len(decrypt_threads()) == base_threads + 1
    start = time.perf_counter()
    reader.close()
    assert time.perf_counter() - start < 1

    reader = open_archive(io.BytesIO(data), identities=[K1])
    reader.read(10)
    del reader  # abandoned without close()
    gc.collect()

    failures = [
        lambda: verify_archive(io.BytesIO(data), identities=[K2]),
        lambda: verify_archive(io.BytesIO(data[: len(data) // 2]), identities=[K1]),
        lambda: verify_archive(io.BytesIO(b"garbage"), identities=[K1]),
        lambda: verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=2 << 20),
    ]
    for failure in failures:
        with pytest.raises(ArchiveError):
            failure()

    class BrokenStorage:
        def __init__(self):
            self.inner = io.BytesIO(data)

        def read(self, n):
            if self.inner.tell() > len(data) // 2:
                raise ConnectionError("storage went away")
            return self.inner.read(n)

    with pytest.raises(ConnectionError, match="storage went away"):  # the storage's own error, unchanged
        verify_archive(BrokenStorage(), identities=[K1])

    assert len(decrypt_threads()) == base_threads
    assert fds() == base_fds
