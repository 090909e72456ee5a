"""Restoring a clinic: the round trip, the undo, and every refusal leaving the clinic untouched."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from backups import archive, jobs, storage
from backups.exceptions import ClinicBusy, RespaldoError
from backups.keys import archive_identities
from backups.keys.clinic import identities_held
from backups.models import Backup, JobStatus, Restore
from backups.services import restore as restores
from backups.services.backup import backup_request
from backups.tests.helpers import (
    SCHEMA,
    damage_clinic,
    make_backup,
    other_connection,
    schemas,
    sha256_of,
    storage_files,
    stored_path,
    table_checksums,
)
from conftest import host_client


def dental_checksums(schema: str = SCHEMA) -> dict[str, str]:
    return {t: s for t, s in table_checksums(schema).items() if t.startswith("dental_")}


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_restore_brings_back_deleted_and_edited_records(scratch_clinic, payload_format, capsys):
    original = table_checksums(SCHEMA)
    other_clinic = table_checksums("bienestar")
    backup = make_backup(payload_format=payload_format)
    damage_clinic()
    assert dental_checksums() != {t: s for t, s in original.items() if t.startswith("dental_")}

    call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes")
    out = capsys.readouterr().out
    restore = Restore.objects.get(clinic=scratch_clinic)
    assert restore.status == JobStatus.SUCCEEDED and restore.outcome == Restore.Outcome.RESTORED
    assert f"To undo: python manage.py restore_clinic {SCHEMA} --backup {restore.safety_backup_id}" in out
    safety = restore.safety_backup
    assert safety.kind == Backup.Kind.PRE_RESTORE and safety.status == JobStatus.SUCCEEDED
    if payload_format == "pg":
        assert table_checksums(SCHEMA) == original  # every table, users and migrations included
    else:
        assert dental_checksums() == {t: s for t, s in original.items() if t.startswith("dental_")}
    assert table_checksums("bienestar") == other_clinic
    assert SCHEMA + restores.OLD_SCHEMA_SUFFIX not in {r for r in schemas()}


def test_the_safety_backup_undoes_a_restore(scratch_clinic):
    backup = make_backup()
    damage_clinic()
    damaged = table_checksums(SCHEMA)
    first = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False).pk
    )
    assert first.status == JobStatus.SUCCEEDED and table_checksums(SCHEMA) != damaged
    undo = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=first.safety_backup_id, enqueue=False).pk
    )
    assert undo.status == JobStatus.SUCCEEDED
    assert table_checksums(SCHEMA) == damaged


def assert_refused(backup_id: int, match: str) -> None:
    """Restoring must fail with ``match`` in its message and leave the clinic untouched."""
    before = table_checksums(SCHEMA)
    try:
        restore = restores.restore_request(clinic=SCHEMA, backup_id=backup_id, enqueue=False)
    except RespaldoError as exc:
        assert match in str(exc)
    else:
        restore = restores.restore_run(restore_id=restore.pk)
        assert restore.status == JobStatus.FAILED
        assert match in restore.error, restore.error
        assert restore.outcome == Restore.Outcome.UNCHANGED and "The clinic is unchanged." in restore.error
    assert table_checksums(SCHEMA) == before
    assert SCHEMA + restores.OLD_SCHEMA_SUFFIX not in schemas()


def test_another_clinics_backup_is_refused(scratch_clinic):
    assert_refused(make_backup("bienestar").pk, "belongs to another clinic")


def test_a_failed_backup_is_refused(scratch_clinic):
    failed = Backup.objects.create(clinic=scratch_clinic, status=JobStatus.FAILED, error="boom")
    assert_refused(failed.pk, "is failed: it cannot be restored")


def test_a_stored_file_changed_since_the_backup_is_refused(scratch_clinic):
    backup = make_backup()
    damage_clinic()
    path = stored_path(backup.storage_name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert_refused(backup.pk, "")
    assert "damaged" in Restore.objects.get().error.lower() or "changed" in Restore.objects.get().error.lower()


def test_a_catalog_row_pointing_at_another_clinics_file_is_refused(scratch_clinic):
    mine, theirs = make_backup(), make_backup("bienestar")
    Backup.objects.filter(pk=mine.pk).update(storage_name=theirs.storage_name, sha256=theirs.sha256)
    assert_refused(mine.pk, "This backup belongs to another clinic (bienestar)")


def forged(scratch_clinic, backup: Backup, change_manifest) -> Backup:
    """An authentic archive (our key) whose manifest was changed by ``change_manifest``."""
    with (
        storage.open_stored(backup.storage_name) as stream,
        archive.open_archive(stream, identities=identities_held()) as reader,
    ):
        manifest = dict(reader.manifest)
        payload = reader.read()
    change_manifest(manifest)
    out = io.BytesIO()
    archive.write_archive(io.BytesIO(payload), out, manifest=manifest, identities=archive_identities())
    stored, _ = storage.store_stream(backup.storage_name + ".forged", lambda w: w.write(out.getvalue()))
    return Backup.objects.create(
        clinic=scratch_clinic,
        status=JobStatus.SUCCEEDED,
        storage_name=stored.name,
        sha256=stored.sha256,
        size=stored.size,
        manifest=manifest,
    )


def test_a_backup_from_a_newer_release_is_refused(scratch_clinic):
    backup = make_backup()
    damage_clinic()
    newer = forged(scratch_clinic, backup, lambda m: m["migrations"]["dental"].append("9999_from_the_future"))
    assert_refused(newer.pk, "made by a newer release")


def test_a_row_count_mismatch_rolls_the_whole_restore_back(scratch_clinic):
    backup = make_backup()
    damage_clinic()
    wrong = forged(
        scratch_clinic, backup, lambda m: m["tables"].update(dental_patient=m["tables"]["dental_patient"] + 1)
    )
    assert_refused(wrong.pk, "Table dental_patient has 30 rows after the restore but the backup says 31")


def test_an_unknown_payload_format_is_refused(scratch_clinic):
    backup = make_backup()
    xml = forged(scratch_clinic, backup, lambda m: m.update(payload_format="xml"))
    assert_refused(xml.pk, 'in a format this installation does not know ("xml")')


def test_a_clinic_with_a_job_running_is_refused(scratch_clinic):
    backup = make_backup()
    backup_request(clinic=SCHEMA, enqueue=False)
    with pytest.raises(ClinicBusy, match="already has backup #") as busy:
        restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)
    assert busy.value.code == "clinic_busy"


def test_restore_command_needs_confirmation_without_a_terminal(scratch_clinic):
    backup = make_backup()
    with pytest.raises(CommandError, match="run again with --yes"):
        call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk))
    assert not Restore.objects.exists()
    with pytest.raises(CommandError, match="There is no backup #999999"):
        call_command("restore_clinic", SCHEMA, "--backup", "999999", "--yes")


@pytest.mark.django_db
def test_pages_of_a_clinic_being_restored_say_so():
    clinic_backup = Backup.objects.create(
        clinic_id=_clinic_id("clinica"), status=JobStatus.SUCCEEDED, storage_name="x", sha256="0" * 64
    )
    restore = Restore.objects.create(
        clinic_id=clinic_backup.clinic_id, backup=clinic_backup, status=JobStatus.RUNNING, progress_phase="restoring"
    )
    # Without a worker holding the clinic's job lock, the row is a dead restore: the clinic stays open.
    assert host_client("clinica.localhost").get("/admin/login/").status_code == 200
    assert host_client("clinica.localhost").post("/admin/dental/patient/add/").status_code == 302  # to the login
    with other_connection() as worker:  # a worker running the restore holds the clinic's job lock
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [jobs.LOCK_NAMESPACE, clinic_backup.clinic_id])
        # While the new data is built apart, the clinic is read as it is; changes are paused.
        assert host_client("clinica.localhost").get("/admin/login/").status_code == 200
        response = host_client("clinica.localhost").post("/admin/dental/patient/add/")
        assert response.status_code == 503 and response["Retry-After"] == "15"
        assert response["Cache-Control"] == "no-store" and "changes are paused" in response.content.decode()
        # Only the swap closes the clinic's pages, to readers too.
        Restore.objects.filter(pk=restore.pk).update(progress_phase="swapping")
        for path in ["/admin/", "/admin/login/", "/admin/dental/patient/"]:
            response = host_client("clinica.localhost").get(path, HTTP_ACCEPT_LANGUAGE="es")
            assert response.status_code == 503 and response["Retry-After"] == "15"
            assert "Restauración en curso" in response.content.decode()
        assert host_client("bienestar.localhost").get("/admin/login/").status_code == 200
        assert host_client("localhost").get("/admin/login/").status_code == 200


def _clinic_id(schema: str) -> int:
    from clinics.models import Clinic

    return Clinic.objects.get(schema_name=schema).pk


def test_archive_files_of_failed_restores_are_untouched(scratch_clinic):
    backup = make_backup()
    files = storage_files()
    digest = sha256_of(stored_path(backup.storage_name))
    assert_refused(make_backup("bienestar").pk, "belongs to another clinic")
    assert sha256_of(stored_path(backup.storage_name)) == digest
    assert files <= storage_files()
    assert json.loads(json.dumps(backup.manifest))["tables"]


def test_restore_from_a_downloaded_file(scratch_clinic, tmp_path, capsys):
    original = table_checksums(SCHEMA)
    backup = make_backup()
    downloaded = tmp_path / "respaldo-restaura.respaldo"
    downloaded.write_bytes(stored_path(backup.storage_name).read_bytes())
    damage_clinic()
    call_command("restore_clinic", SCHEMA, "--file", str(downloaded), "--yes")
    out = capsys.readouterr().out
    assert f"The same file as backup #{backup.pk} (pg): not stored twice." in out and "succeeded" in out
    assert f"from backup #{backup.pk} succeeded" in out
    assert not Backup.objects.filter(clinic=scratch_clinic, kind=Backup.Kind.UPLOADED).exists()
    assert table_checksums(SCHEMA) == original
    # once the catalog no longer holds it (expired), the file is kept as an uploaded backup
    Backup.objects.filter(pk=backup.pk).update(expired_at=timezone.now())
    damage_clinic()
    call_command("restore_clinic", SCHEMA, "--file", str(downloaded), "--yes")
    out = capsys.readouterr().out
    uploaded = Backup.objects.get(clinic=scratch_clinic, kind=Backup.Kind.UPLOADED)
    assert f"File accepted as backup #{uploaded.pk} (pg)" in out and "succeeded" in out
    assert table_checksums(SCHEMA) == original


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"DROP TABLE dental_patient;\n", "This is an SQL script"),
        (b"", "The file is empty."),
        (
            b'[{"model": "clinics.domain", "pk": 1, "fields": {"domain": "x", "tenant": 1, "is_primary": true}}]',
            'records of "clinics.domain", which is not clinic data',
        ),
    ],
)
def test_restore_from_a_bad_file_is_refused_in_one_line(scratch_clinic, tmp_path, content, message):
    before, files = table_checksums(SCHEMA), storage_files()
    bad = tmp_path / "upload.bin"
    bad.write_bytes(content)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call_command("restore_clinic", SCHEMA, "--file", str(bad), "--yes")
    assert table_checksums(SCHEMA) == before and storage_files() == files
    assert not Restore.objects.exists() and not Backup.objects.filter(clinic=scratch_clinic).exists()


def test_an_older_backup_is_migrated_forward_after_the_restore(scratch_clinic):
    latest = ("auth", "0012_alter_user_first_name_max_length")
    with connection.cursor() as cursor:  # the clinic as an older release left it
        cursor.execute(f'DELETE FROM "{SCHEMA}".django_migrations WHERE app = %s AND name = %s', list(latest))
    backup = make_backup()
    assert latest[1] not in backup.manifest["migrations"]["auth"]
    restore = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False).pk
    )
    assert restore.status == JobStatus.SUCCEEDED and restore.migrated
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT 1 FROM "{SCHEMA}".django_migrations WHERE app = %s AND name = %s', list(latest))
        assert cursor.fetchone() is not None


def test_restore_command_can_hand_the_job_to_a_worker(scratch_clinic, capsys):
    backup = make_backup()
    call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes", "--async")
    restore = Restore.objects.get(clinic=scratch_clinic)
    assert f"Restore #{restore.pk} of {SCHEMA} from backup #{backup.pk} queued." in capsys.readouterr().out
    assert restore.status == JobStatus.PENDING


def test_a_backup_made_with_newer_client_tools_is_refused_before_the_safety_backup(scratch_clinic):
    backup = make_backup()
    newer = forged(scratch_clinic, backup, lambda m: m["postgresql"].update(dump_tool="99.1"))
    assert_refused(newer.pk, "This backup was made with pg_dump 99.1, which pg_restore ")
    error = Restore.objects.get().error
    assert "set BACKUPS_PG_BIN_DIR to PostgreSQL 99 (or newer) client tools" in error
    assert not Backup.objects.filter(clinic=scratch_clinic, kind=Backup.Kind.PRE_RESTORE).exists()


def test_table_names_in_the_manifest_reach_the_message_quoted(scratch_clinic):
    backup = make_backup()
    odd = forged(scratch_clinic, backup, lambda m: m["tables"].update({"it's'; DROP TABLE x; --": 0}))
    assert_refused(odd.pk, "missing: it's'; DROP TABLE x; --")
