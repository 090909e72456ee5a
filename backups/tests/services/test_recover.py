"""The platform rebuilt from the bucket: ``import_backups`` (backups/services/recover.py).

The unit tests write archives straight into a private local storage; the disaster test
backs two clinics up to S3 (moto over HTTP), then rebuilds the platform in a brand-new,
empty database from nothing but the bucket and the key, and compares every table.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django_tenants.utils import schema_context
from psycopg import sql

from backups import archive
from backups.keys import archive_identities
from backups.manifest import manifest_summary
from backups.models import Backup, JobStatus, Restore
from backups.services import recover
from backups.tests.helpers import make_backup, s3_config, table_checksums, use_backups_storage
from clinics.demo import ensure_clinic, ensure_clinic_groups, ensure_records
from clinics.models import Clinic
from conftest import database_url, manage

# --- unit tests: a private local storage ------------------------------------------------------


@pytest.fixture
def bucket(settings, tmp_path) -> Path:
    """An empty local backup storage of this test only (the session's holds other tests' files)."""
    root = tmp_path / "bucket"
    use_backups_storage(
        settings,
        {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    )
    return root


def manifest_of(clinic_id: int, schema: str, *, created_at: str, kind: str = "scheduled", fmt: str = "pg") -> dict:
    return {
        "format_version": 1,
        "clinic": {"id": clinic_id, "schema": schema, "name": f"Clinic {schema}"},
        "created_at": created_at,
        "kind": kind,
        "payload_format": fmt,
        "tables": {"dental_patient": 3},
        "migrations": {},
        "postgresql": {"server": "16", "dump_tool": "16"},
    }


def put(root: Path, name: str, data: bytes) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def put_archive(root: Path, name: str, manifest: dict, identities: list[str] | None = None) -> str:
    out = io.BytesIO()
    archive.write_archive(
        io.BytesIO(b"PGDMP payload"), out, manifest=manifest, identities=identities or archive_identities()
    )
    return put(root, name, out.getvalue())


def outcomes(report: recover.ImportReport) -> dict[str, str]:
    return {item.name: item.outcome for item in report.objects}


@pytest.mark.django_db
def test_import_catalogs_what_our_keys_open_and_lists_the_rest(bucket):
    clinica = Clinic.objects.get(schema_name="clinica")
    bienestar = Clinic.objects.get(schema_name="bienestar")
    known = put_archive(
        bucket, "clinics/clinica/2026/10/20261001T020000000000Z-scheduled.respaldo",
        manifest_of(clinica.pk, "clinica", created_at="2026-10-01T02:00:00+00:00"),
    )  # fmt: skip
    Backup.objects.create(
        clinic=clinica, status=JobStatus.SUCCEEDED, storage_name=known, requested_at=datetime(2026, 10, 1, tzinfo=UTC)
    )
    newer_manifest = manifest_of(clinica.pk, "clinica", created_at="2026-11-01T02:00:00.123456+00:00")
    newer = put_archive(bucket, "clinics/clinica/2026/11/20261101T020000123456Z-scheduled.respaldo", newer_manifest)
    json_one = put_archive(
        bucket, "clinics/bienestar/2026/11/20261102T100000000000Z-manual.respaldo",
        manifest_of(bienestar.pk, "bienestar", created_at="2026-11-02T10:00:00+00:00", kind="manual", fmt="json"),
    )  # fmt: skip
    stamp = "2026-11-03T00:00:00+00:00"
    foreign = put_archive(
        bucket, "clinics/clinica/2026/11/foreign.respaldo", manifest_of(clinica.pk, "clinica", created_at=stamp),
        identities=[archive.generate_identity()],
    )  # fmt: skip
    junk = put(bucket, "clinics/clinica/2026/11/junk.respaldo", b"not an archive at all")
    put(bucket, "clinics/clinica/notes.txt", b"not a .respaldo object: never looked at")
    same_schema = put_archive(bucket, "a/1.respaldo", manifest_of(999_001, "clinica", created_at=stamp))
    same_id = put_archive(bucket, "a/2.respaldo", manifest_of(clinica.pk, "otra", created_at=stamp))
    missing = put_archive(bucket, "a/3.respaldo", manifest_of(999_002, "perdida", created_at=stamp))
    rows_before = Backup.objects.count()

    report = recover.import_backups(create_clinics=False)

    assert outcomes(report) == {
        known: recover.KNOWN,
        newer: recover.IMPORTED,
        json_one: recover.IMPORTED,
        foreign: recover.UNREADABLE,
        junk: recover.UNREADABLE,
        same_schema: recover.CONFLICT,
        same_id: recover.CONFLICT,
        missing: recover.CLINIC_MISSING,
    }
    reasons = {item.name: item.reason.code for item in report.objects if item.reason}
    assert reasons == {foreign: "wrong_key", junk: "not_recognized"}
    assert Backup.objects.count() == rows_before + 2
    assert not Clinic.objects.filter(schema_name__in=["perdida", "otra"]).exists() and report.created_clinics == []

    row = Backup.objects.get(storage_name=newer)
    data = (bucket / newer).read_bytes()
    created = datetime(2026, 11, 1, 2, 0, 0, 123456, tzinfo=UTC)
    assert (row.clinic, row.kind, row.payload_format, row.status) == (clinica, "scheduled", "pg", "succeeded")
    assert (row.size, row.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert row.requested_at == row.started_at == row.succeeded_at == created
    assert row.requested_by == "import" and row.manifest == manifest_summary(newer_manifest)
    assert Backup.objects.get(storage_name=json_one).payload_format == "json"
    assert recover.newest_backup(clinica) == row

    again = recover.import_backups(create_clinics=False)
    assert again.count(recover.IMPORTED) == 0 and again.count(recover.KNOWN) == 3
    assert Backup.objects.count() == rows_before + 2


@pytest.mark.django_db
def test_the_command_prints_a_line_per_object_and_a_summary(bucket):
    clinica = Clinic.objects.get(schema_name="clinica")
    name = put_archive(
        bucket, "clinics/clinica/x.respaldo", manifest_of(clinica.pk, "clinica", created_at="2026-11-01T00:00:00+00:00")
    )
    put(bucket, "clinics/clinica/y.respaldo", b"junk")
    out = io.StringIO()

    call_command("import_backups", "--no-create-clinics", stdout=out)

    lines = out.getvalue().splitlines()
    backup = Backup.objects.get(storage_name=name)
    assert lines[0] == f"imported clinics/clinica/x.respaldo -> backup #{backup.pk} of clinica"
    assert lines[1].startswith("unreadable clinics/clinica/y.respaldo: This file is not a backup made by Respaldo")
    assert lines[2] == (
        "2 stored objects: 1 imported, 0 known, 1 unreadable, 0 conflict, 0 clinic missing; 0 clinics created."
    )


@pytest.mark.django_db
def test_nothing_readable_fails_and_an_empty_storage_does_not(bucket):
    out = io.StringIO()
    call_command("import_backups", stdout=out)
    assert out.getvalue().splitlines() == [
        "0 stored objects: 0 imported, 0 known, 0 unreadable, 0 conflict, 0 clinic missing; 0 clinics created."
    ]
    put_archive(
        bucket, "clinics/clinica/x.respaldo",
        manifest_of(1, "clinica", created_at="2026-11-01T00:00:00+00:00"), identities=[archive.generate_identity()],
    )  # fmt: skip
    with pytest.raises(CommandError, match="None of the 1 stored objects could be read"):
        call_command("import_backups", stdout=io.StringIO())
    assert not Backup.objects.filter(storage_name="clinics/clinica/x.respaldo").exists()


@pytest.mark.django_db
def test_the_newest_backup_is_not_a_safety_backup_unless_there_is_nothing_else():
    clinica = Clinic.objects.get(schema_name="clinica")
    Backup.objects.filter(clinic=clinica).delete()

    def row(kind: str, day: int) -> Backup:
        when = datetime(2026, 11, day, tzinfo=UTC)
        return Backup.objects.create(
            clinic=clinica, kind=kind, status=JobStatus.SUCCEEDED, storage_name=f"{kind}{day}", requested_at=when
        )

    safety = row(Backup.Kind.PRE_RESTORE, 3)
    assert recover.newest_backup(clinica) == safety
    scheduled = row(Backup.Kind.SCHEDULED, 2)
    assert recover.newest_backup(clinica) == scheduled


# --- the disaster: only the bucket and the key are left ----------------------------------------

DISASTER_CLINICS = [("siniestro", "Clínica Siniestro"), ("rescate", "Clínica Rescate")]


@pytest.fixture
def disaster_clinics(live_db):
    """Two committed clinics of this test with a few records, dropped after it."""
    clinics = []
    for schema, name in DISASTER_CLINICS:
        clinics.append(ensure_clinic(schema, name))
        with schema_context(schema):
            ensure_clinic_groups()
            ensure_records(patients=6, seed=schema)
    connection.set_schema_to_public()
    yield clinics
    connection.set_schema_to_public()
    for clinic in clinics:
        Restore.objects.filter(clinic=clinic).delete()
        Backup.objects.filter(clinic=clinic).delete()
        clinic.delete(force_drop=True)


def server_connection(dbname: str) -> psycopg.Connection:
    """An autocommit connection to another database of the test database's server (socket or TCP)."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(key, None)
    params["dbname"] = dbname
    return psycopg.connect(**params, autocommit=True)


def schema_checksums(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    """``helpers.table_checksums`` (the same query), on another database."""
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
        [schema],
    ).fetchall()
    sums = {}
    for (table,) in tables:
        query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {}.{} t").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        sums[table] = conn.execute(query).fetchone()[0]
    return sums


@pytest.fixture
def empty_database():
    """A brand-new database on the test database's server; yields (name, DATABASE_URL), dropped after."""
    name = f"respaldo_disaster_{secrets.token_hex(4)}"
    with server_connection("postgres") as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield name, urlsplit(database_url())._replace(path=f"/{name}").geturl()
    finally:
        with server_connection("postgres") as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def s3_environment(endpoint: str, bucket_name: str) -> dict[str, str]:
    return {
        "BACKUPS_STORAGE": "s3",
        "BACKUPS_S3_BUCKET": bucket_name,
        "BACKUPS_S3_ENDPOINT_URL": endpoint,
        "BACKUPS_S3_REGION": "us-east-1",
        "BACKUPS_S3_PREFIX": "prod",
        "BACKUPS_S3_ACCESS_KEY_ID": "testing",
        "BACKUPS_S3_SECRET_ACCESS_KEY": "testing",
    }


def test_the_platform_is_rebuilt_from_the_bucket_and_the_key(disaster_clinics, moto_server, empty_database, settings):
    began = time.monotonic()
    bucket_name = f"respaldo-disaster-{secrets.token_hex(4)}"
    boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket=bucket_name)
    use_backups_storage(settings, s3_config(bucket_name=bucket_name, endpoint_url=moto_server, location="prod"))
    siniestro, rescate = disaster_clinics
    older = make_backup("siniestro")
    with schema_context("siniestro"):
        ensure_records(patients=10, seed="siniestro")  # after the older backup: only the newest has them
    connection.set_schema_to_public()
    made = [older, make_backup("siniestro"), make_backup("rescate")]
    expected = {schema: table_checksums(schema) for schema, _ in DISASTER_CLINICS}
    name, url = empty_database
    env = {"DATABASE_URL": url, **s3_environment(moto_server, bucket_name)}

    migrated = manage("migrate_schemas", "--shared", **env)
    assert migrated.returncode == 0, migrated.stderr
    rebuilt = manage("import_backups", "--restore", **env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    again = manage("import_backups", **env)
    assert again.returncode == 0, again.stdout + again.stderr

    out = rebuilt.stdout
    assert (
        "3 stored objects: 3 imported, 0 known, 0 unreadable, 0 conflict, 0 clinic missing; 2 clinics created." in out
    )
    assert out.count("\nrestored siniestro from backup #") + out.count("\nrestored rescate from backup #") == 2, out
    assert "0 imported, 5 known" in again.stdout, again.stdout  # the three, and the two restores' safety backups
    with server_connection(name) as conn:
        for schema, _ in DISASTER_CLINICS:
            assert schema_checksums(conn, schema) == expected[schema], schema
        clinics = conn.execute("SELECT id, schema_name, name FROM clinics_clinic ORDER BY id").fetchall()
        assert clinics == [(c.pk, c.schema_name, c.name) for c in (siniestro, rescate)]
        domains = {row[0] for row in conn.execute("SELECT domain FROM clinics_domain").fetchall()}
        assert domains == {"siniestro.localhost", "rescate.localhost"}
        imported = conn.execute("SELECT sha256 FROM backups_backup WHERE requested_by = 'import'").fetchall()
        assert sorted(row[0] for row in imported) == sorted(b.sha256 for b in made)
        restored_from = conn.execute(
            "SELECT b.sha256 FROM backups_restore r JOIN backups_backup b ON b.id = r.backup_id WHERE r.status = %s",
            [JobStatus.SUCCEEDED],
        ).fetchall()
        assert sorted(row[0] for row in restored_from) == sorted(b.sha256 for b in made[1:])  # the newest of each
        safety = conn.execute(
            "SELECT count(*) FROM backups_backup WHERE kind = 'pre_restore' AND status = %s", [JobStatus.SUCCEEDED]
        )
        assert safety.fetchone()[0] == 2
        next_id = conn.execute("SELECT nextval(pg_get_serial_sequence('clinics_clinic', 'id'))").fetchone()[0]
        assert next_id > max(siniestro.pk, rescate.pk)
    assert time.monotonic() - began < 90
