"""A new clinic from a backup (clone), and an offboarded clinic brought back under a new schema name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_context

from backups.exceptions import RespaldoError
from backups.jobs import worker_name
from backups.media import MediaStaging
from backups.models import AuditEntry, BackupPolicy, CloneJob, JobStatus
from backups.services import clone as clones
from backups.tests.helpers import NEW, NEW_DOMAIN, SCHEMA, make_backup, schemas, stored_path, table_checksums
from clinics.models import Clinic, Domain
from conftest import host_client
from dental.models import Patient

FILES = {0: b"\x89PNG first x-ray" * 5000, 1: os.urandom(300_000), 2: b""}


@pytest.fixture(autouse=True)
def _private_media(media_root):
    """Every test here writes files under a private MEDIA_ROOT (``media_root``, backups/tests/conftest.py)."""
    return media_root


def _add_xrays_and_a_user() -> dict[str, bytes]:
    """X-rays for the first patients and a clinic administrator who can log in; {file name: bytes}."""
    written = {}
    with schema_context(SCHEMA):
        for index, patient in enumerate(Patient.objects.order_by("pk")[: len(FILES)]):
            patient.xray.save(f"x-{index}.png", ContentFile(FILES[index]), save=True)
            written[patient.xray.name] = FILES[index]
        User.objects.create_superuser("directora", "directora@example.com", "clave-segura-1")
    connection.set_schema_to_public()
    return written


def _folder(root: Path, schema: str) -> dict[str, bytes]:
    folder = root / schema
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _clone(backup_id: int, schema: str = NEW, name: str = "Formación", **kwargs) -> CloneJob:
    job = clones.clone_request(
        source_backup_id=backup_id, schema_name=schema, name=name, requested_by="tests", enqueue=False, **kwargs
    )
    return clones.clone_run(clone_id=job.pk)


def _nothing_of(schema: str, media_root: Path) -> None:
    """No trace of a clinic ``schema``: no schema, row, domain, files or staged files."""
    assert schema not in schemas()
    assert not Clinic.objects.filter(schema_name=schema).exists()
    assert not Domain.objects.filter(domain=clones.default_domain(schema)).exists()
    assert not (media_root / schema).exists() and not (media_root / f"{schema}__restoring").exists()


def test_a_pg_clone_is_the_clinic_at_backup_time_with_its_users_and_files(created, scratch_clinic, media_root):
    written = _add_xrays_and_a_user()
    backup = make_backup()
    at_backup = table_checksums(SCHEMA)
    with schema_context(SCHEMA):  # the source moves on after its backup
        Patient.objects.filter(pk=Patient.objects.order_by("pk").first().pk).update(first_name="Cambiado")
    connection.set_schema_to_public()
    source_now = table_checksums(SCHEMA)

    job = _clone(backup.pk, name="Clínica de formación")

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not job.error_code and not job.migrated
    clinic = Clinic.objects.get(schema_name=NEW)
    assert job.clinic == clinic and clinic.name == "Clínica de formación" and clinic.offboarded_at is None
    assert clinic.time_zone == scratch_clinic.time_zone and clinic.language == scratch_clinic.language
    assert Domain.objects.get(tenant=clinic).domain == NEW_DOMAIN
    assert BackupPolicy.objects.filter(clinic=clinic).exists()
    assert table_checksums(NEW) == at_backup  # every table, row for row (users and migrations included)
    assert table_checksums(SCHEMA) == source_now  # the source is untouched
    assert Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is None
    assert _folder(media_root, NEW) == written == _folder(media_root, SCHEMA)  # byte for byte
    assert not (media_root / f"{NEW}__restoring").exists()
    trail = {e.clinic_id: e.details for e in AuditEntry.objects.filter(action=AuditEntry.Action.CLONED)}
    assert trail[scratch_clinic.pk]["to_schema"] == NEW and trail[clinic.pk]["from_schema"] == SCHEMA
    client = host_client(NEW_DOMAIN)
    login = client.post("/admin/login/", {"username": "directora", "password": "clave-segura-1"})
    assert login.status_code == 302, login.content.decode()[:500]
    assert client.get("/admin/").status_code == 200


def test_a_json_clone_has_the_clinics_records_in_a_freshly_migrated_schema(created, media_root):
    written = _add_xrays_and_a_user()
    backup = make_backup(payload_format="json")
    dental = {table: digest for table, digest in table_checksums(SCHEMA).items() if table.startswith("dental_")}

    job = _clone(backup.pk)

    assert job.status == JobStatus.SUCCEEDED, job.error
    cloned = table_checksums(NEW)
    assert {table: digest for table, digest in cloned.items() if table.startswith("dental_")} == dental
    assert "django_migrations" in cloned and "auth_user" in cloned  # a complete clinic schema
    assert _folder(media_root, NEW) == written
    with schema_context(NEW):
        assert not User.objects.filter(username="directora").exists()  # json backups hold records, not accounts
    job = CloneJob.objects.get()
    assert job.error_code == "clone_without_users"  # the job's page says so, and what to do
    assert "create_tenant_superuser --schema=clinica_formacion" in job.error_message()
    connection.set_schema_to_public()


def test_an_older_backup_is_cloned_and_migrated_forward(created):
    latest = ("auth", "0012_alter_user_first_name_max_length")
    with connection.cursor() as cursor:  # the clinic as an older release left it
        cursor.execute(f'DELETE FROM "{SCHEMA}".django_migrations WHERE app = %s AND name = %s', list(latest))
    backup = make_backup()

    job = _clone(backup.pk)

    assert job.status == JobStatus.SUCCEEDED and job.migrated, job.error
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT 1 FROM "{NEW}".django_migrations WHERE app = %s AND name = %s', list(latest))
        assert cursor.fetchone() is not None


@pytest.mark.parametrize(
    ("schema", "domain", "message_id"),
    [
        ("Clinica", None, "clone_schema_invalid"),
        ("1clinica", None, "clone_schema_invalid"),
        ("clinica__restoring", None, "clone_schema_invalid"),
        ("public", None, "clone_schema_invalid"),
        ("pg_clinica", None, "clone_schema_invalid"),
        ("c" * 41, None, "clone_schema_invalid"),
        (SCHEMA, None, "clone_schema_taken_clinic"),
        ("clinica", None, "clone_schema_taken_clinic"),
        ("huerfano", None, "clone_schema_taken_database"),
        (NEW, "clinica.localhost", "clone_domain_taken"),
        (NEW, "mal_dominio.localhost", "clone_domain_invalid"),
        (NEW, "-x.localhost", "clone_domain_invalid"),
    ],
)
def test_a_name_or_domain_that_is_invalid_or_taken_is_refused_and_changes_nothing(
    created, media_root, schema, domain, message_id
):
    backup = make_backup()
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "huerfano"')  # a schema no clinic owns
    try:
        before = (schemas(), set(Clinic.objects.values_list("pk", flat=True)), Domain.objects.count())
        with pytest.raises(RespaldoError) as refused:
            clones.clone_request(
                source_backup_id=backup.pk, schema_name=schema, name="x", domain=domain, requested_by="t"
            )
        assert refused.value.message_id == message_id, str(refused.value)
        assert before == (schemas(), set(Clinic.objects.values_list("pk", flat=True)), Domain.objects.count())
        assert not CloneJob.objects.exists() and not media_root.exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP SCHEMA "huerfano"')


def test_a_name_with_a_media_folder_or_an_active_clone_is_refused(created, media_root):
    backup = make_backup()
    (media_root / "antigua").mkdir(parents=True)
    with pytest.raises(RespaldoError, match="media folder"):
        clones.clone_request(source_backup_id=backup.pk, schema_name="antigua", name="x", requested_by="t")
    first = clones.clone_request(source_backup_id=backup.pk, schema_name=NEW, name="x", requested_by="t", enqueue=False)
    with pytest.raises(RespaldoError, match=f"Clone #{first.pk} is already making"):
        clones.clone_request(source_backup_id=backup.pk, schema_name=NEW, name="y", requested_by="t", enqueue=False)
    assert CloneJob.objects.count() == 1


def test_a_damaged_archive_creates_nothing(created, media_root):
    backup = make_backup()
    stored_path(backup.storage_name).write_bytes(b"not the backup any more")

    job = _clone(backup.pk)

    assert job.status == JobStatus.FAILED and job.error_code in ("archive_changed", "not_recognized")
    assert "was not created" in job.error_message() and job.clinic is None
    _nothing_of(NEW, media_root)


def test_a_clone_failing_half_way_through_its_files_leaves_nothing(created, media_root, monkeypatch):
    _add_xrays_and_a_user()
    backup = make_backup()
    real_sink = MediaStaging.sink
    seen = []

    def failing_sink(self, path, stream):  # one file staged by then (the files follow the payload)
        seen.append(path)
        if len(seen) == 2:
            raise OSError("disk full")
        real_sink(self, path, stream)

    monkeypatch.setattr(MediaStaging, "sink", failing_sink)
    job = _clone(backup.pk)

    assert len(seen) == 2
    assert job.status == JobStatus.FAILED and "disk full" in job.error, job.error
    assert job.clinic is None and job.progress_phase == ""
    _nothing_of(NEW, media_root)


def test_a_clone_failing_after_its_schema_was_restored_leaves_nothing(created, media_root, monkeypatch):
    from backups.formats import pg

    written = _add_xrays_and_a_user()
    backup = make_backup()
    found = {}

    def failing_check(cursor, schema, tables, *, loaded):  # inside the clone's transaction, after the restore
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema])
        found["schema"] = cursor.fetchone()[0]
        found["clinic"] = Clinic.objects.filter(schema_name=NEW).exists()
        raise RespaldoError("row_count_mismatch", table="dental_patient", count=0, expected=1)

    monkeypatch.setattr(pg, "check_counts", failing_check)
    job = _clone(backup.pk)

    assert found["schema"] == 1 and found["clinic"]  # half way: the clinic and its schema existed
    assert job.status == JobStatus.FAILED and job.error_code == "row_count_mismatch", job.error
    assert len(written) == len(FILES)
    _nothing_of(NEW, media_root)


def test_a_clone_failing_after_its_commit_is_removed_again(created, media_root, monkeypatch):
    _add_xrays_and_a_user()
    backup = make_backup()

    def failing_switch(self):
        assert Clinic.objects.filter(schema_name=NEW).exists()  # committed by then
        os.rename(self.staging, self.root)  # half done
        raise OSError("rename failed")

    monkeypatch.setattr(MediaStaging, "switch", failing_switch)
    job = _clone(backup.pk)

    assert job.status == JobStatus.FAILED and "rename failed" in job.error
    _nothing_of(NEW, media_root)


def test_a_clone_whose_worker_died_is_settled_and_never_run_again(created, media_root):
    backup = make_backup()
    job = clones.clone_request(source_backup_id=backup.pk, schema_name=NEW, name="x", requested_by="t", enqueue=False)
    CloneJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, worker=worker_name())
    staged = media_root / f"{NEW}__restoring"
    staged.mkdir(parents=True)

    job = clones.clone_run(clone_id=job.pk)

    assert job.status == JobStatus.FAILED and job.error_code == "interrupted"
    _nothing_of(NEW, media_root)


def test_an_offboarded_clinic_comes_back_under_a_new_schema_name(created, scratch_clinic, media_root):
    from backups.services.offboard import bring_back, offboard_clinic

    written = _add_xrays_and_a_user()
    before = table_checksums(SCHEMA)
    policy = BackupPolicy.objects.get(clinic=scratch_clinic)
    policy.keep_daily = 3
    policy.save()
    last = offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    assert SCHEMA not in schemas()

    returned = bring_back(clinic=scratch_clinic.pk, requested_by="superadmin", schema_name="restaura_nueva")

    assert returned == last
    new = Clinic.objects.get(schema_name="restaura_nueva")
    assert new.name == scratch_clinic.name and new.offboarded_at is None
    old = Clinic.objects.get(pk=scratch_clinic.pk)
    assert old.offboarded_at is not None and SCHEMA not in schemas()  # the offboarded row stays as it was
    assert not Domain.objects.filter(tenant=old).exists()
    assert table_checksums("restaura_nueva") == before
    assert _folder(media_root, "restaura_nueva") == written
    new_policy = BackupPolicy.objects.get(clinic=new)
    assert new_policy.enabled and new_policy.keep_daily == 3
    entry = AuditEntry.objects.get(action="brought_back", clinic=new)
    assert entry.details["former_clinic"] == SCHEMA and entry.backup_id_ref == last.pk
    assert host_client("restaura-nueva.localhost").get("/admin/login/").status_code == 200


def test_bringing_back_under_a_taken_name_changes_nothing(created, scratch_clinic):
    from backups.services.offboard import bring_back, offboard_clinic

    offboard_clinic(clinic=SCHEMA, requested_by="superadmin")
    with pytest.raises(RespaldoError, match="already used by clinic"):
        bring_back(clinic=scratch_clinic.pk, requested_by="superadmin", schema_name="clinica")
    assert Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is not None
    assert not CloneJob.objects.exists() and SCHEMA not in schemas()


def test_the_clone_command_creates_the_clinic_or_says_why_not(created, capsys):
    backup = make_backup()
    with pytest.raises(CommandError, match="is already used by clinic"):
        call_command("clone_clinic", str(backup.pk), SCHEMA)
    with pytest.raises(CommandError, match="There is no backup #999999"):
        call_command("clone_clinic", "999999", NEW)

    call_command("clone_clinic", str(backup.pk), NEW, "--name", "Formación", "--domain", "formacion.localhost")

    out = capsys.readouterr().out
    assert f"({NEW}) created from backup #{backup.pk}" in out and "formacion.localhost" in out
    assert Clinic.objects.get(schema_name=NEW).name == "Formación"
    assert Domain.objects.get(domain="formacion.localhost").tenant.schema_name == NEW
