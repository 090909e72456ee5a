"""Backing up a clinic through the services and the command, on the real database."""

import hashlib
import json
import shutil
import subprocess

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import archive, selectors
from backups.exceptions import ClinicBusy
from backups.formats.pg.sqldump import SCRIPT_END, SCRIPT_HEADER
from backups.keys import clinic as clinic_keys
from backups.keys.clinic import identities_held
from backups.models import Backup, ClinicKey, JobStatus
from backups.services.backup import (
    Recovered,
    backup_recover_crashed,
    backup_request,
    backup_run,
    backup_sweep_stale,
)
from backups.tests.helpers import other_connection, sha256_of, storage_files, stored_path, untar_plaintext
from clinics.models import Clinic

pytestmark = pytest.mark.django_db


def test_backup_clinic_command_makes_an_archive_the_age_tool_opens(capsys, settings, tmp_path):
    call_command("backup_clinic", "clinica")
    out = capsys.readouterr().out
    backup = Backup.objects.latest("pk")
    assert out.startswith(f"#{backup.pk} clinica manual pg succeeded size=")
    assert backup.status == JobStatus.SUCCEEDED and backup.sha256 in out
    path = stored_path(backup.storage_name)
    assert backup.storage_name.startswith(f"clinics/clinica/{timezone.now():%Y/%m}/")
    assert backup.storage_name.endswith("-manual.respaldo")
    assert backup.size == path.stat().st_size and backup.sha256 == sha256_of(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    assert shutil.which("age"), "Debian package age is needed (make test installs it)"
    deployment_key = settings.BACKUPS_AGE_IDENTITY_FILE
    alone = subprocess.run(["age", "-d", "-i", deployment_key, str(path)], capture_output=True)
    assert alone.returncode != 0, "the archive is encrypted to the clinic's own key, not the deployment's"
    live = ClinicKey.objects.get(clinic=backup.clinic, erased_at__isnull=True)
    (wrapped,) = stored_path("keys/clinica").glob(f"*-{clinic_keys.key_id(live.public_key)}.age")
    clinic_key = tmp_path / "clinic-key.txt"
    clinic_key.write_bytes(
        subprocess.run(["age", "-d", "-i", deployment_key, str(wrapped)], capture_output=True, check=True).stdout
    )
    decrypted = subprocess.run(["age", "-d", "-i", str(clinic_key), str(path)], capture_output=True, check=True).stdout
    members = untar_plaintext(decrypted)
    manifest = json.loads(members["manifest.json"])
    assert manifest["clinic"]["schema"] == "clinica" and manifest["payload_format"] == "pg"
    assert manifest["tables"] == backup.manifest["tables"] and manifest["tables"]["dental_patient"] > 0
    assert manifest["migrations"] == backup.manifest["migrations"] and "dental" in manifest["migrations"]
    payload = b"".join(data for name, data in members.items() if name.startswith("payload/"))
    # A plain SQL script, read from the clinic's own catalog entries (docs/archive-format.md).
    assert manifest["postgresql"]["payload"] == "sql"
    assert payload.startswith(SCRIPT_HEADER.encode()) and payload.endswith(SCRIPT_END.encode())
    auth = json.loads(members["auth.json"])
    assert auth["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert b'\nCOPY "clinica"."dental_patient" (' in payload and b"bienestar" not in payload


def test_archive_verifies_with_the_deployment_key_and_matches_the_catalog():
    backup = backup_run(backup_id=backup_request(clinic="bienestar", enqueue=False).pk)
    with open(stored_path(backup.storage_name), "rb") as handle:
        summary = archive.verify_archive(handle, identities=identities_held())
    assert summary.manifest["clinic"]["schema"] == "bienestar"
    assert summary.manifest["tables"] == backup.manifest["tables"]


def test_json_backup_holds_every_value_exactly(django_db_blocker):
    from django_tenants.utils import schema_context

    from backups.formats.json.payload import payload_models, read_json_payload

    backup = backup_run(backup_id=backup_request(clinic="clinica", payload_format="json", enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    with (
        open(stored_path(backup.storage_name), "rb") as handle,
        archive.open_archive(handle, identities=identities_held()) as reader,
    ):
        rows = list(read_json_payload(reader))
    by_model = {}
    for label, pk, fields in rows:
        by_model.setdefault(label, {})[pk] = fields
    with schema_context("clinica"):
        for model in payload_models():
            label = model._meta.label_lower
            stored = by_model.get(label, {})
            assert len(stored) == model.objects.count() == backup.manifest["tables"][model._meta.db_table]
            for obj in model.objects.all():
                fields = stored[obj.pk]
                for field in model._meta.concrete_fields:
                    if field.primary_key:
                        continue
                    db_value = getattr(obj, field.attname)
                    raw = fields[field.name]
                    payload_value = raw if raw is None else field.to_python(raw)
                    if isinstance(db_value, memoryview):
                        db_value = bytes(db_value)
                    if hasattr(db_value, "name") and not isinstance(db_value, str):  # FieldFile
                        db_value = db_value.name
                    assert payload_value == db_value, (label, obj.pk, field.name)
    microseconds = [f["starts_at"] for f in by_model["dental.appointment"].values()]
    assert any(not value.endswith(".000+00:00") and "." in value for value in microseconds)


def test_unknown_clinic_is_a_clear_command_error():
    with pytest.raises(CommandError, match="There is no clinic 'nope'"):
        call_command("backup_clinic", "nope")
    with pytest.raises(CommandError, match="The platform itself is not a clinic"):
        call_command("backup_clinic", "public")
    assert not Backup.objects.exists()


def test_missing_schema_fails_with_a_reason_and_stores_nothing():
    Clinic.objects.bulk_create([Clinic(schema_name="fantasma", name="Sin esquema")])  # no schema created
    before = storage_files()
    with pytest.raises(CommandError, match="schema 'fantasma' does not exist"):
        call_command("backup_clinic", "fantasma")
    backup = Backup.objects.get(clinic__schema_name="fantasma")
    assert backup.status == JobStatus.FAILED and backup.failed_at and "does not exist" in backup.error
    assert storage_files() == before


def test_missing_key_fails_closed(settings):
    settings.BACKUPS_AGE_IDENTITIES = []
    settings.BACKUPS_AGE_IDENTITY_FILE = None
    before = storage_files()
    with pytest.raises(CommandError, match="no archive key is configured"):
        call_command("backup_clinic", "clinica")
    assert not Backup.objects.exists()  # the command refuses before recording anything
    backup = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
    assert backup.status == JobStatus.FAILED and "no archive key is configured" in backup.error_message()
    assert storage_files() == before


def test_no_pg_dump_fails_with_a_reason(settings, tmp_path):
    settings.BACKUPS_PG_BIN_DIR = str(tmp_path)
    with pytest.raises(CommandError, match="No pg_dump/pg_restore/psql found"):
        call_command("backup_clinic", "clinica")
    assert "BACKUPS_PG_BIN_DIR" in Backup.objects.get().error


def test_storage_unreachable_fails_with_a_reason(settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker / "x")},
        },
    }
    with pytest.raises(CommandError, match="failed"):
        call_command("backup_clinic", "clinica")
    backup = Backup.objects.get()
    assert backup.status == JobStatus.FAILED and backup.error
    assert list(tmp_path.iterdir()) == [blocker]


def test_dump_blocked_by_a_lock_fails_and_leaves_nothing(settings):
    settings.BACKUPS_LOCK_WAIT_TIMEOUT_MS = 300
    before = storage_files()
    with other_connection() as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE clinica.dental_invoice IN ACCESS EXCLUSIVE MODE")
        backup = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
        locker.execute("ROLLBACK")
    assert backup.status == JobStatus.FAILED and "lock" in backup.error.lower()
    assert storage_files() == before


def test_one_active_job_per_clinic():
    first = backup_request(clinic="clinica", enqueue=False)
    with pytest.raises(ClinicBusy, match=f"already has backup #{first.pk} waiting or running"):
        backup_request(clinic="clinica", enqueue=False)
    backup_request(clinic="bienestar", enqueue=False)  # other clinics are not held up
    with pytest.raises(IntegrityError), transaction.atomic():
        Backup.objects.create(clinic=first.clinic, status=JobStatus.RUNNING)


def test_a_job_found_running_without_its_worker_is_failed_and_retried():
    backup = backup_request(clinic="clinica", enqueue=False)
    Backup.objects.filter(pk=backup.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
    retry = backup_run(backup_id=backup.pk)  # the queue delivered it again after a crash
    backup.refresh_from_db()
    assert backup.status == JobStatus.FAILED and backup.error.startswith("Interrupted")
    assert retry.pk != backup.pk and retry.retry_of_id == backup.pk and retry.attempt == 2
    assert retry.status == JobStatus.SUCCEEDED


def test_a_job_whose_worker_still_holds_the_clinic_is_left_alone():
    from backups.jobs import LOCK_NAMESPACE

    backup = backup_request(clinic="clinica", enqueue=False)
    Backup.objects.filter(pk=backup.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
    with other_connection() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, backup.clinic_id])
        assert backup_run(backup_id=backup.pk).status == JobStatus.RUNNING
        assert backup_sweep_stale(older_than=timezone.timedelta(0)) == []
    assert Backup.objects.get(pk=backup.pk).status == JobStatus.RUNNING


def test_sweeper_fails_stale_jobs_and_queues_a_retry():
    backup = backup_request(clinic="bienestar", enqueue=False)
    Backup.objects.filter(pk=backup.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
    assert backup_sweep_stale() == []  # too recent to call it stale
    retries = backup_sweep_stale(older_than=timezone.timedelta(0))
    assert len(retries) == 1 and retries[0].status == JobStatus.PENDING
    assert Backup.objects.get(pk=backup.pk).status == JobStatus.FAILED


def test_list_backups_command(capsys):
    ok = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
    call_command("list_backups", "clinica")
    assert f"#{ok.pk} clinica manual pg succeeded" in capsys.readouterr().out
    with pytest.raises(CommandError, match="There is no clinic 'nope'"):
        call_command("list_backups", "nope")


def test_a_clinic_selector_without_its_clinic_lists_nothing_it_refuses():
    mine = backup_request(clinic="clinica", enqueue=False)
    theirs = Backup.objects.create(clinic=Clinic.objects.get(schema_name="bienestar"), status=JobStatus.FAILED)
    assert list(selectors.backup_list(clinic_id=mine.clinic_id)) == [mine]
    with pytest.raises(TypeError):
        selectors.backup_list()
    with pytest.raises(TypeError, match="needs the clinic's id"):
        selectors.backup_list(clinic_id=None)
    assert {theirs, mine} <= set(selectors.platform_backup_list())


def test_a_clinic_escrow_key_opens_its_backups_with_the_age_tool(tmp_path):
    escrow = archive.generate_identity()
    Clinic.objects.filter(schema_name="bienestar").update(backup_recipient=archive.identity_public_key(escrow))
    backup = backup_run(backup_id=backup_request(clinic="bienestar", enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    key_file = tmp_path / "clinic-key.txt"
    key_file.write_text(escrow + "\n")
    opened = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(stored_path(backup.storage_name))], capture_output=True, check=True
    ).stdout
    assert json.loads(untar_plaintext(opened)["manifest.json"])["clinic"]["schema"] == "bienestar"
    other = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
    refused = subprocess.run(
        ["age", "-d", "-i", str(key_file), str(stored_path(other.storage_name))], capture_output=True
    )
    assert refused.returncode != 0  # the escrow key opens its own clinic's backups only


def test_a_backup_that_ended_after_the_sweeper_saw_it_running_keeps_its_archive():
    """The sweeper lists running backups, then checks each one's lock: a backup whose worker
    finished in between is found with its lock free. It must be left as it ended."""
    backup = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED
    seen = Backup.objects.get(pk=backup.pk)
    seen.status = JobStatus.RUNNING  # what the sweeper's listing saw a moment earlier
    assert backup_recover_crashed(seen) == Recovered(failed=False)
    backup.refresh_from_db()
    assert backup.status == JobStatus.SUCCEEDED and not backup.error
    assert sha256_of(stored_path(backup.storage_name)) == backup.sha256  # the archive is still there
    assert not Backup.objects.filter(retry_of=backup).exists()  # and nothing backs it up again
