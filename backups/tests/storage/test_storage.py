"""Backup storage: streaming stores on real storages (local folder, tmpfs, moto S3 in-process and over HTTP).

Nothing here mocks the storage itself. Failure injection uses real mechanisms: a full tmpfs
for "disk full", a botocore event hook answering one UploadPart with HTTP 500, a closed
port for "unreachable", a moto bucket that does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from django.core.files.storage import FileSystemStorage
from django.test import override_settings
from moto import mock_aws

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
from backups.storage_backends import BackupS3Storage
from backups.tests.helpers import BUCKET, PREFIX, free_port, s3_config, use_backups_storage

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


KEY = backup_key(schema="clinica", kind="full", created_at=CREATED)


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


# --- S3 (moto in-process) -----------------------------------------------------------


@pytest.fixture
def s3(settings):
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket=BUCKET)
        use_backups_storage(settings, s3_config())
        yield client


def s3_leftovers(client, bucket: str = BUCKET) -> tuple[list[str], list[str]]:
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return objects, uploads


def test_s3_storage_configuration(s3):
    storage = backup_storage()
    assert isinstance(storage, BackupS3Storage)
    config = storage.transfer_config
    assert (config.max_concurrency, config.max_in_memory_upload_chunks) == (2, 2)
    assert config.multipart_chunksize == config.multipart_threshold == 8 * MiB
    assert storage.file_overwrite is False
    assert storage.client_config.signature_version == "s3v4"


def test_s3_round_trip_25mb_multipart(s3):
    producer = Producer(25 * MiB)
    calls = []
    client = backup_storage().connection.meta.client
    client.meta.events.register("before-call.s3.UploadPart", lambda **kw: calls.append(1))
    stored, result = store_stream(KEY, producer)
    size, sha = expected(25 * MiB, producer.piece)
    assert result == "producer-result"
    assert stored == StoredObject(name=KEY, size=size, sha256=sha)
    assert len(calls) == 4  # 8+8+8+1 MiB: really multipart
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{KEY}")
    assert head["ContentLength"] == size
    assert head["ServerSideEncryption"] == "AES256"
    assert stored_sha256(KEY) == stored
    # same name again: django-storages adds a suffix, and store_stream reports it
    again, _ = store_stream(KEY, Producer(1000))
    assert again.name != KEY and again.name.startswith("clinics/clinica/2025/03/")
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{again.name}")["ContentLength"] == 1000
    url = backup_storage().url(KEY)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and f"{PREFIX}/{KEY}" in url


def test_s3_small_and_empty_objects(s3):
    small, _ = store_stream(KEY, Producer(3 * MiB))
    empty, _ = store_stream("clinics/clinica/empty.respaldo", lambda writer: None)
    assert stored_sha256(small.name) == small
    assert stored_sha256(empty.name) == empty and empty.size == 0
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{KEY}")["ServerSideEncryption"] == "AES256"


def test_s3_producer_failure_aborts_multipart(s3):
    producer = Producer(60 * MiB, fail_after=20 * MiB)
    store_stream("clinics/clinica/warmup.respaldo", Producer(10))  # first client creation
    delete_stored("clinics/clinica/warmup.respaldo")
    with no_leaks(), pytest.raises(PgDumpFailed) as excinfo:
        store_stream(KEY, producer)
    assert excinfo.value is producer.raised
    assert s3_leftovers(s3) == ([], [])


def test_s3_error_mid_upload(s3):
    client = backup_storage().connection.meta.client
    lock, calls = threading.Lock(), []

    def second_part_fails(params, **kwargs):
        with lock:
            calls.append(params.get("PartNumber"))
            if len(calls) != 2:
                return None
        response = AWSResponse("https://s3.amazonaws.com/", 500, {}, None)
        return response, {
            "Error": {"Code": "InternalError", "Message": "We encountered an internal error. Please try again."},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        }

    client.meta.events.register("before-call.s3.UploadPart", second_part_fails)
    producer = Producer(200 * MiB)
    with no_leaks(), pytest.raises(StorageError) as excinfo:
        store_stream(KEY, producer)
    message = str(excinfo.value)
    assert message.startswith("S3 refused the upload: InternalError We encountered an internal error")
    assert isinstance(excinfo.value.__cause__, ClientError)
    # the producer was stopped (broken pipe) instead of being drained to the end
    assert isinstance(producer.raised, BrokenPipeError)
    assert producer.written < 80 * MiB
    assert s3_leftovers(s3) == ([], [])


def test_s3_missing_bucket(s3, settings):
    check_storage()
    use_backups_storage(settings, s3_config(bucket_name="no-such-bucket"))
    with pytest.raises(StorageError, match="S3 bucket 'no-such-bucket' does not exist"):
        check_storage()
    with pytest.raises(StorageError, match="NoSuchBucket|does not exist"):
        store_stream(KEY, Producer(10 * MiB))


def test_s3_missing_object(s3):
    with pytest.raises(StoredObjectNotFound):
        stored_sha256(KEY)
    assert delete_stored(KEY) is False


class RssSampler:
    """Samples this process's resident set size (VmRSS) in a thread; returns peak growth."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.base = self.peak = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def start(self):
        self.base = self.peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> int:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return self.peak - self.base


# --- S3 over real HTTP (moto server) ------------------------------------------------


def http_bucket(settings, endpoint: str, **options):
    """A fresh bucket on the moto server, configured as the backups storage; returns a client."""
    bucket = f"respaldo-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    client.create_bucket(Bucket=bucket)
    use_backups_storage(settings, s3_config(bucket_name=bucket, endpoint_url=endpoint, **options))
    return client, bucket


def test_s3_over_http_end_to_end(moto_server, settings):
    client, bucket = http_bucket(settings, moto_server, connect_timeout=5, max_attempts=2)
    check_storage()
    producer = Producer(12 * MiB)
    stored, _ = store_stream(KEY, producer)
    assert (stored.size, stored.sha256) == expected(12 * MiB, producer.piece)
    head = client.head_object(Bucket=bucket, Key=f"{PREFIX}/{KEY}")
    assert head["ContentLength"] == 12 * MiB and head["ServerSideEncryption"] == "AES256"
    with open_stored(KEY) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == stored.sha256
    assert stored_sha256(KEY) == stored
    assert delete_stored(KEY) is True
    assert delete_stored(KEY) is False
    # a failing producer over HTTP leaves nothing either
    with pytest.raises(PgDumpFailed):
        store_stream(KEY, Producer(30 * MiB, fail_after=17 * MiB))
    assert s3_leftovers(client, bucket) == ([], [])


def stream_150mb_measured(settings, endpoint: str, **options) -> tuple[float, float]:
    """Store 150 MiB over HTTP; return (peak traced Python memory, peak RSS growth) in MiB."""
    http_bucket(settings, endpoint, **options)
    store_stream("clinics/clinica/warmup.respaldo", Producer(10 * MiB))  # imports, client, connections
    # A slow link (0.1 s per part): the producer runs ahead, so whatever the transfer
    # is willing to queue in memory, it does.
    client = backup_storage().connection.meta.client
    client.meta.events.register("before-call.s3.UploadPart", lambda **kwargs: time.sleep(0.1))
    rss = RssSampler()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        rss.start()
        stored, _ = store_stream(KEY, Producer(150 * MiB))
        traced = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
        rss_growth = rss.stop()
    assert stored.size == 150 * MiB
    assert delete_stored(stored.name)
    return traced / MiB, rss_growth / MiB


def test_s3_memory_stays_bounded_for_150mb(moto_server, settings):
    """Streaming 150 MiB keeps this process's memory flat: about 3 parts of 8 MiB.

    Measured against moto over HTTP (its own process): in-process moto keeps several
    copies of every part in flight plus cyclic garbage (+280 MiB RSS for this upload),
    which would measure moto, not the upload path.
    """
    traced, rss_growth = stream_150mb_measured(settings, moto_server)
    print(f"\n150 MiB to S3: peak traced +{traced:.1f} MiB, peak RSS +{rss_growth:.1f} MiB")
    assert traced < 50
    assert rss_growth < 90  # RSS also counts allocator arenas of 4 threads; buffered whole it is > 150


def test_memory_bound_would_catch_boto3_default_transfer_config(moto_server, settings):
    """Control: the same upload with boto3's default TransferConfig (10 parts in memory) exceeds the bound."""
    traced, rss_growth = stream_150mb_measured(settings, moto_server, transfer_config=TransferConfig())
    print(f"\n150 MiB, default TransferConfig: peak traced +{traced:.1f} MiB, peak RSS +{rss_growth:.1f} MiB")
    assert traced > 50


def test_s3_unreachable_endpoint(settings):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    use_backups_storage(settings, s3_config(endpoint_url=endpoint, connect_timeout=2, max_attempts=1))
    started = time.monotonic()
    with pytest.raises(StorageError, match="^backup storage unreachable: ") as excinfo:
        check_storage()
    assert endpoint in str(excinfo.value)
    producer = Producer(10 * MiB)
    with no_leaks(), pytest.raises(StorageError, match="unreachable"):
        store_stream(KEY, producer)
    assert time.monotonic() - started < 10
