"""The night over several worker clusters sharing one broker, one of them killed half-way.

Two ``manage.py qcluster`` processes take the night of 200 clinics (schemas made in SQL, with
copies of a few of a clinic's tables) from the broker the settings choose: the database (ORM) by default,
Redis when ``REDIS_URL`` is set (CI's second run). One is killed with SIGKILL, workers and
all, while it is backing up. This process plays the dispatcher and the sweeper (their
schedules run every minute; here every half second): every clinic ends with exactly one
successful backup of the night, and never more than ``BACKUPS_NIGHT_CONCURRENCY`` were
handed out or running at once.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import psutil
import pytest
from django.db.models import Count

from backups import storage
from backups.keys.clinic import stored_key_name
from backups.models import Backup, BackupPolicy, ClinicKey, JobStatus
from backups.operations import schedule
from backups.services.backup import backup_rehand_lost, backup_sweep_stale
from backups.tests.clinic_copies import drop_copies, make_copies
from backups.tests.helpers import wait_for
from clinics.models import Clinic

CLINICS = 200
CONCURRENCY = 2


@pytest.fixture
def night(live_db, settings):
    """200 clinics (copies of three of clinica's tables), each due at 00:00 UTC; every other clinic's
    daily backup off meanwhile."""
    names = [f"noche{n:03d}" for n in range(CLINICS)]
    # what a backup reads (the migrations) and some of the clinic's records: many clinics, not whole ones
    make_copies("clinica", names, name_prefix="Noche", only=["django_migrations", "dental_dentist", "dental_patient"])
    others = list(BackupPolicy.objects.filter(enabled=True).values_list("pk", flat=True))
    BackupPolicy.objects.filter(pk__in=others).update(enabled=False)
    Clinic.objects.filter(schema_name__in=names).update(time_zone="UTC")
    BackupPolicy.objects.bulk_create(
        [BackupPolicy(clinic=c, run_at=clock(0, 0)) for c in Clinic.objects.filter(schema_name__in=names)]
    )
    settings.BACKUPS_NIGHT_CONCURRENCY = CONCURRENCY
    yield names
    BackupPolicy.objects.filter(clinic__schema_name__in=names).update(enabled=False)
    BackupPolicy.objects.filter(pk__in=others).update(enabled=True)
    backups = Backup.objects.filter(clinic__schema_name__in=names)
    for name in backups.exclude(storage_name="").values_list("storage_name", flat=True):
        storage.delete_stored(name)
    for attempt in sorted(set(backups.values_list("attempt", flat=True)), reverse=True):
        backups.filter(attempt=attempt).delete()  # retries first: nothing points at what is deleted
    keys = ClinicKey.objects.filter(clinic__schema_name__in=names)
    for key in keys:
        storage.delete_stored(stored_key_name(key))
    keys.delete()
    drop_copies(names)


def cluster_pids(proc) -> set[int]:
    """The cluster's process and its workers (their pids are what a backup's ``worker`` names)."""
    return {proc.pid} | {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}


def ran_by(backup: Backup) -> int:
    return int(backup.worker.split(":")[1])


def test_two_clusters_back_up_every_clinic_once_while_one_of_them_is_killed(night, cluster):
    # ``night`` first: torn down after the clusters have stopped (no worker hands out a backup meanwhile)
    env = {"BACKUPS_NIGHT_CONCURRENCY": str(CONCURRENCY)}  # one worker each (the fixture's)
    first, second = cluster(**env), cluster(**env)
    for proc in (first, second):  # up, their worker forked (a backup's ``worker`` names the worker's pid)
        wait_for(lambda proc=proc: len(psutil.Process(proc.pid).children(recursive=True)) >= 3, what="a cluster")
    pids = {"first": cluster_pids(first), "second": cluster_pids(second)}
    night_of = datetime.now(UTC).date()
    tonight = Backup.objects.filter(clinic__schema_name__in=night, scheduled_for=night_of)
    most_at_once, killed_at, deadline = 0, None, time.monotonic() + 600

    schedule.dispatch()  # the minute's dispatcher starts the night; each finished backup hands out the next
    while time.monotonic() < deadline:
        most_at_once = max(most_at_once, tonight.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).count())
        done = tonight.filter(status=JobStatus.SUCCEEDED).count()
        if killed_at is None and done >= CLINICS // 4 and tonight.filter(status=JobStatus.RUNNING).exists():
            os.killpg(first.pid, signal.SIGKILL)  # the cluster, its workers and their dumps
            first.wait()
            killed_at = done
        if done == CLINICS:
            break
        # the sweeper's and the dispatcher's schedules, faster
        backup_sweep_stale(older_than=timedelta(0))
        backup_rehand_lost(older_than=timedelta(seconds=5))
        schedule.dispatch()
        time.sleep(0.5)

    assert killed_at is not None, "the first cluster was never killed while backing up"
    per_clinic = dict(
        tonight.filter(status=JobStatus.SUCCEEDED).values_list("clinic__schema_name").annotate(n=Count("id"))
    )
    assert per_clinic == {name: 1 for name in night}  # every clinic once, none twice
    assert not tonight.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).exists()
    failed = list(tonight.filter(status=JobStatus.FAILED))
    assert all(b.error.startswith("Interrupted") for b in failed), [b.error for b in failed]
    assert len(failed) <= CONCURRENCY  # only what the killed cluster was running
    assert most_at_once <= CONCURRENCY
    succeeded = list(tonight.filter(status=JobStatus.SUCCEEDED))
    assert any(ran_by(b) in pids["first"] for b in succeeded)  # both clusters took part
    assert any(ran_by(b) in pids["second"] for b in succeeded)
    assert all(ran_by(b) in pids["second"] for b in tonight.filter(status=JobStatus.SUCCEEDED, attempt=2))
