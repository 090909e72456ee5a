"""Offboarding a clinic: a last backup, then its schema and domains go; its backups stay, then are erased."""

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.exceptions import ClinicNotFound
from backups.models import AuditEntry, Backup, BackupPolicy, JobStatus
from backups.services.backup import backup_request
from backups.services.offboard import erase_offboarded, offboard_clinic
from backups.tests.helpers import SCHEMA, platform_admin, schemas, storage_files, stored_path
from clinics.models import Clinic, Domain
from conftest import host_client


def test_the_platform_offboards_a_clinic_after_a_confirmation_page(scratch_clinic):
    client = platform_admin()
    action = {"action": "offboard_selected", "_selected_action": [scratch_clinic.pk]}
    page = client.post("/admin/clinics/clinic/", action)
    assert page.status_code == 200 and "Offboard these clinics?" in page.content.decode()
    assert f'name="confirm_{scratch_clinic.pk}"' in page.content.decode()
    assert SCHEMA in schemas()  # nothing happened yet

    # "Yes" alone, or a mistyped name, offboards nothing: the page asks again, saying why
    for typed in ["", "clinica", SCHEMA.upper()]:
        again = client.post("/admin/clinics/clinic/", {**action, "post": "yes", f"confirm_{scratch_clinic.pk}": typed})
        assert again.status_code == 200
        assert f"Type the clinic's name exactly as shown ({SCHEMA}) to offboard it." in again.content.decode()
        assert SCHEMA in schemas() and Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is None
    assert not Backup.objects.filter(clinic=scratch_clinic).exists()

    client.post("/admin/clinics/clinic/", {**action, "post": "yes", f"confirm_{scratch_clinic.pk}": SCHEMA})
    clinic = Clinic.objects.get(pk=scratch_clinic.pk)
    assert clinic.offboarded_at is not None and SCHEMA not in schemas()
    assert not Domain.objects.filter(tenant=clinic).exists()
    assert not BackupPolicy.objects.get(clinic=clinic).enabled
    last = Backup.objects.filter(clinic=clinic).latest("pk")
    assert last.status == JobStatus.SUCCEEDED and last.note == "offboarding" and stored_path(last.storage_name).exists()
    entry = AuditEntry.objects.get(action="offboarded", clinic=clinic)
    assert entry.actor == "superadmin" and entry.backup_id_ref == last.pk
    assert host_client(f"{SCHEMA}.localhost").get("/admin/").status_code == 404
    with pytest.raises(ClinicNotFound, match="offboarded"):
        backup_request(clinic=SCHEMA, enqueue=False)
    assert client.get(f"/admin/clinics/clinic/{clinic.pk}/delete/").status_code == 403


def test_a_failed_last_backup_offboards_nothing(scratch_clinic, settings, tmp_path):
    settings.BACKUPS_PG_BIN_DIR = str(tmp_path)  # no pg_dump there: the last backup fails
    with pytest.raises(Exception, match="was not offboarded"):
        offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    clinic = Clinic.objects.get(pk=scratch_clinic.pk)
    assert clinic.offboarded_at is None and SCHEMA in schemas()
    assert Domain.objects.filter(tenant=clinic).exists()
    assert not AuditEntry.objects.filter(action="offboarded").exists()


def test_an_offboarded_clinics_backups_are_erased_after_the_keep_period(scratch_clinic, settings):
    last = offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    assert erase_offboarded(timezone.now() + timedelta(days=89)) == 0
    assert last.storage_name in storage_files()
    assert erase_offboarded(timezone.now() + timedelta(days=91)) == 1
    last.refresh_from_db()
    assert last.expired_at is not None and last.storage_name not in storage_files()
    assert AuditEntry.objects.filter(action="pruned", backup_id_ref=last.pk).exists()


def test_the_platform_brings_an_offboarded_clinic_back_from_its_newest_backup(scratch_clinic):
    from backups.tests.helpers import table_checksums

    before = table_checksums(SCHEMA)
    offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    assert SCHEMA not in schemas()
    client = platform_admin()
    last = Backup.objects.filter(clinic=scratch_clinic).latest("pk")
    day = timezone.localdate().isoformat()
    kept = (timezone.localdate() + timedelta(days=90)).isoformat()

    # the list says the clinic is offboarded, and until when its backups are kept; a filter finds it
    listed = client.get("/admin/clinics/clinic/?state=offboarded").content.decode()
    assert scratch_clinic.name in listed
    assert f"Offboarded on {day}" in listed and f"backups kept until {kept}" in listed
    assert scratch_clinic.name not in client.get("/admin/clinics/clinic/?state=active").content.decode()

    # a confirmation page says what will happen, and nothing happens yet
    action = {"action": "bring_back_selected", "_selected_action": [scratch_clinic.pk]}
    page = client.post("/admin/clinics/clinic/", action)
    text = page.content.decode()
    assert page.status_code == 200 and "Bring these clinics back?" in text
    assert f"backup #{last.pk} of" in text and f"{SCHEMA}.localhost" in text
    assert "its daily backups are switched back on" in text
    assert SCHEMA not in schemas() and Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is not None

    client.post("/admin/clinics/clinic/", {**action, "post": "yes"})
    clinic = Clinic.objects.get(pk=scratch_clinic.pk)
    assert clinic.offboarded_at is None and SCHEMA in schemas()
    dental = {table: digest for table, digest in table_checksums(SCHEMA).items() if table.startswith("dental_")}
    assert dental == {table: digest for table, digest in before.items() if table.startswith("dental_")}
    assert host_client(f"{SCHEMA}.localhost").get("/admin/login/").status_code == 200
    assert BackupPolicy.objects.get(clinic=clinic).enabled
    assert AuditEntry.objects.filter(action="brought_back", clinic=clinic).exists()


def test_bringing_back_an_active_clinic_is_refused_clearly(db):
    client = platform_admin()
    clinic = Clinic.objects.get(schema_name="clinica")
    action = {"action": "bring_back_selected", "_selected_action": [clinic.pk]}
    for posted in [action, {**action, "post": "yes"}]:
        page = client.post("/admin/clinics/clinic/", posted)
        text = page.content.decode()
        assert page.status_code == 200
        assert f"{clinic.name} is not offboarded: it is active, there is nothing to bring back." in text
        assert "Nothing was brought back." in text and 'value="bring_back_selected"' not in text
    assert not AuditEntry.objects.filter(action="brought_back").exists()
    listed = client.get("/admin/clinics/clinic/?state=active").content.decode()
    assert clinic.name in listed and "Offboarded on" not in listed


def test_a_failed_bring_back_leaves_the_clinic_offboarded(scratch_clinic):
    from backups.services.offboard import bring_back

    last = offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    stored_path(last.storage_name).write_bytes(b"not the backup any more")
    with pytest.raises(Exception, match=r"could not be brought back \(it stays offboarded\)"):
        bring_back(clinic=scratch_clinic.pk, requested_by="superadmin")
    clinic = Clinic.objects.get(pk=scratch_clinic.pk)
    assert clinic.offboarded_at is not None and SCHEMA not in schemas()
    assert not Domain.objects.filter(tenant=clinic).exists()
