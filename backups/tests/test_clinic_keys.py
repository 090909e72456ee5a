"""Per-clinic archive keys: each clinic's archives open only with its own key; erasing that key
makes every copy of them unreadable with any key the deployment holds (crypto-erasure)."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import timedelta

import boto3
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups import archive, clinic_keys
from backups.exceptions import BackupRefused
from backups.keys import archive_identities
from backups.models import AuditEntry, Backup, ClinicKey, JobStatus
from backups.services import restore as restores
from backups.services.offboard import erase_clinic_backups, erase_offboarded, offboard_clinic
from backups.services.upload import UploadRefused, backup_from_upload
from backups.tests.helpers import SCHEMA, make_backup, s3_config, stored_path, table_checksums, use_backups_storage
from backups.tests.test_offboard import platform_admin
from clinics.models import Clinic


def opens(data: bytes, identities: list[str]) -> bool:
    """Whether the archive decrypts and authenticates with these keys."""
    try:
        archive.verify_archive(io.BytesIO(data), identities=identities)
    except archive.ArchiveError:
        return False
    return True


@pytest.mark.django_db
def test_each_clinic_has_its_own_key_and_the_deployment_key_alone_opens_nothing():
    clinica, bienestar = make_backup("clinica"), make_backup("bienestar")
    ours, theirs = (stored_path(b.storage_name).read_bytes() for b in (clinica, bienestar))
    clinica_key = clinic_keys.identity_of(clinica.clinic)
    bienestar_key = clinic_keys.identity_of(bienestar.clinic)
    assert clinica_key and bienestar_key and clinica_key != bienestar_key
    assert opens(ours, [clinica_key]) and not opens(ours, [bienestar_key])
    assert not opens(ours, archive_identities()) and not opens(theirs, archive_identities())
    row = ClinicKey.objects.get(clinic=clinica.clinic, erased_at__isnull=True)
    assert clinica_key not in row.wrapped and row.public_key == archive.identity_public_key(clinica_key)


@pytest.mark.django_db
def test_another_clinics_backup_is_still_named_as_such_when_uploaded():
    theirs = stored_path(make_backup("bienestar").storage_name).read_bytes()
    with pytest.raises(UploadRefused) as refused:
        backup_from_upload(clinic="clinica", source=io.BytesIO(theirs), filename="theirs.respaldo")
    assert refused.value.code == "other_clinic" and "(bienestar)" in str(refused.value)


def test_an_erased_clinics_archives_open_with_no_key_we_hold(scratch_clinic, tmp_path, settings):
    pg, json = make_backup(), make_backup(payload_format="json")
    copies = {}  # copies outside our storage: a download folder, another disk
    for backup in (pg, json):
        copies[backup.pk] = tmp_path / f"copy-{backup.pk}.respaldo"
        shutil.copy(stored_path(backup.storage_name), copies[backup.pk])
    wrapped = stored_path(clinic_keys.stored_key_name(ClinicKey.objects.get(clinic=scratch_clinic)))
    assert wrapped.exists()
    assert all(opens(path.read_bytes(), clinic_keys.identities_held()) for path in copies.values())

    erased = erase_clinic_backups(scratch_clinic, actor="dpo@platform", reason="data-protection request #12")

    assert erased == 2
    for backup in (pg, json):
        backup.refresh_from_db()
        assert backup.expired_at is not None and not stored_path(backup.storage_name).exists()
    assert not wrapped.exists()
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.wrapped == "" and row.erased_at and row.erased_by == "dpo@platform"
    assert row.erase_reason == "data-protection request #12"
    entry = AuditEntry.objects.get(clinic=scratch_clinic, action=AuditEntry.Action.KEY_ERASED)
    assert entry.actor == "dpo@platform" and entry.details["keys"] == [clinic_keys.key_id(row.public_key)]
    # Every key this deployment holds: the other clinics' keys and the deployment's own keys.
    held = clinic_keys.identities_held()
    assert len(held) >= len(archive_identities()) + 2
    for path in copies.values():
        assert not opens(path.read_bytes(), held)
    # Nor does the age tool with the deployment key.
    for path in copies.values():
        result = subprocess.run(
            ["age", "-d", "-i", str(settings.BACKUPS_AGE_IDENTITY_FILE), str(path)], capture_output=True
        )
        assert result.returncode != 0


def test_after_an_erasure_the_clinic_gets_a_new_key_and_backs_up_and_restores(scratch_clinic):
    make_backup()
    first = ClinicKey.objects.get(clinic=scratch_clinic).public_key
    erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")
    original = table_checksums(SCHEMA)
    backup = make_backup()
    live = ClinicKey.objects.get(clinic=scratch_clinic, erased_at__isnull=True)
    assert live.public_key != first and ClinicKey.objects.filter(clinic=scratch_clinic).count() == 2
    restore = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False).pk
    )
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert table_checksums(SCHEMA) == original


def test_an_erasure_is_refused_while_a_backup_is_running_and_nothing_changes(scratch_clinic):
    done = make_backup()
    Backup.objects.create(clinic=scratch_clinic, status=JobStatus.RUNNING, kind="manual")
    with pytest.raises(BackupRefused) as refused:
        erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")
    assert refused.value.code == "clinic_busy_erase"
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.erased_at is None and row.wrapped
    assert stored_path(done.storage_name).exists() and stored_path(clinic_keys.stored_key_name(row)).exists()


def test_the_command_says_what_it_would_erase_and_needs_yes(scratch_clinic):
    backup = make_backup()
    out = io.StringIO()
    call_command("erase_clinic_backups", SCHEMA, "--reason", "left us", stdout=out)
    assert "Would erase the archive key of restaura and delete its 1 stored backups" in out.getvalue()
    assert stored_path(backup.storage_name).exists()
    with pytest.raises(CommandError, match="There is no clinic 'nowhere'"):
        call_command("erase_clinic_backups", "nowhere", "--reason", "x", "--yes")
    call_command("erase_clinic_backups", SCHEMA, "--reason", "left us", "--yes", stdout=out)
    assert "The archive key of restaura is destroyed; 1 stored backups deleted." in out.getvalue()
    assert not stored_path(backup.storage_name).exists()


def test_offboarding_ends_with_the_keys_erasure_after_the_keep_period(scratch_clinic, settings):
    settings.BACKUPS_OFFBOARD_KEEP_DAYS = 30
    final = offboard_clinic(clinic=scratch_clinic, requested_by="ops")
    copy = stored_path(final.storage_name).read_bytes()
    assert erase_offboarded() == 0  # within the keep period: kept, key alive
    assert ClinicKey.objects.get(clinic=scratch_clinic).erased_at is None

    assert erase_offboarded(now=timezone.now() + timedelta(days=31)) == 1
    assert ClinicKey.objects.get(clinic=scratch_clinic).erased_at is not None
    assert not opens(copy, clinic_keys.identities_held())
    assert erase_offboarded(now=timezone.now() + timedelta(days=32)) == 0  # nothing left: a second run is a no-op
    Clinic.objects.filter(pk=scratch_clinic.pk).update(offboarded_at=None)  # let the fixture drop it


def test_erasing_a_key_on_a_versioned_bucket_removes_every_version(scratch_clinic, moto_server, settings):
    client = boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    use_backups_storage(settings, s3_config(bucket_name="versioned", endpoint_url=moto_server, location="prod"))
    make_backup()
    row = ClinicKey.objects.get(clinic=scratch_clinic, erased_at__isnull=True)
    key = f"prod/{clinic_keys.stored_key_name(row)}"
    client.put_object(Bucket="versioned", Key=key, Body=client.get_object(Bucket="versioned", Key=key)["Body"].read())
    versions = client.list_object_versions(Bucket="versioned", Prefix=key).get("Versions", [])
    assert len(versions) == 2  # an overwrite keeps the older version on a versioned bucket

    erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")

    listing = client.list_object_versions(Bucket="versioned", Prefix="prod/keys/")
    assert listing.get("Versions", []) == [] and listing.get("DeleteMarkers", []) == []


def test_the_platform_admin_erases_a_clinics_backups_after_a_reason_and_a_tick(scratch_clinic):
    backup = make_backup()
    client = platform_admin()
    action = {"action": "erase_backups_selected", "_selected_action": [scratch_clinic.pk]}
    page = client.post("/admin/clinics/clinic/", action)
    text = page.content.decode()
    assert page.status_code == 200 and "Erase these clinics&#x27; backups?" in text and "<td>1</td>" in text
    page = client.post("/admin/clinics/clinic/", {**action, "post": "yes", "reason": "request #7"})
    assert "Give a reason and tick the box to go on." in page.content.decode()  # no tick: nothing happens
    assert stored_path(backup.storage_name).exists() and ClinicKey.objects.get(clinic=scratch_clinic).wrapped

    done = client.post(
        "/admin/clinics/clinic/", {**action, "post": "yes", "reason": "request #7", "understood": "on"}, follow=True
    )
    assert "is destroyed and 1 stored backups deleted" in done.content.decode()
    assert not stored_path(backup.storage_name).exists()
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.erased_at and row.erased_by == "superadmin" and row.erase_reason == "request #7"
