"""Fixtures for the backup tests that need real worker processes."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from backups.jobs import LOCK_NAMESPACE
from backups.models import Backup, CloneJob, JobStatus, Restore
from backups.tests.helpers import SCHEMA, free_port, other_connection
from clinics.models import Clinic, Domain
from conftest import subprocess_env


@pytest.fixture
def cluster(live_db, tmp_path):
    """Start ``manage.py qcluster`` processes on the test database; stop them afterwards."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> subprocess.Popen:
        log = open(tmp_path / f"qcluster-{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=subprocess_env(Q_WORKERS="1", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = Path(log.name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            # SIGTERM to the cluster's own process only: it stops its workers in order (≈ 2 s). Sent to
            # the whole group, the workers died under it and it waited out the 10 s below every time.
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def stored_keys_put_back():
    """The storage's ``keys/`` folder as it was before the test, put back after it.

    A test's transaction is rolled back, its storage writes are not: a rotation in a rolled-back
    test rewraps the committed demo clinics' keys, whose only copy is their storage object.
    (This process's memory copies of those keys stay valid: the same identities.)
    """
    root = Path(settings.BACKUPS_LOCAL_DIR) / "keys"
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} if root.exists() else {}
    yield
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and path not in before:
            path.unlink()
    for path, data in before.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def media_root(settings, tmp_path):
    """A private MEDIA_ROOT, and a fresh default storage that uses it."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES}  # a new dict: the storages' cache is reset
    return tmp_path / "media"


@pytest.fixture(scope="module")
def moto_server():
    """A moto S3 server over real HTTP for the module; its endpoint URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def running_restore(db):
    """Start (as a row) a restore of clinica in a given phase; its job lock is really held meanwhile."""
    clinic = Clinic.objects.get(schema_name="clinica")
    with other_connection() as worker:  # the restore's worker holds the clinic's job lock
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, clinic.pk])

        def start(phase: str = "restoring", payload_format: str = "pg") -> Restore:
            backup = Backup.objects.create(
                clinic=clinic,
                status=JobStatus.SUCCEEDED,
                storage_name="x",
                sha256="0" * 64,
                payload_format=payload_format,
            )
            return Restore.objects.create(
                clinic=clinic,
                backup=backup,
                status=JobStatus.RUNNING,
                started_at=timezone.now(),
                progress_phase=phase,
            )

        yield start


@pytest.fixture
def created(scratch_clinic):
    """Removes, after the test, the clones and every clinic they made (before the backups go)."""
    yield
    connection.set_schema_to_public()
    made = list(CloneJob.objects.exclude(clinic=None).values_list("clinic_id", "target_schema"))
    CloneJob.objects.all().delete()
    for clinic_id, schema in made:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        Domain.objects.filter(tenant_id=clinic_id).delete()
        Clinic.objects.filter(pk=clinic_id).delete()


@pytest.fixture
def jefa(scratch_clinic):
    """The scratch clinic, with a superuser ``jefa`` (password ``jefa-pass-1``)."""
    with schema_context(SCHEMA):
        User.objects.create_superuser("jefa", password="jefa-pass-1")
    connection.set_schema_to_public()
    return scratch_clinic
