"""Backup storage on S3 over real HTTP (a moto server): end to end, memory bounded for 150 MB, an
unreachable endpoint."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tracemalloc
import uuid

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from backups.storage import (
    StorageError,
    backup_storage,
    check_storage,
    delete_stored,
    open_stored,
    store_stream,
    stored_sha256,
)
from backups.tests.helpers import PREFIX, free_port, s3_config, use_backups_storage
from backups.tests.storage.helpers import (
    KEY,
    MiB,
    PgDumpFailed,
    Producer,
    expected,
    no_leaks,
    s3_leftovers,
)


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
