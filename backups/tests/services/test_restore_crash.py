"""A restore interrupted by a dead worker or a dropped connection: the clinic is either
exactly as before or exactly the backup, never a mix, and the catalog says which."""

import os
import signal
from datetime import timedelta

import psutil
import pytest
from django.db import connection

from backups import jobs, tasks
from backups.models import Backup, JobStatus, Restore
from backups.services import restore as restores
from backups.services.backup import backup_request, backup_sweep_stale
from backups.tests.helpers import (
    SCHEMA,
    damage_clinic,
    make_backup,
    other_connection,
    schemas,
    someone_waits_on_a_lock,
    table_checksums,
    wait_for,
)
from conftest import host_client


def restore_backend(restore_id: int):
    """(pid, wait_event_type) of the database session running the restore's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, wait_event_type FROM pg_stat_activity WHERE application_name = %s",
            [f"respaldo-restore-{restore_id}"],
        )
        return cursor.fetchone()


def restore_tools(restore_id: int) -> list[psutil.Process]:
    """Client tools (pg_restore; psql is never used) started for this restore (found by their environment)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in {"psql", "pg_restore"}:
            try:
                if proc.environ().get("PGAPPNAME") == f"respaldo-restore-{restore_id}":
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return found


def start_blocked_restore(cluster, scratch_clinic):
    """A restore whose transaction has done all its work and waits, before COMMIT, on a lock we hold."""
    backup = make_backup()
    damage_clinic()
    before = table_checksums(SCHEMA)
    blocker = other_connection()
    blocker.execute("BEGIN")
    blocker.execute(f'SELECT count(*) FROM "{SCHEMA}".dental_patient')  # holds ACCESS SHARE until rollback
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, requested_by="admin")
    cluster(BACKUPS_RESTORE_LOCK_TIMEOUT_MS="120000")
    wait_for(
        lambda: (restore_backend(restore.pk) or (None, None))[1] == "Lock",
        what="the restore transaction to wait for our lock before committing",
    )
    return restore, before, blocker


def test_worker_killed_during_the_restore_transaction(cluster, scratch_clinic):
    restore, before, blocker = start_blocked_restore(cluster, scratch_clinic)
    assert host_client(f"{SCHEMA}.localhost").get("/admin/login/").status_code == 503
    worker_pid = int(Restore.objects.get(pk=restore.pk).worker.split(":")[1])
    os.kill(worker_pid, signal.SIGKILL)

    wait_for(lambda: not restore_tools(restore.pk), timeout=30, what="pg_restore to be gone with the worker")
    wait_for(lambda: restore_backend(restore.pk) is None, timeout=60, what="the server to drop the session")
    blocker.execute("ROLLBACK")
    blocker.close()
    assert Restore.objects.get(pk=restore.pk).status == JobStatus.RUNNING  # until someone notices

    settled = restores.restore_sweep_stale()
    assert [r.pk for r in settled] == [restore.pk]
    restore.refresh_from_db()
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert "The clinic is unchanged" in restore.error
    assert table_checksums(SCHEMA) == before
    assert SCHEMA + restores.OLD_SCHEMA_SUFFIX not in schemas()
    assert host_client(f"{SCHEMA}.localhost").get("/admin/login/").status_code == 200


def test_database_connection_terminated_during_the_restore(cluster, scratch_clinic):
    restore, before, blocker = start_blocked_restore(cluster, scratch_clinic)
    pid, _ = restore_backend(restore.pk)
    with other_connection() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    wait_for(lambda: Restore.objects.get(pk=restore.pk).status == JobStatus.FAILED, what="the worker to record it")
    blocker.execute("ROLLBACK")
    blocker.close()
    restore.refresh_from_db()
    assert restore.outcome == Restore.Outcome.UNCHANGED and "rolled back" in restore.error
    assert table_checksums(SCHEMA) == before
    assert not restore_tools(restore.pk)


@pytest.mark.parametrize("outcome", [Restore.Outcome.RESTORED, ""])
def test_recovery_reports_what_the_transaction_left(scratch_clinic, outcome):
    """A worker that died after COMMIT leaves outcome=restored (written in the same transaction)."""
    backup = make_backup()
    restore = Restore.objects.create(clinic=scratch_clinic, backup=backup, status=JobStatus.RUNNING, outcome=outcome)
    restores.restore_run(restore_id=restore.pk)  # the queue gave the job out again: never re-run it
    restore.refresh_from_db()
    if outcome:
        assert restore.status == JobStatus.SUCCEEDED and "recovery completed it" in restore.error
    else:
        assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED


def test_worker_killed_during_the_safety_backup(cluster, scratch_clinic):
    """The clinic opens at once, one sweep settles the restore AND its safety backup, nothing is retried."""
    backup = make_backup()
    damage_clinic()
    before = table_checksums(SCHEMA)
    blocker = other_connection()
    blocker.execute("BEGIN")
    blocker.execute(f'LOCK TABLE "{SCHEMA}".dental_patient IN ACCESS EXCLUSIVE MODE')  # the safety backup waits
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, requested_by="admin")
    cluster()

    def safety_backup_waits() -> bool:
        row = Restore.objects.get(pk=restore.pk)
        return row.progress_phase == "safety backup" and row.safety_backup_id is not None and someone_waits_on_a_lock()

    wait_for(safety_backup_waits, what="the restore's safety backup to wait on our lock")
    restore.refresh_from_db()
    safety = restore.safety_backup
    assert safety.status == JobStatus.RUNNING
    os.kill(int(restore.worker.split(":")[1]), signal.SIGKILL)
    wait_for(lambda: not jobs.clinic_lock_is_held(scratch_clinic.pk), timeout=60, what="the lock to go with the worker")
    blocker.execute("ROLLBACK")
    blocker.close()

    # The lock says at once that nobody is restoring the clinic any more.
    assert host_client(f"{SCHEMA}.localhost").get("/admin/login/").status_code == 200

    tasks.sweep_stale_jobs()
    restore.refresh_from_db()
    safety.refresh_from_db()
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert safety.status == JobStatus.FAILED and "Interrupted" in safety.error
    assert backup_sweep_stale(older_than=timedelta(0)) == []
    assert not Backup.objects.filter(retry_of=safety).exists()  # a safety backup is never retried
    assert backup_request(clinic=SCHEMA, enqueue=False).status == JobStatus.PENDING  # not busy
    assert table_checksums(SCHEMA) == before
