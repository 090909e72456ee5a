"""Helpers shared by the backup tests."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import zstandard
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from backups import services
from backups.models import Backup, JobStatus
from backups.postgres import connect_separately
from dental.models import Invoice, Patient


def storage_files() -> set[str]:
    """Every file under the test session's backup folder, relative names, but the clinics' wrapped
    archive keys (``keys/``: one per clinic, written at its first backup; see test_clinic_keys)."""
    root = Path(settings.BACKUPS_LOCAL_DIR)
    if not root.exists():
        return set()
    return {name for p in root.rglob("*") if p.is_file() and not (name := str(p.relative_to(root))).startswith("keys/")}


def stored_path(name: str) -> Path:
    return Path(settings.BACKUPS_LOCAL_DIR) / name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def untar_plaintext(plaintext: bytes) -> dict[str, bytes]:
    """Members of an archive's decrypted plaintext (zstd(tar)), by name, in order."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plaintext)).read()
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            members[member.name] = tar.extractfile(member).read()
    return members


def other_connection() -> psycopg.Connection:
    """A second, committed connection to the test database (another session)."""
    return connect_separately(autocommit=True)


def table_checksums(schema: str, tables: list[str] | None = None) -> dict[str, str]:
    """md5 of every row of every table (or of ``tables``) in a schema, ordered: equal means identical data."""
    with connection.cursor() as cursor:
        if tables is None:
            cursor.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
                [schema],
            )
            tables = [row[0] for row in cursor.fetchall()]
        sums = {}
        for table in tables:
            cursor.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{schema}\".\"{table}\" t"
            )
            sums[table] = cursor.fetchone()[0]
        return sums


def someone_waits_on_a_lock() -> bool:
    """True while a session of the test database waits on a lock (asked outside any transaction:
    pg_stat_activity is a snapshot taken once per transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database())"
        )
        return bool(cursor.fetchone()[0])


def wait_for(condition: Callable[[], object], *, timeout: float = 120, what: str = "condition") -> object:
    """Poll until ``condition()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"Timed out waiting for {what}")


# --- a scratch clinic (the ``scratch_clinic`` fixture) and its backups ------------------------

SCHEMA = "restaura"  # the scratch_clinic fixture's schema


FILLER_ROWS = 300_000  # enough rows that a restore of the scratch clinic has real work to do


def add_filler(rows: int = FILLER_ROWS) -> None:
    """A big table in the scratch clinic (serial: its dump has nextval('restaura.filler_id_seq') and setval)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {SCHEMA}.filler (id serial PRIMARY KEY, note text)")
        cursor.execute(
            f"INSERT INTO {SCHEMA}.filler (note) SELECT 'row ' || g || ' ' || md5(g::text) "
            "FROM generate_series(1, %s) g",
            [rows],
        )


def make_backup(clinic: str = SCHEMA, payload_format: str = "pg") -> Backup:
    backup = services.backup_run(
        backup_id=services.backup_request(clinic=clinic, payload_format=payload_format, enqueue=False).pk
    )
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    return backup


def damage_clinic() -> None:
    """Delete a patient (with what hangs from it) and edit an invoice, as a clumsy user would."""
    with schema_context(SCHEMA):
        patient = Patient.objects.order_by("pk").first()
        Invoice.objects.filter(patient=patient).delete()
        patient.delete()
        invoice = Invoice.objects.order_by("pk").first()
        invoice.total = 1
        invoice.save()
    connection.set_schema_to_public()


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


# --- S3 (moto) --------------------------------------------------------------------------------

BUCKET = "respaldo-test"
PREFIX = "respaldo"


def s3_config(**options) -> dict:
    return {
        "BACKEND": "backups.storage_backends.BackupS3Storage",
        "OPTIONS": {
            "bucket_name": BUCKET,
            "region_name": "us-east-1",
            "location": PREFIX,
            "access_key": "testing",
            "secret_key": "testing",
            **options,
        },
    }


def use_backups_storage(settings, config: dict) -> None:
    # Assign a new dict: that fires setting_changed, which resets `storages`' cache.
    settings.STORAGES = {**settings.STORAGES, "backups": config}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clinic_identity(schema: str) -> str:
    """The live archive key of a clinic (created if it has none yet)."""
    from backups.keys.clinic import writing_identity
    from clinics.models import Clinic

    return writing_identity(Clinic.objects.get(schema_name=schema))
