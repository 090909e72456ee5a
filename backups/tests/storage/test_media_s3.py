"""A clinic's files (X-rays) on S3 (``TenantS3MediaStorage``, moto in-process): archived, restored byte for
byte under a new generation that switches with the data, left exactly as they were by a failed restore, and
settled by crash recovery."""

from __future__ import annotations

import os

import boto3
import pytest
from django.core.exceptions import SuspiciousOperation
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django_tenants.utils import schema_context
from moto import mock_aws

from backups import media
from backups.models import JobStatus, Restore
from backups.services import restore as restores
from backups.tests.helpers import SCHEMA, make_backup
from clinics.media_storage import GENERATION_MARK, TenantS3MediaStorage
from clinics.models import Clinic
from dental.models import Patient

BUCKET = "respaldo-media"
LOCATION = "media"
ROOT = f"{LOCATION}/{SCHEMA}/"
FILES = {0: b"\x89PNG first x-ray" * 5000, 1: os.urandom(300_000), 2: b""}


@pytest.fixture
def s3_media(settings, tmp_path):
    """The default storage switched to per-clinic S3 media in a moto bucket; yields a boto3 client."""
    settings.MEDIA_ROOT = tmp_path / "media"  # nothing may land there
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket=BUCKET)
        options = {
            "bucket_name": BUCKET,
            "region_name": "us-east-1",
            "location": LOCATION,
            "access_key": "k",
            "secret_key": "s",
        }
        # A new dict fires setting_changed, which resets `storages` and `default_storage`.
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {"BACKEND": "clinics.media_storage.TenantS3MediaStorage", "OPTIONS": options},
        }
        yield client
    assert not (tmp_path / "media").exists()


def _objects(client) -> dict[str, bytes]:
    """Every object under the clinic's prefix (all generations): {key: bytes}."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=ROOT).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def _generation() -> str:
    return Clinic.objects.get(schema_name=SCHEMA).media_generation


def _current_files(client) -> dict[str, bytes]:
    """The clinic's files in its current generation: {name: bytes}."""
    generation = _generation()
    prefix = ROOT + (generation + "/" if generation else "")
    files = {}
    for key, data in _objects(client).items():
        name = key[len(prefix) :]
        if key.startswith(prefix) and not name.startswith(GENERATION_MARK):
            files[name] = data
    return files


def _add_xrays() -> dict[str, bytes]:
    """Give the first patients an X-ray each, written through the default storage; {name: bytes}."""
    written = {}
    with schema_context(SCHEMA):
        for index, patient in enumerate(Patient.objects.order_by("pk")[: len(FILES)]):
            patient.xray.save(f"x-{index}.png", ContentFile(FILES[index]), save=True)
            written[patient.xray.name] = FILES[index]
    connection.set_schema_to_public()
    return written


def _xray_names() -> dict[int, str]:
    with schema_context(SCHEMA):
        names = dict(Patient.objects.exclude(xray="").values_list("pk", "xray"))
    connection.set_schema_to_public()
    return names


def _damage_files(client, written: dict[str, bytes]) -> None:
    """Delete one file, change another, add a stray one (in the current generation), point a row elsewhere."""
    generation = _generation()
    prefix = ROOT + (generation + "/" if generation else "")
    first, second = sorted(written)[:2]
    client.delete_object(Bucket=BUCKET, Key=prefix + first)
    client.put_object(Bucket=BUCKET, Key=prefix + second, Body=b"changed")
    client.put_object(Bucket=BUCKET, Key=prefix + "stray.txt", Body=b"not named by any row")
    with schema_context(SCHEMA):
        Patient.objects.filter(xray=second).update(xray="xrays/elsewhere.png")
    connection.set_schema_to_public()


def _restore(backup_id: int) -> Restore:
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup_id, enqueue=False)
    return restores.restore_run(restore_id=restore.pk)


def _read_through_storage(names) -> dict[str, bytes]:
    """The files as the application reads them (default storage, in the clinic's schema)."""
    with schema_context(SCHEMA):
        files = {}
        for name in names:
            with default_storage.open(name, "rb") as handle:
                files[name] = handle.read()
    connection.set_schema_to_public()
    return files


# --- the storage ------------------------------------------------------------------------------


def test_keys_follow_the_clinics_generation(scratch_clinic, s3_media):
    with schema_context(SCHEMA):
        assert default_storage.save("notes/a.txt", ContentFile(b"one")) == "notes/a.txt"
        assert default_storage.url("notes/a.txt") == f"/media/{SCHEMA}/notes/a.txt"  # the site's view, no bucket URL
        with pytest.raises(SuspiciousOperation):
            default_storage.open("~0123456789ab/a.txt")  # another generation's folder
        with pytest.raises(SuspiciousOperation):
            default_storage.open("../clinica/a.txt")  # another clinic
    assert set(_objects(s3_media)) == {ROOT + "notes/a.txt"}

    Clinic.objects.filter(schema_name=SCHEMA).update(media_generation="~0123456789ab")
    with schema_context(SCHEMA):
        assert not default_storage.exists("notes/a.txt")  # read from the row, never cached
        default_storage.save("notes/a.txt", ContentFile(b"two"))
        assert default_storage.listdir("") == (["notes"], [])
    assert set(_objects(s3_media)) == {ROOT + "notes/a.txt", ROOT + "~0123456789ab/notes/a.txt"}
    with schema_context(SCHEMA):  # the empty generation does not list the others' folders
        Clinic.objects.filter(schema_name=SCHEMA).update(media_generation="")
        assert default_storage.listdir("") == (["notes"], [])
        assert default_storage.open("notes/a.txt").read() == b"one"


def test_the_request_tenant_gives_the_generation_without_a_query(scratch_clinic, s3_media, django_assert_num_queries):
    clinic = Clinic.objects.get(schema_name=SCHEMA)
    clinic.media_generation = "~aaaaaaaaaaaa"
    storage = TenantS3MediaStorage(bucket_name=BUCKET, location=LOCATION)
    connection.set_tenant(clinic)
    with django_assert_num_queries(0):
        assert storage._normalize_name("x.png") == f"{ROOT}~aaaaaaaaaaaa/x.png"
    connection.set_schema(SCHEMA)  # a schema without its row (a worker): the row is read
    assert storage._normalize_name("x.png") == f"{ROOT}x.png"


# --- backups and restores ---------------------------------------------------------------------


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_files_come_back_byte_for_byte(scratch_clinic, s3_media, payload_format):
    written = _add_xrays()
    names = _xray_names()
    assert _current_files(s3_media) == written and _generation() == ""
    backup = make_backup(payload_format=payload_format)
    assert backup.manifest["media"] == {"files": 3, "bytes": sum(map(len, written.values())), "missing": 0}
    _damage_files(s3_media, written)
    neighbour = f"{LOCATION}/{SCHEMA}2/x.png"  # another clinic whose name starts with this one's
    s3_media.put_object(Bucket=BUCKET, Key=neighbour, Body=b"theirs")

    restore = _restore(backup.pk)
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert restore.error == ""
    assert s3_media.get_object(Bucket=BUCKET, Key=neighbour)["Body"].read() == b"theirs"
    generation = _generation()
    assert generation.startswith(GENERATION_MARK)
    assert _xray_names() == names
    assert _current_files(s3_media) == written  # byte for byte; the stray file is gone
    assert set(_objects(s3_media)) == {f"{ROOT}{generation}/{name}" for name in written}  # the old generation too
    assert _read_through_storage(written) == written


def test_a_restored_clinic_is_backed_up_and_restored_again(scratch_clinic, s3_media):
    written = _add_xrays()
    first = make_backup()
    _damage_files(s3_media, written)
    assert _restore(first.pk).status == JobStatus.SUCCEEDED
    generation = _generation()

    second = make_backup()  # reads the new generation
    assert second.manifest["media"] == first.manifest["media"]  # the same three files, same bytes
    _damage_files(s3_media, written)
    restore = _restore(second.pk)
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert _generation() not in ("", generation)
    assert _current_files(s3_media) == written
    assert set(_objects(s3_media)) == {f"{ROOT}{_generation()}/{name}" for name in written}


def test_the_clinics_media_pages_serve_the_restored_files(scratch_clinic, s3_media):
    from django.contrib.auth.models import User
    from django.test import Client

    written = _add_xrays()
    backup = make_backup()
    _damage_files(s3_media, written)
    assert _restore(backup.pk).status == JobStatus.SUCCEEDED
    with schema_context(SCHEMA):
        User.objects.create_superuser("s3admin", "s3admin@example.com", "s3admin")
    connection.set_schema_to_public()
    client = Client(HTTP_HOST=f"{SCHEMA}.localhost")
    assert client.post("/admin/login/?next=/admin/", {"username": "s3admin", "password": "s3admin"}).status_code == 302
    for name, data in written.items():  # the request's clinic (its row, as loaded) names the new generation
        response = client.get(f"/media/{SCHEMA}/{name}")
        assert response.status_code == 200 and b"".join(response.streaming_content) == data
    assert client.get(f"/media/{SCHEMA}/stray.txt").status_code == 404


def test_a_missing_file_is_noted_and_the_rest_restored(scratch_clinic, s3_media):
    written = _add_xrays()
    gone = sorted(written)[0]
    s3_media.delete_object(Bucket=BUCKET, Key=ROOT + gone)
    backup = make_backup()
    assert backup.manifest["media"]["missing"] == 1 and gone in backup.error
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.SUCCEEDED and gone in restore.error
    assert _current_files(s3_media) == {k: v for k, v in written.items() if k != gone}


# --- failures: nothing changes ----------------------------------------------------------------


def _state(client) -> tuple[dict[str, bytes], str, dict[int, str]]:
    return _objects(client), _generation(), _xray_names()


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_a_restore_failing_after_every_file_was_staged_changes_nothing(
    scratch_clinic, s3_media, monkeypatch, payload_format
):
    written = _add_xrays()
    backup = make_backup(payload_format=payload_format)
    _damage_files(s3_media, written)
    before = _state(s3_media)
    staged = []
    real_sink, real_check = media.S3MediaStaging.sink, restores.check_read_to_the_end

    def counting_sink(self, path, stream):
        staged.append(path)
        return real_sink(self, path, stream)

    def check_then_fail(payload, backup):
        real_check(payload, backup)  # the archive read to its end: every file is staged by now
        assert len(staged) == len(written) and len(_objects(s3_media)) > len(before[0])
        raise OSError("the data restore failed after the files were staged")

    monkeypatch.setattr(media.S3MediaStaging, "sink", counting_sink)
    monkeypatch.setattr(restores, "check_read_to_the_end", check_then_fail)
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert "staged" in restore.error
    assert _state(s3_media) == before  # objects (every generation), pointer and rows as they were


def test_a_restore_failing_in_the_media_changes_nothing(scratch_clinic, s3_media, monkeypatch):
    written = _add_xrays()
    backup = make_backup()
    _damage_files(s3_media, written)
    before = _state(s3_media)
    real_sink, calls = media.S3MediaStaging.sink, []

    def failing_sink(self, path, stream):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("the bucket said no")
        return real_sink(self, path, stream)

    monkeypatch.setattr(media.S3MediaStaging, "sink", failing_sink)
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert _state(s3_media) == before


def test_a_restore_of_a_tampered_archive_changes_nothing(scratch_clinic, s3_media):
    from backups.tests.helpers import stored_path

    written = _add_xrays()
    backup = make_backup()
    _damage_files(s3_media, written)
    before = _state(s3_media)
    path = stored_path(backup.storage_name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert _state(s3_media) == before


# --- a worker that dies: crash recovery ------------------------------------------------------


def _die(*args, **kwargs):
    raise KeyboardInterrupt  # the worker is killed: no except clause of the restore runs


def test_a_worker_dying_after_the_commit_is_completed_by_recovery(scratch_clinic, s3_media, monkeypatch):
    written = _add_xrays()
    names = _xray_names()
    backup = make_backup()
    _damage_files(s3_media, written)
    old_keys = set(_objects(s3_media))

    monkeypatch.setattr(media.S3MediaStaging, "switch", _die)
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)
    with pytest.raises(KeyboardInterrupt):
        restores.restore_run(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == JobStatus.RUNNING and restore.outcome == Restore.Outcome.RESTORED
    # Rows and files switched in one commit: the clinic already reads the restored files.
    assert _current_files(s3_media) == written and _xray_names() == names
    assert old_keys <= set(_objects(s3_media))  # the previous generation is still there
    monkeypatch.undo()

    restores.restore_recover_crashed(restore)
    restore.refresh_from_db()
    assert restore.status == JobStatus.SUCCEEDED
    assert set(_objects(s3_media)) == {f"{ROOT}{_generation()}/{name}" for name in written}
    assert _current_files(s3_media) == written


def test_a_worker_dying_before_the_commit_is_discarded_by_recovery(scratch_clinic, s3_media, monkeypatch):
    written = _add_xrays()
    backup = make_backup(payload_format="json")
    _damage_files(s3_media, written)
    before = _state(s3_media)
    real_sink, calls = media.S3MediaStaging.sink, []

    def dying_sink(self, path, stream):
        calls.append(path)
        if len(calls) == 2:
            _die()
        return real_sink(self, path, stream)

    monkeypatch.setattr(media.S3MediaStaging, "sink", dying_sink)
    monkeypatch.setattr(media.S3MediaStaging, "discard", lambda self: None)  # a dead worker cleans nothing
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)
    with pytest.raises(KeyboardInterrupt):
        restores.restore_run(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == JobStatus.RUNNING and restore.outcome != Restore.Outcome.RESTORED
    assert len(_objects(s3_media)) == len(before[0]) + 1  # one file staged under a new generation
    monkeypatch.undo()

    restores.restore_recover_crashed(restore)
    restore.refresh_from_db()
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert _state(s3_media) == before


def test_switch_points_the_clinic_at_its_files_even_without_record(scratch_clinic, s3_media):
    """The files of a restore whose data committed without ``record`` still become the clinic's."""
    import io

    staging = media.media_staging(SCHEMA)
    assert isinstance(staging, media.S3MediaStaging)
    staging.prepare()
    staging.sink("xrays/a.png", io.BytesIO(b"restored"))
    assert _generation() == ""
    staging.switch()
    assert _generation() == staging.generation
    assert _current_files(s3_media) == {"xrays/a.png": b"restored"}
