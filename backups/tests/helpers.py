"""Helpers shared by the backup tests of more than one folder: the stored files, a second
connection, the scratch clinic and its backups, S3 (moto), the consoles' and the API's test
clients, the live clinic worked on during a restore, SMTP, uploads, and one patient's rows."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import zstandard
from aiosmtpd.controller import Controller
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from backups.models import Backup, JobStatus
from backups.postgres import connect_separately
from backups.services.api_tokens import token_create
from backups.services.backup import backup_request, backup_run
from backups.services.selective_rows import Rows, read_patient
from clinics.models import Clinic
from conftest import host_client
from dental.models import Appointment, Invoice, Patient


def storage_files() -> set[str]:
    """Every file under the test session's backup folder, relative names, but the clinics' wrapped
    archive keys (``keys/``: one per clinic, written at its first backup; see test_clinic_keys)."""
    root = Path(settings.BACKUPS_LOCAL_DIR)
    if not root.exists():
        return set()
    return {name for p in root.rglob("*") if p.is_file() and not (name := str(p.relative_to(root))).startswith("keys/")}


def stored_path(name: str) -> Path:
    """The path of a stored backup object under the test session's backup folder."""
    return Path(settings.BACKUPS_LOCAL_DIR) / name


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
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
    """A succeeded backup of ``clinic``, run here (no worker)."""
    backup = backup_run(backup_id=backup_request(clinic=clinic, payload_format=payload_format, enqueue=False).pk)
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
    """Every schema of the test database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


# --- S3 (moto) --------------------------------------------------------------------------------

BUCKET = "respaldo-test"
PREFIX = "respaldo"


def s3_config(**options) -> dict:
    """The ``backups`` storage on the moto bucket, with ``options``."""
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
    """Make ``config`` the ``backups`` storage for this test."""
    settings.STORAGES = {**settings.STORAGES, "backups": config}


def free_port() -> int:
    """A TCP port nothing listens on (yet) on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clinic_identity(schema: str) -> str:
    """The live archive key of a clinic (created if it has none yet)."""
    from backups.keys.clinic import writing_identity
    from clinics.models import Clinic

    return writing_identity(Clinic.objects.get(schema_name=schema))


LIST = "/admin/backups/backup/"


def logged_in(username: str, password: str, *, host: str = "clinica.localhost", language: str = "en") -> Client:
    """A test client logged in to the clinic console of ``host``."""
    client = Client(HTTP_HOST=host, HTTP_ACCEPT_LANGUAGE=language)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    assert response.status_code == 302, f"{username} could not log in at {host}"
    return client


def fake_backup(schema: str = "clinica", **fields) -> Backup:
    """A catalog row (no stored file): enough for the pages that only read the catalog."""
    clinic = Clinic.objects.get(schema_name=schema)
    values = {
        "status": JobStatus.SUCCEEDED,
        "storage_name": f"clinics/{schema}/fake.respaldo",
        "sha256": "0" * 64,
        "size": 12345,
        "manifest": {"tables": {"dental_patient": 8, "dental_invoice": 0}},
        **fields,
    }
    return Backup.objects.create(clinic=clinic, **values)


def clinica_tables(**changes: int) -> dict[str, int]:
    """clinica's row counts now, with ``changes``: a manifest as a backup of it would hold."""
    from backups import postgres

    return {**postgres.table_counts("clinica"), **changes}


def platform_admin():
    """A test client logged in to the platform's admin (``localhost``) as the superadmin."""
    client = host_client("localhost")
    assert client.post("/admin/login/", {"username": "superadmin", "password": "superadmin"}).status_code == 302
    return client


API = "/api/v1"


def make_token(schema: str = "clinica", username: str = "admin", **options) -> str:
    """The secret of a new API token of ``username`` in ``schema``."""
    clinic = Clinic.objects.get(schema_name=schema)
    with schema_context(schema):
        user = User.objects.get(username=username)
    return token_create(clinic=clinic, user=user, name="test", **options).secret


def api(token: str | None, host: str = "clinica.localhost", language: str = "en") -> Client:
    """A test client for the JSON API of ``host``, with ``token`` as its bearer token."""
    headers = {"HTTP_HOST": host, "HTTP_ACCEPT_LANGUAGE": language}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return Client(**headers)


def error_of(response) -> tuple[int, str]:
    """(HTTP status, error code) of a JSON API error answer."""
    return response.status_code, response.json()["error"]["code"]


NEW = "clinica_formacion"


NEW_DOMAIN = "clinica-formacion.localhost"


class Gate:
    """A payload reader that stops once ``pause_at`` bytes were read, until released."""

    def __init__(self, payload, pause_at: int) -> None:
        self.payload, self.pause_at, self.done = payload, pause_at, 0
        self.paused, self.release = threading.Event(), threading.Event()

    @property
    def manifest(self) -> dict:
        return self.payload.manifest

    def read(self, size: int = -1) -> bytes:
        if self.done >= self.pause_at and not self.release.is_set():
            self.paused.set()
            assert self.release.wait(120), "the test never released the payload"
        data = self.payload.read(min(size, 1 << 16) if size and size > 0 else 1 << 16)
        self.done += len(data)
        return data


def work_on_the_live_clinic(conn: psycopg.Connection, round_: int) -> None:
    """Reads, inserts (with foreign keys checked), updates, deletes, locks rows, DDL, schema rename."""
    assert conn.execute("SELECT count(*) FROM dental_patient").fetchone()[0] > 0
    patient = conn.execute(
        "INSERT INTO dental_patient (first_name, last_name, national_id, phone, email, allergies, notes, xray, "
        "created_at) VALUES ('Otra', 'Sesión', %s, '', '', '[]', '', '', now()) RETURNING id",
        [f"LIVE-{round_}"],
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO dental_appointment (patient_id, dentist_id, starts_at, duration, status, reason) "
        "SELECT %s, min(id), now(), '30 minutes', 'scheduled', 'during a drill' FROM dental_dentist",
        [patient],
    )
    conn.execute("UPDATE dental_invoice SET total = total + 1 WHERE id = (SELECT min(id) FROM dental_invoice)")
    conn.execute("DELETE FROM dental_payment WHERE id = (SELECT max(id) FROM dental_payment)")
    if conn.execute("SELECT to_regclass('filler')").fetchone()[0]:
        conn.execute("UPDATE filler SET note = %s WHERE id = %s", [f"changed live {round_}", round_])
        conn.execute("INSERT INTO filler (note) VALUES ('inserted live')")
    with conn.transaction():
        conn.execute("SELECT id FROM dental_patient ORDER BY id LIMIT 3 FOR UPDATE").fetchall()
    with conn.transaction():  # a migration creating a table in the clinic
        conn.execute("CREATE TABLE probe_during_restore (id integer)")
        conn.execute("DROP TABLE probe_during_restore")
    with conn.transaction():  # nothing holds the live schema itself either (a second restore could start)
        conn.execute(f"ALTER SCHEMA {SCHEMA} RENAME TO {SCHEMA}__probe")
        conn.execute(f"ALTER SCHEMA {SCHEMA}__probe RENAME TO {SCHEMA}")


def locks_on_live(observer: psycopg.Connection, pid: int) -> list[tuple]:
    """The locks session ``pid`` holds on the scratch clinic's tables and schema: [(mode, relation)]."""
    return observer.execute(
        "SELECT l.mode, coalesce(c.relname, l.locktype) FROM pg_locks l "
        "LEFT JOIN pg_class c ON l.locktype = 'relation' AND c.oid = l.relation "
        "WHERE l.pid = %s AND (c.relnamespace = %s::regnamespace "
        "OR (l.locktype = 'object' AND l.objid = %s::regnamespace))",
        [pid, SCHEMA, SCHEMA],
    ).fetchall()


def corrupt(backup: Backup) -> None:
    """Flip one byte in the middle of the stored object."""
    path = stored_path(backup.storage_name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class Inbox:
    """aiosmtpd handler keeping what it receives."""

    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def smtp_server(port: int) -> tuple[Controller, Inbox]:
    """A real SMTP server on 127.0.0.1:``port``, started, and the inbox it fills."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, inbox


def temp_files_open(folder: Path) -> list[tuple[str, int]]:
    """(path, mode) of the files this process has open inside ``folder`` (unnamed ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder) + "/"):
                found.append((target, stat.S_IMODE(os.stat(f"/proc/self/fd/{fd}").st_mode)))
        except OSError:
            continue
    return found


def dumpdata(*labels: str, schema: str = "clinica", **options) -> str:
    """Django's ``dumpdata`` of ``labels`` in ``schema``, as text."""
    out = io.StringIO()
    with schema_context(schema):
        call_command("dumpdata", *labels, stdout=out, **options)
    return out.getvalue()


def change_the_clinic_since(backup_pk: int) -> dict[str, int]:
    """Delete one appointment, add another, edit a patient: the net count of appointments stays the same."""
    with schema_context(SCHEMA):
        gone = Appointment.objects.filter(treatments__isnull=True).order_by("pk").first()  # none SET_NULL
        kept = Appointment.objects.exclude(pk=gone.pk).order_by("pk").first()
        gone.delete()
        added = Appointment.objects.create(
            patient=kept.patient,
            dentist=kept.dentist,
            starts_at=timezone.now() + timedelta(days=3),
            duration=timedelta(minutes=30),
            reason="Nueva",
        )
        edited = Patient.objects.order_by("-pk").first()
        edited.phone = "+34 600 000 001"
        edited.save()
        ids = {"gone": gone.pk, "added": added.pk, "edited": edited.pk, "gone_patient": gone.patient.national_id}
        ids["edited_patient"] = edited.national_id
    connection.set_schema_to_public()
    return ids


def live_rows(national_id: str, schema: str = SCHEMA) -> Rows:
    """The patient's rows in the live clinic now, in the form the service compares."""
    with transaction.atomic(), connection.cursor() as cursor:
        return read_patient(cursor, schema, national_id)


def patient_with_everything() -> Patient:
    """A patient of the scratch clinic with appointments, treatment materials, invoices and payments."""
    with schema_context(SCHEMA):
        found = (
            Patient.objects.filter(treatments__materials__isnull=False, invoices__payments__isnull=False)
            .exclude(consent_signature=None)
            .order_by("pk")
            .first()
        )
    connection.set_schema_to_public()
    assert found is not None
    return found


def delete_patient(patient: Patient) -> None:
    """A receptionist deletes the patient (invoices first: they protect the patient)."""
    with schema_context(SCHEMA):
        Invoice.objects.filter(patient_id=patient.pk).delete()
        Patient.objects.filter(pk=patient.pk).delete()
    connection.set_schema_to_public()


def edit_patient(pk: int, **fields) -> None:
    """Update fields of a patient of the scratch clinic."""
    with schema_context(SCHEMA):
        Patient.objects.filter(pk=pk).update(**fields)
    connection.set_schema_to_public()


def another_patient(patient: Patient) -> Patient:
    """A patient of the scratch clinic other than ``patient``."""
    with schema_context(SCHEMA):
        other = Patient.objects.exclude(pk=patient.pk).order_by("-pk").first()
    connection.set_schema_to_public()
    return other
