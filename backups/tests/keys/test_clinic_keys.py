"""Per-clinic archive keys: each clinic's archives open only with its own key; erasing that key
makes every copy of them unreadable with any key the deployment holds (crypto-erasure)."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import threading
from datetime import timedelta

import boto3
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups import archive, jobs, storage
from backups.archive import KeyConfigError
from backups.exceptions import BackupRefused
from backups.keys import archive_identities
from backups.keys import clinic as clinic_keys
from backups.models import AuditEntry, Backup, ClinicKey, JobStatus
from backups.services import restore as restores
from backups.services.backup import backup_request, backup_run
from backups.services.offboard import erase_clinic_backups, erase_offboarded, offboard_clinic
from backups.services.upload import UploadRefused, backup_from_upload
from backups.tests.helpers import (
    SCHEMA,
    make_backup,
    other_connection,
    platform_admin,
    s3_config,
    stored_path,
    table_checksums,
    use_backups_storage,
)
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
    assert row.public_key == archive.identity_public_key(clinica_key)
    # The catalog row holds public metadata only; the key lives wrapped in the storage object.
    assert {field.attname for field in ClinicKey._meta.concrete_fields} == {
        "id",
        "clinic_id",
        "public_key",
        "wrapped_with",
        "created_at",
        "erased_at",
        "erased_by",
        "erase_reason",
    }
    assert stored_path(clinic_keys.stored_key_name(row)).exists()


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

    assert erased.deleted == 2 and erased.kept_held == []
    for backup in (pg, json):
        backup.refresh_from_db()
        assert backup.expired_at is not None and not stored_path(backup.storage_name).exists()
    assert not wrapped.exists()
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.erased_at and row.erased_by == "dpo@platform"
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
    assert row.erased_at is None
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
    live = ClinicKey.objects.get(clinic=scratch_clinic, erased_at__isnull=True)
    assert stored_path(backup.storage_name).exists() and stored_path(clinic_keys.stored_key_name(live)).exists()

    done = client.post(
        "/admin/clinics/clinic/", {**action, "post": "yes", "reason": "request #7", "understood": "on"}, follow=True
    )
    assert "is destroyed and 1 stored backups deleted" in done.content.decode()
    assert not stored_path(backup.storage_name).exists()
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.erased_at and row.erased_by == "superadmin" and row.erase_reason == "request #7"


# --- no byte of the catalog database opens an erased clinic's archives (issue 25) -------------

SCAN_CHUNK = 8 << 20


def _file_holds(cursor, path: str, needles: dict[str, bytes]) -> set[str]:
    """Which needles a file of the database cluster holds (read by the server, in chunks);
    an empty set for a file that is not there."""
    cursor.execute("SELECT size FROM pg_stat_file(%s, true)", [path])
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return set()
    overlap = max(len(needle) for needle in needles.values())
    found: set[str] = set()
    for offset in range(0, row[0], SCAN_CHUNK):
        cursor.execute("SELECT pg_read_binary_file(%s, %s, %s, true)", [path, offset, SCAN_CHUNK + overlap])
        data = bytes(cursor.fetchone()[0] or b"")
        found |= {name for name, needle in needles.items() if needle in data}
    return found


def _public_relation_files(cursor) -> list[str]:
    """Every segment file of the main fork of the public schema's relations, their TOAST tables
    and TOAST indexes included (paths relative to the data directory)."""
    cursor.execute(
        """
        WITH rels AS (SELECT oid, reltoastrelid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
        SELECT pg_relation_filepath(oid) FROM rels
        UNION SELECT pg_relation_filepath(reltoastrelid) FROM rels WHERE reltoastrelid <> 0
        UNION SELECT pg_relation_filepath(i.indexrelid) FROM rels JOIN pg_index i ON i.indrelid = rels.reltoastrelid
        """
    )
    files = []
    for (path,) in cursor.fetchall():
        if path is None:  # a view, a partitioned table: no storage
            continue
        segment = 0
        while True:
            name = path if segment == 0 else f"{path}.{segment}"
            cursor.execute("SELECT size FROM pg_stat_file(%s, true)", [name])
            if cursor.fetchone()[0] is None:
                break
            files.append(name)
            segment += 1
    return files


def _database_holds(start_lsn: str, needles: dict[str, bytes]) -> dict[str, set[str]]:
    """Which needles the public schema's data files, the WAL written since ``start_lsn`` and a
    ``pg_dump --schema=public`` of the database hold, by where."""
    from django.db import connection

    from backups import postgres

    found: dict[str, set[str]] = {"data files": set(), "wal": set(), "pg_dump": set()}
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")  # every dirty page on disk
        for path in _public_relation_files(cursor):
            found["data files"] |= _file_holds(cursor, path, needles)
        cursor.execute("SELECT pg_walfile_name(%s::pg_lsn)", [start_lsn])
        first = cursor.fetchone()[0]
        cursor.execute(
            "SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' AND name >= %s ORDER BY name", [first]
        )
        segments = [name for (name,) in cursor.fetchall()]
        assert segments and segments[0] == first
        for name in segments:
            found["wal"] |= _file_holds(cursor, f"pg_wal/{name}", needles)
    tools = postgres.find_pg_tools()
    dump = subprocess.run(
        [tools.pg_dump, "--schema=public", "--no-owner"],
        env=postgres.libpq_environment(),
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    found["pg_dump"] = {name for name, needle in needles.items() if needle in dump}
    return found


def test_no_byte_of_the_catalog_database_opens_an_erased_clinics_archives(scratch_clinic, tmp_path):
    """The erased key is in none of the database's data files, its WAL, nor a pg_dump of it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        start_lsn = cursor.fetchone()[0]
    backup = make_backup()
    copy = tmp_path / "copy.respaldo"
    shutil.copy(stored_path(backup.storage_name), copy)
    row = ClinicKey.objects.get(clinic=scratch_clinic, erased_at__isnull=True)
    identity = clinic_keys.identity_of(scratch_clinic)
    wrapped = stored_path(clinic_keys.stored_key_name(row)).read_bytes()
    needles = {
        "wrapped key": wrapped,
        "wrapped key, base64": base64.b64encode(wrapped),
        "wrapped key, hex": wrapped.hex().encode(),
        "identity": identity.encode(),
        "identity, lower case": identity.lower().encode(),
        "identity, base64": base64.b64encode(identity.encode()),
        "public key": row.public_key.encode(),  # the control: public, in the catalog, so the scan must see it
    }

    erasure = erase_clinic_backups(scratch_clinic, actor="dpo", reason="data-protection request #25")

    assert erasure.deleted == 1 and ClinicKey.objects.get(pk=row.pk).erased_at is not None
    found = _database_holds(start_lsn, needles)
    assert found == {"data files": {"public key"}, "wal": {"public key"}, "pg_dump": {"public key"}}
    assert row.public_key not in clinic_keys._cache  # this process's memory copy went with it
    held = clinic_keys.identities_held()
    assert identity not in held
    for key in held:
        assert not opens(copy.read_bytes(), [key])


def test_the_key_lives_in_storage_and_a_memory_copy_serves_only_a_live_row(scratch_clinic):
    make_backup()
    row = ClinicKey.objects.select_related("clinic").get(clinic=scratch_clinic)
    identity = clinic_keys.identity_of(scratch_clinic)
    stored = stored_path(clinic_keys.stored_key_name(row))
    saved = stored.read_bytes()

    clinic_keys.forget(row.public_key)  # as another process: the key comes from storage
    assert clinic_keys.identity_of(scratch_clinic) == identity
    stored.unlink()
    assert clinic_keys.identity_of(scratch_clinic) == identity  # the memory copy, for a live row
    clinic_keys.forget(row.public_key)
    with pytest.raises(KeyConfigError, match=r"missing from the backup storage \(keys/restaura/"):
        clinic_keys.reading_identities(scratch_clinic)
    refused = backup_run(backup_id=backup_request(clinic=SCHEMA, enqueue=False).pk)
    assert refused.status == JobStatus.FAILED  # no archive is written to a key the storage lacks
    stored.write_bytes(saved)
    assert clinic_keys.identity_of(scratch_clinic) == identity

    # Erased by another process (the row changed behind this process's back): the copy is not used.
    ClinicKey.objects.filter(pk=row.pk).update(erased_at=timezone.now(), erased_by="elsewhere")
    assert clinic_keys.identity_of(scratch_clinic) is None
    assert identity not in clinic_keys.identities_held()
    assert identity not in clinic_keys.reading_identities(scratch_clinic)


# --- erasure against jobs and legal holds ----------------------------------------------------


def test_an_erasure_waits_for_no_job_it_is_refused_while_the_clinics_lock_is_held(scratch_clinic):
    """A worker holding the clinic's job lock (a job starting, a recovery): nothing is erased."""
    done = make_backup()
    with other_connection() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [jobs.LOCK_NAMESPACE, scratch_clinic.pk])
        with pytest.raises(BackupRefused) as refused:
            erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")
    assert refused.value.code == "clinic_busy_erase"
    row = ClinicKey.objects.get(clinic=scratch_clinic)
    assert row.erased_at is None and stored_path(clinic_keys.stored_key_name(row)).exists()
    done.refresh_from_db()
    assert done.expired_at is None and stored_path(done.storage_name).exists()


def test_a_backup_held_while_the_erasure_deletes_is_kept_and_reported(scratch_clinic, monkeypatch):
    first, second = make_backup(), make_backup()
    real_delete = storage.delete_stored

    def delete_then_hold(name: str) -> bool:
        """While the first backup is deleted, someone puts the second on hold, in another session."""
        if name == first.storage_name:
            thread = threading.Thread(target=_hold_elsewhere, args=(second,))
            thread.start()
            thread.join(60)
        return real_delete(name)

    monkeypatch.setattr(storage, "delete_stored", delete_then_hold)
    erasure = erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")

    assert erasure.deleted == 1 and erasure.kept_held == [second.pk]
    second.refresh_from_db()
    assert second.held_at is not None and second.expired_at is None and stored_path(second.storage_name).exists()
    assert not stored_path(first.storage_name).exists()
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.PRUNED, backup_id_ref=second.pk).exists()
    Backup.objects.filter(pk=second.pk).update(held_at=None)  # let the fixture drop the clinic


def test_a_hold_placed_while_the_key_is_destroyed_waits_for_it(scratch_clinic, monkeypatch):
    """The erasure checks for holds and destroys the key with the backup rows locked: a hold
    placed meanwhile waits (it cannot slip in between), then keeps its backup, reported."""
    backup = make_backup()
    real_purge = storage.purge_stored
    holder = threading.Thread(target=_hold_elsewhere, args=(backup,))

    def purge_while_someone_holds(name: str) -> bool:
        if not holder.is_alive() and name.startswith("keys/"):
            holder.start()
            holder.join(1.5)
            assert holder.is_alive(), "the hold did not wait for the erasure's row lock"
        return real_purge(name)

    monkeypatch.setattr(storage, "purge_stored", purge_while_someone_holds)
    erasure = erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")
    holder.join(60)

    assert ClinicKey.objects.get(clinic=scratch_clinic).erased_at is not None
    assert erasure.deleted == 0 and erasure.kept_held == [backup.pk]
    backup.refresh_from_db()
    assert backup.held_at is not None and stored_path(backup.storage_name).exists()
    Backup.objects.filter(pk=backup.pk).update(held_at=None)  # let the fixture drop the clinic


def _hold_elsewhere(backup: Backup) -> None:
    from django.db import connection

    from backups.services.legal_hold import hold_backup

    try:
        hold_backup(backup, actor="lawyer", reason="litigation")
    finally:
        connection.close()


@pytest.mark.django_db
def test_the_migration_puts_a_key_the_storage_lacks_there_before_the_column_goes():
    """0021 writes each live key's object from the catalog column if the storage lacks it."""
    import importlib

    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    migration = importlib.import_module("backups.migrations.0021_clinickey_wrapped_out_of_catalog")
    before = MigrationLoader(connection).project_state(("backups", "0020_platform_page_indexes")).apps
    row = ClinicKey.objects.select_related("clinic").get(clinic__schema_name="bienestar", erased_at__isnull=True)
    path = stored_path(clinic_keys.stored_key_name(row))
    saved = path.read_bytes()
    with connection.cursor() as cursor:  # the column as it was, rolled back with the test
        cursor.execute("ALTER TABLE backups_clinickey ADD COLUMN wrapped text NOT NULL DEFAULT ''")
        cursor.execute(
            "UPDATE backups_clinickey SET wrapped = %s WHERE id = %s", [base64.b64encode(saved).decode(), row.pk]
        )
    try:
        path.unlink()
        migration.wrapped_keys_to_storage(before, None)
        assert path.read_bytes() == saved
    finally:
        path.write_bytes(saved)
