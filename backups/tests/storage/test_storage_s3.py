"""Backup storage on S3 (moto in-process): configuration, multipart round trips, failures that
abort the upload and leave nothing."""

from __future__ import annotations

import threading

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from backups.storage import (
    StorageError,
    StoredObject,
    StoredObjectNotFound,
    backup_storage,
    check_storage,
    delete_stored,
    store_stream,
    stored_sha256,
)
from backups.storage.s3 import BackupS3Storage
from backups.tests.helpers import BUCKET, PREFIX, s3_config, use_backups_storage
from backups.tests.storage.helpers import (
    KEY,
    MiB,
    PgDumpFailed,
    Producer,
    expected,
    no_leaks,
    s3_leftovers,
)


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
