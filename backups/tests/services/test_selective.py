"""Selective restore: one patient and their records back from a backup, the rest of the clinic untouched.

Real PostgreSQL, real backups of the scratch clinic ``restaura`` (pg and json payloads); the
console through the test client on the demo clinic ``clinica``.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django_tenants.utils import schema_context

from backups.exceptions import RestoreRefused
from backups.models import AuditEntry, Backup, JobStatus, Restore
from backups.services.selective import ADD, CHANGE, SAME, FieldDiff, selective_apply, selective_preview
from backups.services.selective_search import backup_patients, fold, missing_now, search_patients
from backups.tests.helpers import (
    SCHEMA,
    another_patient,
    delete_patient,
    edit_patient,
    fake_backup,
    live_rows,
    logged_in,
    make_backup,
    other_connection,
    patient_with_everything,
    table_checksums,
)
from dental.models import Appointment, Patient

LIST = "/admin/backups/backup/"


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_a_deleted_patient_comes_back_with_their_records_and_nothing_else_changes(scratch_clinic, payload_format):
    patient = patient_with_everything()
    before = live_rows(patient.national_id)
    backup = make_backup(SCHEMA, payload_format)
    other = another_patient(patient)
    edit_patient(other.pk, phone="+34 699 999 999", notes="changed after the backup")
    delete_patient(patient)
    assert not any(live_rows(patient.national_id).values())

    preview = selective_preview(backup, national_id=patient.national_id)

    assert preview.conflicts == []
    for plan in preview.tables:
        assert [row.pk for row in plan.rows] == [row["id"] for row in before[plan.table]], plan.table
        assert {row.action for row in plan.rows} <= {ADD}, plan.table
    assert sum(len(rows) for rows in before.values()) > 8  # patient, appointments, treatment, materials...

    result = selective_apply(
        backup, national_id=patient.national_id, requested_by="admin", expected=preview.fingerprint
    )

    assert live_rows(patient.national_id) == before  # every column of every row, as in the backup
    with schema_context(SCHEMA):
        back = Patient.objects.get(pk=patient.pk)
        kept = Patient.objects.get(pk=other.pk)
    assert bytes(back.consent_signature) == bytes(patient.consent_signature)
    assert back.created_at == patient.created_at
    assert (kept.phone, kept.notes) == ("+34 699 999 999", "changed after the backup")
    safety = Backup.objects.get(pk=result.safety_backup.pk)
    assert (safety.kind, safety.status, safety.clinic_id) == (
        Backup.Kind.PRE_RESTORE,
        JobStatus.SUCCEEDED,
        scratch_clinic.pk,
    )
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RESTORE_REQUESTED, backup_id_ref=backup.pk)
    assert entry.details["selective"] is True and entry.details["patient"] == patient.national_id
    assert entry.details["rows"]["dental_patient"]["added"] == 1
    with schema_context(SCHEMA):  # the sequences are past the restored ids: a new patient can be added
        Patient.objects.create(first_name="Nueva", last_name="Paciente", national_id="NEW-1")
    connection.set_schema_to_public()


def test_a_changed_field_of_the_patient_shows_as_a_diff_and_is_put_back(scratch_clinic):
    patient = patient_with_everything()
    before = live_rows(patient.national_id)
    backup = make_backup(SCHEMA)
    edit_patient(patient.pk, phone="+34 600 000 001")
    with schema_context(SCHEMA):
        appointment = Appointment.objects.filter(patient_id=patient.pk).order_by("pk").first()
        Appointment.objects.filter(pk=appointment.pk).update(reason="cambiada")
        later = Appointment.objects.create(
            patient_id=patient.pk,
            dentist_id=appointment.dentist_id,
            starts_at=appointment.starts_at,
            duration=appointment.duration,
        )
    connection.set_schema_to_public()

    preview = selective_preview(backup, national_id=patient.national_id)

    by_table = {plan.table: plan for plan in preview.tables}
    (changed,) = by_table["dental_patient"].changed
    assert changed.diffs == [FieldDiff("phone", "+34 600 000 001", patient.phone)]
    (changed,) = by_table["dental_appointment"].changed
    assert changed.pk == appointment.pk
    assert changed.diffs == [FieldDiff("reason", "cambiada", appointment.reason)]
    assert all(row.action == SAME for row in by_table["dental_invoice"].rows)
    assert {row.action for plan in preview.tables for row in plan.rows} == {SAME, CHANGE}

    selective_apply(backup, national_id=patient.national_id, requested_by="admin", expected=preview.fingerprint)

    now = live_rows(patient.national_id)
    assert now["dental_patient"] == before["dental_patient"]
    assert [row for row in now["dental_appointment"] if row["id"] != later.pk] == before["dental_appointment"]
    assert later.pk in {row["id"] for row in now["dental_appointment"]}  # made after the backup: kept


def test_a_national_id_now_of_another_patient_is_a_conflict_and_nothing_changes(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    other = another_patient(patient)
    delete_patient(patient)
    edit_patient(other.pk, national_id=patient.national_id)

    preview = selective_preview(backup, national_id=patient.national_id)

    assert [c.message_id for c in preview.conflicts] == ["selective_national_id_taken"]
    assert f"#{other.pk}" in str(preview.conflicts[0])
    sums = table_checksums(SCHEMA)
    with pytest.raises(RestoreRefused) as refused:
        selective_apply(backup, national_id=patient.national_id, requested_by="admin", expected=preview.fingerprint)
    assert refused.value.code == "selective_conflicts"
    assert patient.national_id in str(refused.value) and "Nothing was changed" in str(refused.value)
    assert table_checksums(SCHEMA) == sums
    assert not Backup.objects.filter(clinic=scratch_clinic, kind=Backup.Kind.PRE_RESTORE).exists()


def test_a_patient_not_in_the_backup_is_refused(scratch_clinic):
    backup = make_backup(SCHEMA)
    with pytest.raises(RestoreRefused) as refused:
        selective_preview(backup, national_id="NOBODY-1")
    assert refused.value.code == "selective_not_in_backup"


# --- finding the patient in the backup ----------------------------------------------------


def add_patient(first_name: str, last_name: str, national_id: str, schema: str = SCHEMA) -> Patient:
    with schema_context(schema):
        made = Patient.objects.create(
            first_name=first_name, last_name=last_name, national_id=national_id, birth_date=date(1980, 5, 17)
        )
    connection.set_schema_to_public()
    return made


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_the_backup_is_searched_by_name_or_national_id_without_accents_or_case(scratch_clinic, payload_format):
    jose = add_patient("José Ángel", "Quiñónez Ürrutia", "ZZ-ACENTO-1")
    zoe = add_patient("Zoë", "Éscobar-Lïnares", "zz-acento-2")
    backup = make_backup(SCHEMA, payload_format)
    patients = backup_patients(backup)

    def found(query: str) -> list[int]:
        return [patient.pk for patient in search_patients(patients, query)]

    with schema_context(SCHEMA):
        assert len(patients) == Patient.objects.count()
    connection.set_schema_to_public()
    assert found("jose angel quinonez") == [jose.pk]  # no accents typed: found
    assert found("JOSÉ ÁNGEL QUIÑÓNEZ") == [jose.pk]  # capitals and accents typed: found
    assert found("urrut") == [jose.pk]  # part of a last name
    assert found("quinon jose") == [jose.pk]  # words in any order
    assert found("zoe linares") == [zoe.pk]  # ë, ï
    assert found("zz-acento-1") == [jose.pk]  # the national id, whatever its case
    assert found("ZZ-ACENTO") == [zoe.pk, jose.pk]  # part of it (Éscobar before Quiñónez)
    assert found("jose perez-nobody") == []  # every word must match
    assert found("   ") == []
    (row,) = [patient for patient in patients if patient.pk == jose.pk]
    assert (row.name, row.national_id, row.birth_date, row.missing_now) == (
        "José Ángel Quiñónez Ürrutia",
        "ZZ-ACENTO-1",
        date(1980, 5, 17),
        False,
    )


def test_the_patients_missing_now_are_those_of_the_backup_the_clinic_no_longer_has(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    added_later = add_patient("Nuevo", "Después", "ZZ-LATER-1")
    delete_patient(patient)

    patients = backup_patients(backup)

    assert [row.pk for row in missing_now(patients)] == [patient.pk]
    assert added_later.pk not in {row.pk for row in patients}  # not in the backup: not listed
    assert fold("Ñúñez ÁNGEL Zoë") == "nunez angel zoe"


# --- the console --------------------------------------------------------------------------


@pytest.fixture
def clinica_backup(live_db) -> Backup:
    return make_backup("clinica")


def clinica_patient() -> Patient:
    with schema_context("clinica"):
        found = Patient.objects.order_by("pk").first()
    connection.set_schema_to_public()
    return found


def test_the_console_shows_the_preview_and_refuses_what_there_is_nothing_to_do(clinica_backup):
    client = logged_in("admin", "admin")
    patient = clinica_patient()
    url = f"{LIST}{clinica_backup.pk}/pick/"
    assert url in client.get(f"{LIST}{clinica_backup.pk}/change/").content.decode()
    form = client.get(url)
    assert form.status_code == 200 and 'name="q"' in form.content.decode()

    page = client.get(url, {"national_id": patient.national_id}).content.decode()

    assert patient.national_id in page and "Unchanged" in page and "Appointments" in page
    assert "there is nothing to restore" in page
    missing = client.get(url, {"national_id": "NOBODY-1"}).content.decode()
    assert "has no patient with the national id NOBODY-1" in missing


def test_the_console_applies_after_the_typed_national_id(scratch_clinic):
    with schema_context(SCHEMA):
        User.objects.create_superuser("jefa", password="jefa-pass-1")
    connection.set_schema_to_public()
    client = logged_in("jefa", "jefa-pass-1", host="restaura.localhost")
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    url = f"{LIST}{backup.pk}/pick/"

    page = client.get(url, {"national_id": patient.national_id}).content.decode()
    assert "To add (missing now)" in page and patient.first_name in page

    fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]+)"', page).group(1)
    confirmed = {"national_id": patient.national_id, "fingerprint": fingerprint}
    wrong = client.post(url, {**confirmed, "confirm": "something else"})
    assert wrong.status_code == 200 and not any(live_rows(patient.national_id).values())
    unseen = client.post(url, {"national_id": patient.national_id, "confirm": patient.national_id})  # no fingerprint
    assert unseen.status_code == 200 and not any(live_rows(patient.national_id).values())
    assert not Backup.objects.filter(clinic=scratch_clinic, kind=Backup.Kind.PRE_RESTORE).exists()
    done = client.post(url, {**confirmed, "confirm": patient.national_id})
    restore = Restore.objects.filter(clinic=scratch_clinic, selective_patient=patient.national_id).latest("pk")
    assert done.status_code == 302 and done["Location"].endswith(f"/admin/backups/restore/{restore.pk}/progress/")
    assert live_rows(patient.national_id)["dental_patient"][0]["id"] == patient.pk


def test_the_console_needs_restore_rights_and_this_clinics_backup(clinica_backup):
    with schema_context("clinica"):
        user = User.objects.create_user("lector_sel", password="lector-pass-1", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_backup", content_type__app_label="backups"))
    connection.set_schema_to_public()
    try:
        viewer = logged_in("lector_sel", "lector-pass-1")
        assert viewer.get(f"{LIST}{clinica_backup.pk}/pick/").status_code == 403
        other = fake_backup("bienestar")
        admin = logged_in("admin", "admin")
        assert admin.get(f"{LIST}{other.pk}/pick/").status_code == 404
        assert admin.post(f"{LIST}{other.pk}/pick/", {"national_id": "X", "confirm": "X"}).status_code == 404
    finally:
        with schema_context("clinica"):
            User.objects.filter(username="lector_sel").delete()
        connection.set_schema_to_public()


def test_the_preview_does_not_wait_for_a_session_holding_the_patients_rows(scratch_clinic):
    patient = patient_with_everything()
    backup = make_backup(SCHEMA)
    with other_connection() as other:
        other.autocommit = False
        other.execute("SET lock_timeout = '30s'")
        other.execute(f"UPDATE {SCHEMA}.dental_patient SET phone = 'held' WHERE id = %s", [patient.pk])
        other.execute(f"LOCK TABLE {SCHEMA}.dental_appointment IN ROW EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            preview = selective_preview(backup, national_id=patient.national_id)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
            other.rollback()
    assert {row.action for plan in preview.tables for row in plan.rows} == {SAME}


@pytest.fixture
def restaura_admin(scratch_clinic):
    """An administrator of the scratch clinic, logged in to its console (English)."""
    with schema_context(SCHEMA):
        User.objects.create_superuser("jefa", password="jefa-pass-1")
    connection.set_schema_to_public()
    return logged_in("jefa", "jefa-pass-1", host="restaura.localhost")


def test_the_pick_page_lists_the_missing_patients_and_finds_one_by_part_of_the_name(restaura_admin):
    gone = add_patient("José Ángel", "Quiñónez Ürrutia", "ZZ-GONE-1")
    kept = add_patient("Zoë", "Éscobar-Lïnares", "ZZ-KEPT-1")
    backup = make_backup(SCHEMA)
    delete_patient(gone)
    url = f"{LIST}{backup.pk}/pick/"

    page = restaura_admin.get(url).content.decode()
    missing = page.split('id="respaldo-missing-list"')[1].split("</table>")[0]
    assert "José Ángel Quiñónez Ürrutia" in missing and 'href="?national_id=ZZ-GONE-1"' in missing
    assert "ZZ-KEPT-1" not in missing  # still in the clinic

    found = restaura_admin.get(url, {"q": "jose quinon"}).content.decode()
    listed = found.split('id="respaldo-found-list"')[1].split("</table>")[0]
    assert 'href="?national_id=ZZ-GONE-1"' in listed and "missing" in listed and "ZZ-KEPT" not in listed
    both = restaura_admin.get(url, {"q": "zz-"}).content.decode().split('id="respaldo-found-list"')[1]
    assert "ZZ-KEPT-1" in both.split("</table>")[0] and "in the clinic" in both.split("</table>")[0]
    none = restaura_admin.get(url, {"q": "nadie nunca"}).content.decode()
    assert "No patient of this backup matches" in none

    preview = restaura_admin.get(url, {"national_id": "ZZ-GONE-1"}).content.decode()
    assert "José Ángel Quiñónez Ürrutia (ZZ-GONE-1) as in backup" in preview  # the patient named in the heading
    assert kept.pk != gone.pk


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_preview_reads_like_the_clinics_own_pages(restaura_admin, scratch_clinic, language):
    from zoneinfo import ZoneInfo

    from django.utils import formats, translation

    patient = patient_with_everything()
    with schema_context(SCHEMA):
        appointment = Appointment.objects.filter(patient_id=patient.pk).order_by("pk").first()
        Patient.objects.filter(pk=patient.pk).update(allergies=["penicilina", "látex"])
    connection.set_schema_to_public()
    backup = make_backup(SCHEMA)
    delete_patient(patient)
    scratch_clinic.time_zone = "Pacific/Auckland"  # far from UTC: a time shown in UTC would differ
    scratch_clinic.save(update_fields=["time_zone"])
    client = logged_in("jefa", "jefa-pass-1", host="restaura.localhost", language=language)

    page = client.get(f"{LIST}{backup.pk}/pick/", {"national_id": patient.national_id}).content.decode()

    with translation.override(language):
        starts = formats.date_format(appointment.starts_at.astimezone(ZoneInfo("Pacific/Auckland")), "DATETIME_FORMAT")
        born = formats.date_format(patient.birth_date, "DATE_FORMAT")
        words = {
            "first_name": str(Patient._meta.get_field("first_name").verbose_name).capitalize(),
            "consent": str(Patient._meta.get_field("consent_signature").verbose_name).capitalize(),
            "status": str(appointment.get_status_display()),
            "binary": translation.gettext("binary data, %(size)s") % {"size": ""},
        }
    assert f"{patient.first_name} {patient.last_name} ({patient.national_id})" in page
    assert f'<th scope="row">{words["first_name"]}</th><td>{patient.first_name}</td>' in page
    assert f'<th scope="row">{words["consent"]}</th><td>{words["binary"]}' in page
    assert "penicilina, látex" in page  # a list as a list, not ["penicilina", "látex"]
    assert starts in page and born in page and "Pacific/Auckland" in page
    assert f"<td>{words['status']}</td>" in page
    assert "consent_signature" not in page and "\\x" not in page and "+00:00" not in page
    assert 'class="respaldo-rows respaldo-added respaldo-fields"' in page


def test_the_backups_list_and_the_full_restore_lead_to_restore_one_patient(clinica_backup):
    client = logged_in("admin", "admin")
    pick = f"{LIST}{clinica_backup.pk}/pick/"

    listing = client.get(LIST).content.decode()
    confirm = client.get(f"{LIST}{clinica_backup.pk}/restore/").content.decode()

    assert f'<a href="{pick}">Restore one patient…</a>' in listing
    assert f'<a href="{pick}">Restore one patient…</a>' in confirm
