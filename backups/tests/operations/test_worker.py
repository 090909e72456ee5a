"""Backups run by a real django-q2 cluster (``manage.py qcluster``), crashes included.

The broker is the one the settings choose: the database (ORM) by default, Redis when
``REDIS_URL`` is set (as CI sets it on its second run).
"""

import os
import signal
from datetime import timedelta

import psutil
import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.jobs import clinic_lock_is_held
from backups.models import Backup, JobStatus
from backups.services.backup import backup_request, backup_sweep_stale
from backups.tests.helpers import other_connection, sha256_of, storage_files, stored_path, wait_for
from clinics.demo import ensure_clinic, ensure_records
from clinics.models import Clinic


def status_of(pk: int) -> str:
    return Backup.objects.get(pk=pk).status


def test_a_worker_runs_a_requested_backup(cluster):
    before = storage_files()
    backup = backup_request(clinic="clinica", requested_by="admin")
    assert backup.status == JobStatus.PENDING
    cluster()
    wait_for(lambda: status_of(backup.pk) in {JobStatus.SUCCEEDED, JobStatus.FAILED}, what="the backup to end")
    backup.refresh_from_db()
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    assert backup.worker and backup.worker.split(":")[1] != str(os.getpid())
    assert storage_files() - before == {backup.storage_name}
    assert sha256_of(stored_path(backup.storage_name)) == backup.sha256


@pytest.fixture(scope="module")
def big_clinic(django_db_setup, django_db_blocker):
    """A committed clinic big enough that its dump takes a while at zstd's slowest level (made once
    for the module's tests: its 20,000 patients take ≈ 15 s)."""
    with django_db_blocker.unblock():
        clinic = ensure_clinic("grande", "Clínica Grande")
        with schema_context("grande"):
            ensure_records(patients=20000, seed="grande")
        connection.set_schema_to_public()
    yield clinic
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        Backup.objects.filter(clinic=clinic).delete()
        clinic.delete(force_drop=True)


def dump_children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "pg_dump" and any('"grande"' in part for part in p.info["cmdline"] or [])
    ]


def dump_sessions() -> list[int]:
    """The server sessions reading a dump for the SQL payload (``sqldump``'s own connection)."""
    with other_connection() as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'respaldo-dump'").fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.parametrize("payload", ["sql", "custom"])
def test_a_worker_killed_mid_dump_leaves_a_failed_job_and_a_clean_retry(cluster, big_clinic, payload):
    before = storage_files()
    backup = backup_request(clinic="grande", requested_by="admin")
    # slow, and inline: output flows as it goes
    cluster(BACKUPS_ZSTD_LEVEL="19", BACKUPS_ZSTD_THREADS="0", BACKUPS_PG_PAYLOAD=payload)
    wait_for(
        lambda: Backup.objects.filter(pk=backup.pk, progress_phase="dumping", progress_bytes__gt=0).exists(),
        what="the dump to be under way",
    )
    dumping = dump_children if payload == "custom" else dump_sessions
    assert dumping(), "the dump (pg_dump, or the worker's dump session) should be running"
    worker_pid = int(Backup.objects.get(pk=backup.pk).worker.split(":")[1])
    os.kill(worker_pid, signal.SIGKILL)

    wait_for(lambda: not clinic_lock_is_held(big_clinic.pk), what="PostgreSQL to release the dead worker's lock")
    wait_for(lambda: not dumping(), timeout=30, what="the orphaned dump to end with its worker")
    assert status_of(backup.pk) == JobStatus.RUNNING  # nobody has noticed yet: that is the sweeper's job

    retries = backup_sweep_stale(older_than=timedelta(0))
    assert [r.retry_of_id for r in retries] == [backup.pk]
    failed = Backup.objects.get(pk=backup.pk)
    assert failed.status == JobStatus.FAILED and failed.error.startswith("Interrupted")
    assert failed.storage_name == ""

    retry = retries[0]
    wait_for(
        lambda: status_of(retry.pk) in {JobStatus.SUCCEEDED, JobStatus.FAILED}, timeout=300, what="the retry to end"
    )
    retry.refresh_from_db()
    assert retry.status == JobStatus.SUCCEEDED, retry.error
    assert retry.attempt == 2 and retry.manifest["tables"]["dental_patient"] == 20000
    assert storage_files() - before == {retry.storage_name}  # nothing left of the killed attempt


def test_tasks_start_in_the_public_schema(live_db):
    from backups.jobs import reset_schema

    connection.set_tenant(Clinic.objects.get(schema_name="clinica"))  # as a task that forgot to switch back
    reset_schema(sender="django_q")
    assert connection.schema_name == "public"
