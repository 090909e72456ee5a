"""An uploaded file tells when its data was backed up, a file the catalog already holds is not
kept twice, and refused uploads are in the audit trail.

Real database, real archives, real storage on disk; the console through the test client.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone, translation

from backups.models import AuditEntry, Backup, JobStatus
from backups.services.backup import backup_request, backup_run
from backups.services.upload import UploadRefused, backup_from_upload, upload_accept
from backups.tests.helpers import LIST, dumpdata, logged_in, storage_files, stored_path, temp_files_open
from clinics.models import Clinic

pytestmark = pytest.mark.django_db

ZONE = "Pacific/Auckland"  # UTC+13 in December: a date shown in UTC would be off by 13 hours


@pytest.fixture
def upload_tmp(settings, tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir(mode=0o700)
    settings.BACKUPS_UPLOAD_TMP_DIR = str(folder)
    return folder


@pytest.fixture
def clinica_zone():
    Clinic.objects.filter(schema_name="clinica").update(time_zone=ZONE)
    return ZoneInfo(ZONE)


def backed_up(note: str = "antes de migrar") -> tuple[Backup, bytes]:
    """A real manual backup of clinica with ``note``, and its file's bytes (as a download gives them)."""
    request = backup_request(clinic="clinica", note=note, requested_by="ana", enqueue=False)
    backup = backup_run(backup_id=request.pk)
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    return backup, stored_path(backup.storage_name).read_bytes()


def expire(backup: Backup) -> None:
    """As retention does to the row (the test keeps the file): the catalog no longer has it stored."""
    Backup.objects.filter(pk=backup.pk).update(expired_at=timezone.now())


def local(iso: str, zone: ZoneInfo) -> str:
    """An ISO time as the console writes it, in any language: 2026-12-03 02:00."""
    value = datetime.fromisoformat(iso).astimezone(zone)
    return f"{value:%Y-%m-%d %H:%M}"


def catalog() -> tuple[set[int], set[str]]:
    return set(Backup.objects.values_list("pk", flat=True)), storage_files()


# --- the service ----------------------------------------------------------------------------


def test_the_file_of_a_stored_backup_is_answered_with_that_backup_and_not_kept_twice(upload_tmp):
    original, data = backed_up()
    before = catalog()

    answer = backup_from_upload(
        clinic="clinica", source=io.BytesIO(data), filename="copia.respaldo", requested_by="ana", address="10.1.2.3"
    )

    assert answer.pk == original.pk and answer.kind == Backup.Kind.MANUAL
    assert catalog() == before  # no second catalog row, no second object in storage
    assert list(upload_tmp.iterdir()) == [] and not temp_files_open(upload_tmp)
    entry = AuditEntry.objects.get(action=AuditEntry.Action.UPLOADED)
    assert (entry.backup_id_ref, entry.actor, entry.address) == (original.pk, "ana", "10.1.2.3")
    assert entry.details["same_file"] is True and entry.details["bytes"] == len(data)
    accepted = upload_accept(clinic="clinica", source=io.BytesIO(data), filename="otra.respaldo")
    assert (accepted.backup.pk, accepted.created) == (original.pk, False) and catalog() == before


def test_an_uploaded_copy_keeps_the_date_kind_note_and_clinic_of_its_original(upload_tmp, clinica_zone):
    from backups.selectors.upload_origin import upload_origin

    original, data = backed_up()
    expire(original)  # retention removed it: the uploaded copy is kept, as a new backup

    accepted = upload_accept(clinic="clinica", source=io.BytesIO(data), filename="copia.respaldo")

    copy = accepted.backup
    assert accepted.created and copy.pk != original.pk and copy.kind == Backup.Kind.UPLOADED
    manifest = copy.manifest
    assert (manifest["kind"], manifest["note"], manifest["backup_id"]) == ("manual", "antes de migrar", original.pk)
    origin = upload_origin(copy)
    assert origin.backed_up_at == datetime.fromisoformat(original.manifest["created_at"])
    assert (origin.kind, origin.note, origin.clinic_schema, origin.same_as) == (
        "manual",
        "antes de migrar",
        "clinica",
        original.pk,
    )
    when = local(original.manifest["created_at"], clinica_zone)
    with translation.override("en"):
        assert origin.original() == f"backed up {when} (manual, note “antes de migrar”)"
        assert f"the same file as backup #{original.pk}" in origin.summary()
        assert origin.clinic() == f"clinic {Clinic.objects.get(schema_name='clinica').name} (clinica)"
    with translation.override("es"):
        assert "respaldado el" in origin.original() and "nota “antes de migrar”" in origin.original()
        assert f"el mismo archivo que el respaldo #{original.pk}" in origin.summary()


def test_a_converted_json_export_shows_no_backup_date(upload_tmp):
    from backups.selectors.upload_origin import upload_origin

    export = dumpdata("dental", indent=2).encode()
    copy = backup_from_upload(clinic="clinica", source=io.BytesIO(export), filename="export.json")

    origin = upload_origin(copy)
    assert origin.converted and origin.backed_up_at is None and origin.same_as is None
    assert copy.manifest["source"]["filename"] == "export.json"  # the catalog keeps where it came from
    with translation.override("en"):
        assert origin.original() == "converted from a JSON export (export.json)"
        assert "backed up" not in origin.sentence() and origin.sentence().startswith("Uploaded ")


def test_a_refused_upload_is_in_the_audit_trail_and_keeps_no_file(upload_tmp):
    from backups.admin.display import audit_details

    before = catalog()
    with pytest.raises(UploadRefused):
        backup_from_upload(
            clinic="clinica", source=io.BytesIO(b"hello, world"), filename="notes.txt", requested_by="ana"
        )
    assert catalog() == before and list(upload_tmp.iterdir()) == []
    entry = AuditEntry.objects.get(action=AuditEntry.Action.UPLOAD_REFUSED)
    assert (entry.clinic.schema_name, entry.actor) == ("clinica", "ana")
    assert entry.details["code"] == "not_recognized" and entry.details["filename"] == "notes.txt"
    assert entry.details["bytes"] == 12
    assert entry.details["message"] == "This file is not a Respaldo backup or a JSON export of clinic records."
    with translation.override("es"):
        shown = audit_details(entry.details)
    assert "archivo:</span> notes.txt" in shown and "no es un respaldo de Respaldo" in shown
    assert "{" not in shown  # not raw JSON


# --- the console -------------------------------------------------------------------------------


def test_the_console_leads_a_known_file_to_its_backup_and_says_so(upload_folder):
    original, data = backed_up()
    before = catalog()
    client = logged_in("admin", "admin")
    upload = io.BytesIO(data)
    upload.name = "copia.respaldo"

    response = client.post(f"{LIST}upload/", {"file": upload}, follow=True)

    assert response.redirect_chain[-1][0] == f"{LIST}{original.pk}/restore/"
    page = response.content.decode()
    assert f"the same file as backup #{original.pk}" in page and "not stored a second time" in page
    assert catalog() == before and list(upload_folder.iterdir()) == []


def test_the_list_the_page_and_the_confirmation_show_when_the_data_was_backed_up(upload_folder, clinica_zone):
    original, data = backed_up()
    expire(original)
    copy = backup_from_upload(clinic="clinica", source=io.BytesIO(data), filename="copia.respaldo")
    uploaded_at = timezone.now() + timedelta(days=4)  # uploaded days after the backup was taken
    Backup.objects.filter(pk=copy.pk).update(requested_at=uploaded_at)
    backed = local(original.manifest["created_at"], clinica_zone)
    uploaded = local(uploaded_at.isoformat(), clinica_zone)
    client = logged_in("admin", "admin")

    listing = client.get(LIST).content.decode()
    row = listing[listing.index(f"{LIST}{copy.pk}/change/") :]
    row = row[: row.index("</tr>")]
    assert f"backed up {backed} (manual, note “antes de migrar”)" in row
    assert f"the same file as backup #{original.pk}" in row

    page = client.get(f"{LIST}{copy.pk}/change/").content.decode()
    assert f"Uploaded {uploaded} · backed up {backed} (manual, note “antes de migrar”)" in page
    assert "(clinica)" in page

    confirm = client.get(f"{LIST}{copy.pk}/restore/").content.decode()
    assert f"backed up {backed} (manual, note “antes de migrar”)" in confirm
    assert f"Uploaded</th><td>{uploaded} ({ZONE})" in confirm

    spanish = logged_in("admin", "admin", language="es").get(f"{LIST}{copy.pk}/restore/").content.decode()
    assert "respaldado el" in spanish and "nota “antes de migrar”" in spanish


def test_a_refused_upload_and_one_over_the_limit_are_audited_and_read_as_pairs(upload_folder, settings):
    client = logged_in("admin", "admin", language="es")
    junk = io.BytesIO(b"SELECT 1;")
    junk.name = "script.sql"
    assert client.post(f"{LIST}upload/", {"file": junk}).status_code == 200
    settings.BACKUPS_MAX_UPLOAD_BYTES = 1000
    big = io.BytesIO(b"x" * 50_000)
    big.name = "grande.bin"
    assert client.post(f"{LIST}upload/", {"file": big}).status_code == 200

    entries = {e.details["filename"]: e for e in AuditEntry.objects.filter(action=AuditEntry.Action.UPLOAD_REFUSED)}
    assert set(entries) == {"script.sql", "grande.bin"}
    assert entries["script.sql"].details["code"] == "sql" and entries["script.sql"].details["bytes"] == 9
    assert entries["grande.bin"].details["code"] == "too_large" and entries["grande.bin"].details["bytes"] > 1000
    assert all(e.actor == "admin" and e.address for e in entries.values())
    assert list(upload_folder.iterdir()) == []

    trail = client.get("/admin/backups/auditentry/").content.decode()
    assert "Subida rechazada" in trail
    assert "archivo:</span> script.sql" in trail and "script SQL" in trail
    assert json.dumps(entries["script.sql"].details)[:20] not in trail  # no raw JSON


@pytest.fixture
def upload_folder(upload_tmp):
    return upload_tmp
