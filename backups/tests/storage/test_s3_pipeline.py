"""Backup and restore end to end through S3 over real HTTP (moto's server), from separate
processes configured only by the environment, as a deployment would be."""

import boto3

from backups.models import Backup, JobStatus, Restore
from backups.storage import stored_sha256
from backups.tests.helpers import SCHEMA, damage_clinic, s3_config, table_checksums, use_backups_storage
from conftest import manage

BUCKET = "respaldo-e2e"


def test_backup_and_restore_through_s3_over_http(scratch_clinic, moto_server, settings):
    client = boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    client.create_bucket(Bucket=BUCKET)
    use_backups_storage(settings, s3_config(bucket_name=BUCKET, endpoint_url=moto_server, location="prod"))
    env = {
        "BACKUPS_STORAGE": "s3",
        "BACKUPS_S3_BUCKET": BUCKET,
        "BACKUPS_S3_ENDPOINT_URL": moto_server,
        "BACKUPS_S3_REGION": "us-east-1",
        "BACKUPS_S3_PREFIX": "prod",
        "BACKUPS_S3_ACCESS_KEY_ID": "testing",
        "BACKUPS_S3_SECRET_ACCESS_KEY": "testing",
    }
    original = table_checksums(SCHEMA)

    made = manage("backup_clinic", SCHEMA, **env)
    assert made.returncode == 0, made.stderr
    backup = Backup.objects.get(clinic=scratch_clinic)
    assert made.stdout.startswith(f"#{backup.pk} {SCHEMA} manual pg succeeded")
    head = client.head_object(Bucket=BUCKET, Key=f"prod/{backup.storage_name}")
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == backup.size
    assert stored_sha256(backup.storage_name).sha256 == backup.sha256

    damage_clinic()
    restored = manage("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes", **env)
    assert restored.returncode == 0, restored.stderr
    restore = Restore.objects.get(clinic=scratch_clinic)
    assert restore.status == JobStatus.SUCCEEDED and table_checksums(SCHEMA) == original
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    wrapped = {key for key in keys if key.startswith(f"prod/keys/{SCHEMA}/")}  # the clinic's own archive key
    assert len(wrapped) == 1
    assert keys - wrapped == {f"prod/{backup.storage_name}", f"prod/{restore.safety_backup.storage_name}"}


def test_storage_unreachable_is_one_clear_line(scratch_clinic):
    result = manage(
        "backup_clinic",
        SCHEMA,
        BACKUPS_STORAGE="s3",
        BACKUPS_S3_BUCKET="nowhere",
        BACKUPS_S3_ENDPOINT_URL="http://127.0.0.1:9",
        BACKUPS_S3_REGION="us-east-1",
        BACKUPS_S3_ACCESS_KEY_ID="k",
        BACKUPS_S3_SECRET_ACCESS_KEY="s",
        BACKUPS_S3_CONNECT_TIMEOUT="1",
        BACKUPS_S3_MAX_ATTEMPTS="1",
    )
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "unreachable" in error[0], result.stderr
    backup = Backup.objects.get(clinic=scratch_clinic)
    assert backup.status == JobStatus.FAILED and "unreachable" in backup.error
