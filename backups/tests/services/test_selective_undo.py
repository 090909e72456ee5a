"""Undoing a restore of one patient: exactly the rows it wrote go back as they were, nothing else.

Real PostgreSQL, real backups of the scratch clinic ``restaura``; the console through the test
client as an administrator of that clinic.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django_tenants.utils import schema_context

from backups.exceptions import RestoreRefused
from backups.models import AuditEntry, Restore
from backups.services.selective import selective_apply, selective_preview
from backups.services.selective_undo import selective_undo, undo_preview
from backups.tests.helpers import (
    SCHEMA,
    another_patient,
    delete_patient,
    edit_patient,
    live_rows,
    logged_in,
    make_backup,
    patient_with_everything,
    table_checksums,
)
from dental.models import Appointment, Patient


def restore_one(backup, national_id: str) -> Restore:
    preview = selective_preview(backup, national_id=national_id)
    result = selective_apply(backup, national_id=national_id, requested_by="jefa", expected=preview.fingerprint)
    return result.restore


def test_the_undo_removes_exactly_the_restored_rows_and_keeps_a_later_unrelated_edit(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    before = table_checksums(SCHEMA)
    other = another_patient(patient)

    restore = restore_one(backup, patient.national_id)
    assert live_rows(patient.national_id)["dental_patient"][0]["id"] == patient.pk
    edit_patient(other.pk, phone="+34 611 222 333")  # a receptionist goes on working

    restore = Restore.objects.get(pk=restore.pk)  # the history's row, as stored
    assert (restore.status, restore.outcome, restore.selective_patient) == (
        "succeeded",
        "restored",
        patient.national_id,
    )
    assert restore.safety_backup_id is not None and restore.undone_at is None
    shown = undo_preview(restore)
    assert shown.changed_since == []
    assert sum(len(t.removed) for t in shown.tables) > 8 and not any(t.put_back for t in shown.tables)

    selective_undo(restore, requested_by="jefa")

    assert not any(live_rows(patient.national_id).values())
    with schema_context(SCHEMA):
        assert Patient.objects.get(pk=other.pk).phone == "+34 611 222 333"  # the later edit stays
        Patient.objects.create(first_name="Otra", last_name="Paciente", national_id="NEW-2")  # sequences fine
        Patient.objects.filter(national_id="NEW-2").delete()
        Patient.objects.filter(pk=other.pk).update(phone=other.phone)
    connection.set_schema_to_public()
    assert table_checksums(SCHEMA) == before  # with that edit set back: the clinic as before the restore
    restore.refresh_from_db()
    assert (restore.outcome, restore.undone_by) == (Restore.Outcome.UNDONE, "jefa")
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RESTORE_UNDONE, restore_id_ref=restore.pk)
    assert entry.details["patient"] == patient.national_id
    assert entry.details["rows"]["dental_patient"] == {"removed": 1, "put_back": 0}
    assert AuditEntry.objects.filter(action=AuditEntry.Action.RESTORE_REQUESTED, restore_id_ref=restore.pk).exists()
    with pytest.raises(RestoreRefused, match="already undone"):
        selective_undo(restore, requested_by="jefa")


def test_the_undo_puts_changed_columns_back_and_is_refused_while_a_restored_row_was_edited_since(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    edit_patient(patient.pk, phone="+34 600 000 009", notes="edited after the backup")
    with schema_context(SCHEMA):
        appointment = Appointment.objects.filter(patient_id=patient.pk).order_by("pk").first()
        Appointment.objects.filter(pk=appointment.pk).delete()
    connection.set_schema_to_public()
    before = table_checksums(SCHEMA)

    restore = restore_one(backup, patient.national_id)
    with schema_context(SCHEMA):
        assert Patient.objects.get(pk=patient.pk).phone == patient.phone
        Appointment.objects.filter(pk=appointment.pk).update(reason="edited after the selective restore")
    connection.set_schema_to_public()
    edited = table_checksums(SCHEMA)

    shown = undo_preview(Restore.objects.get(pk=restore.pk))
    assert shown.changed_since == [("appointments", appointment.pk)]
    (patients,) = [t for t in shown.tables if t.table == "dental_patient"]
    assert patients.put_back[0].pk == patient.pk
    assert {(d.column, d.now, d.in_backup) for d in patients.put_back[0].diffs} == {
        ("phone", patient.phone, "+34 600 000 009"),
        ("notes", patient.notes, "edited after the backup"),
    }
    with pytest.raises(RestoreRefused, match=f"appointments #{appointment.pk}") as refused:
        selective_undo(restore, requested_by="jefa")
    assert "Nothing was changed" in str(refused.value)
    assert table_checksums(SCHEMA) == edited
    assert Restore.objects.get(pk=restore.pk).undone_at is None

    with schema_context(SCHEMA):  # the edit taken back: the row is as restored again
        Appointment.objects.filter(pk=appointment.pk).update(reason=appointment.reason)
    connection.set_schema_to_public()
    selective_undo(restore, requested_by="jefa")

    assert table_checksums(SCHEMA) == before
    with schema_context(SCHEMA):
        assert Patient.objects.get(pk=patient.pk).phone == "+34 600 000 009"
        assert not Appointment.objects.filter(pk=appointment.pk).exists()
    connection.set_schema_to_public()


def test_the_undo_is_refused_when_a_record_created_since_refers_to_a_restored_row(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    restore = restore_one(backup, patient.national_id)
    with schema_context(SCHEMA):
        model = Appointment.objects.filter(patient_id=patient.pk).first()
        Appointment.objects.create(
            patient_id=patient.pk, dentist_id=model.dentist_id, starts_at=model.starts_at, duration=model.duration
        )
    connection.set_schema_to_public()
    after = table_checksums(SCHEMA)

    with pytest.raises(RestoreRefused, match="records created since refer to the rows it put back"):
        selective_undo(restore, requested_by="jefa")

    assert table_checksums(SCHEMA) == after
    assert Restore.objects.get(pk=restore.pk).undone_at is None
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.RESTORE_UNDONE, restore_id_ref=restore.pk).exists()


def test_a_full_restore_has_no_undo_of_its_own(scratch_clinic):
    backup = make_backup(SCHEMA)
    full = Restore.objects.create(clinic=scratch_clinic, backup=backup, status="succeeded", outcome="restored")
    with pytest.raises(RestoreRefused, match="not a finished restore of one patient"):
        undo_preview(full)
    with pytest.raises(RestoreRefused, match="not a finished restore of one patient"):
        selective_undo(full, requested_by="jefa")


# --- The console -----------------------------------------------------------------------------

RESTORES = "/admin/backups/restore/"


@pytest.fixture
def restaura_admin(scratch_clinic):
    """An administrator of the scratch clinic, logged in to its console (English)."""
    with schema_context(SCHEMA):
        User.objects.create_superuser("jefa", password="jefa-pass-1")
    connection.set_schema_to_public()
    return logged_in("jefa", "jefa-pass-1", host="restaura.localhost")


def test_the_history_shows_the_patient_and_the_result_pages_undo_removes_exactly_those_rows(restaura_admin):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    restore = restore_one(backup, patient.national_id)
    other = another_patient(patient)
    edit_patient(other.pk, notes="edited after the selective restore")

    history = restaura_admin.get(RESTORES).content.decode()
    assert f"one patient: {patient.first_name} {patient.last_name} ({patient.national_id})" in history
    result = restaura_admin.get(f"{RESTORES}{restore.pk}/progress/").content.decode()
    undo = f"{RESTORES}{restore.pk}/undo/"
    assert f'href="{undo}"' in result
    assert f"/admin/backups/backup/{restore.safety_backup_id}/restore/" not in result  # not the whole clinic back

    page = restaura_admin.get(undo).content.decode()
    assert "To remove (put back by this restore)" in page and f"#{patient.pk} · {patient.first_name}" in page
    assert "Yes, undo this restore" in page and "cannot be undone" not in page

    done = restaura_admin.post(undo)

    assert done.status_code == 302 and done["Location"].endswith(f"{RESTORES}{restore.pk}/progress/")
    assert not any(live_rows(patient.national_id).values())
    with schema_context(SCHEMA):
        assert Patient.objects.get(pk=other.pk).notes == "edited after the selective restore"
    connection.set_schema_to_public()
    after = restaura_admin.get(done["Location"]).content.decode()
    assert "rows removed" in after and "Undone on" in after and f'href="{undo}"' not in after
    again = restaura_admin.post(undo, follow=True).content.decode()
    assert "was already undone (by jefa)" in again


def test_the_console_shows_why_an_undo_is_refused_and_changes_nothing(restaura_admin):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    restore = restore_one(backup, patient.national_id)
    edit_patient(patient.pk, phone="+34 622 000 111")  # the restored patient, edited since
    edited = table_checksums(SCHEMA)
    undo = f"{RESTORES}{restore.pk}/undo/"

    page = restaura_admin.get(undo).content.decode()
    assert "This restore cannot be undone: 1 of the rows it put back changed" in page
    assert "Yes, undo this restore" not in page
    refused = restaura_admin.post(undo, follow=True).content.decode()

    assert f"patients #{patient.pk}" in refused and "Nothing was changed" in refused
    assert table_checksums(SCHEMA) == edited
    assert Restore.objects.get(pk=restore.pk).undone_at is None
