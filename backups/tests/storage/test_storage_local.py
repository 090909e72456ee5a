"""Backup storage: the object keys, the accessor, and a local folder (round trips, failures of the
producer or of the disk, nothing left behind)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.test import override_settings

from backups.storage import (
    StorageError,
    StoredObject,
    StoredObjectNotFound,
    backup_key,
    backup_storage,
    check_storage,
    delete_stored,
    open_stored,
    store_stream,
    stored_sha256,
)
from backups.tests.helpers import use_backups_storage
from backups.tests.storage.helpers import (
    CREATED,
    KEY,
    MiB,
    PgDumpFailed,
    Producer,
    chunk,
    expected,
    no_leaks,
)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()] if root.exists() else []


def local_config(location: Path) -> dict:
    return {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(location),
            "base_url": None,
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    }


# --- keys and accessor --------------------------------------------------------------


def test_backup_key_layout_in_utc():
    assert KEY == "clinics/clinica/2025/03/20250304T050607890123Z-full.respaldo"
    local = datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=3)))
    assert backup_key(schema="c_2", kind="schema-only", created_at=local, ext="tar.zst") == (
        "clinics/c_2/2024/12/20241231T213000000000Z-schema-only.tar.zst"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schema": "../etc"},
        {"schema": "a/b"},
        {"schema": ""},
        {"schema": "-x"},
        {"schema": "x" * 64},
        {"kind": "Full"},
        {"kind": "a.b"},
        {"ext": "../x"},
        {"ext": ""},
        {"created_at": datetime(2025, 1, 1)},  # naive
    ],
)
def test_backup_key_rejects_unsafe_parts(kwargs):
    with pytest.raises(ValueError):
        backup_key(**{"schema": "clinica", "kind": "full", "created_at": CREATED, **kwargs})


def test_accessor_follows_override_settings(settings, tmp_path):
    use_backups_storage(settings, local_config(tmp_path / "a"))
    first = backup_storage()
    assert first.location == str(tmp_path / "a")
    assert backup_storage() is first  # cached by `storages` while settings stay
    with override_settings(STORAGES={**settings.STORAGES, "backups": local_config(tmp_path / "b")}):
        assert backup_storage().location == str(tmp_path / "b")
    assert backup_storage().location == str(tmp_path / "a")


# --- local folder -------------------------------------------------------------------


@pytest.fixture
def local(settings, tmp_path):
    root = tmp_path / "backups"
    use_backups_storage(settings, local_config(root))
    assert isinstance(backup_storage(), FileSystemStorage)
    return root


def test_local_round_trip_20mb(local):
    producer = Producer(20 * MiB)
    with no_leaks():
        stored, result = store_stream(KEY, producer)
    size, sha = expected(20 * MiB, producer.piece)
    assert result == "producer-result"
    assert stored == StoredObject(name=KEY, size=size, sha256=sha)
    path = local / KEY
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert producer.thread is not threading.main_thread()
    assert stored_sha256(KEY) == stored
    with open_stored(KEY) as stream:
        assert stream.read(10) == chunk(0, 10)
    # permissions: file 0600, every folder created by the storage 0700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    folder = path.parent
    while True:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        if folder == local:
            break
        folder = folder.parent


def test_local_same_name_twice_gets_a_new_name(local):
    first, _ = store_stream(KEY, Producer(1000))
    second, _ = store_stream(KEY, Producer(2000))
    assert first.name == KEY and second.name != KEY
    assert second.name.startswith(KEY.removesuffix(".respaldo")) and second.name.endswith(".respaldo")
    assert (local / second.name).stat().st_size == 2000


def test_local_empty_stream(local):
    stored, _ = store_stream(KEY, lambda writer: None)
    assert stored.size == 0 and stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert (local / KEY).read_bytes() == b""


def test_local_producer_may_close_its_writer(local):
    def produce(writer):
        writer.write(b"x" * 100_000)
        writer.close()
        return 7

    stored, result = store_stream(KEY, produce)
    assert (stored.size, result) == (100_000, 7)


def test_local_producer_failure_propagates_and_leaves_nothing(local):
    producer = Producer(50 * MiB, fail_after=5 * MiB)
    with no_leaks(), pytest.raises(PgDumpFailed) as excinfo:
        store_stream(KEY, producer)
    assert excinfo.value is producer.raised  # the producer's exception itself, unchanged
    assert "connection lost" in str(excinfo.value)
    assert files_under(local) == []


def test_storage_failure_does_not_wait_forever_for_a_stuck_producer(settings, tmp_path, monkeypatch):
    """A producer that is not writing (stuck elsewhere) cannot hang store_stream."""
    (tmp_path / "file").write_text("a file where the backups folder should be")
    use_backups_storage(settings, local_config(tmp_path / "file" / "backups"))
    monkeypatch.setattr("backups.storage.PRODUCER_STOP_TIMEOUT", 0.5)
    release, outcome = threading.Event(), []

    def stuck(writer):
        release.wait(30)  # e.g. a lock wait before its first write
        try:
            writer.write(b"late")
        except BrokenPipeError as exc:
            outcome.append(exc)
            raise

    started = time.monotonic()
    with pytest.raises(StorageError, match="upload failed: Not a directory"):
        store_stream(KEY, stuck)
    assert time.monotonic() - started < 5
    threads = [t for t in threading.enumerate() if t.name.startswith("backup-producer:")]
    assert len(threads) == 1
    release.set()
    threads[0].join(5)
    assert not threads[0].is_alive() and isinstance(outcome[0], BrokenPipeError)


def test_delete_and_missing(local):
    store_stream(KEY, Producer(10))
    assert delete_stored(KEY) is True
    assert delete_stored(KEY) is False
    with pytest.raises(StoredObjectNotFound):
        open_stored(KEY)


def test_check_storage_local(settings, tmp_path):
    use_backups_storage(settings, local_config(tmp_path / "new" / "backups"))
    check_storage()
    assert stat.S_IMODE((tmp_path / "new" / "backups").stat().st_mode) == 0o700
    assert os.listdir(tmp_path / "new" / "backups") == []
    (tmp_path / "file").write_text("x")
    use_backups_storage(settings, local_config(tmp_path / "file"))
    with pytest.raises(StorageError, match="not a folder"):
        check_storage()


@pytest.fixture
def full_disk(tmp_path):
    """A real 4 MiB tmpfs (we run as root here): writes beyond it fail with ENOSPC."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"The disk-full test mounts a small tmpfs and needs root: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_local_disk_full(settings, full_disk):
    root = full_disk / "backups"
    use_backups_storage(settings, local_config(root))
    producer = Producer(20 * MiB)
    started = time.monotonic()
    with no_leaks(), pytest.raises(StorageError, match="full") as excinfo:
        store_stream(KEY, producer)
    assert time.monotonic() - started < 20
    assert "no space left" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, OSError)
    # the producer was blocked writing and got a broken pipe instead of hanging
    assert isinstance(producer.raised, BrokenPipeError)
    assert producer.written < 20 * MiB
    assert files_under(root) == []
    assert os.statvfs(full_disk).f_bfree * os.statvfs(full_disk).f_frsize > 3 * MiB  # space given back
