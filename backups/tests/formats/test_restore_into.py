"""Restoring a backup into a schema of its own, while the live clinic keeps working.

Real PostgreSQL, real pg_dump/pg_restore, real archives. The concurrency tests hold the
restore in the middle of its load (a gate on the payload stream, inside a COPY of a 300,000
row table for pg) while another connection reads and writes the live clinic with a short
lock_timeout: any wait on a lock fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from backups import archive, storage
from backups.formats.base import RestoreIntoError
from backups.formats.json import into as json_into
from backups.formats.json.payload import JsonPayloadError
from backups.formats.pg import into as restore_into
from backups.formats.pg import plain_script
from backups.formats.pg import rewrite as pg_rewrite
from backups.formats.pg.rewrite import rewrite_schema
from backups.keys.clinic import identities_held
from backups.models import Backup, JobStatus
from backups.postgres import connect_separately, find_pg_tools
from backups.services.backup import backup_request, backup_run
from backups.tests.helpers import (
    Gate,
    add_filler,
    locks_on_live,
    other_connection,
    table_checksums,
    wait_for,
    work_on_the_live_clinic,
)
from dental.models import Invoice, Patient

SCHEMA = "restaura"  # the scratch_clinic fixture's clinic
SCRATCH = f"{SCHEMA}__scratch_test"
STAGING = SCHEMA + restore_into.STAGING_SUFFIX


# --- Helpers ----------------------------------------------------------------------------


def make_backup(payload_format: str) -> Backup:
    backup = backup_run(backup_id=backup_request(clinic=SCHEMA, payload_format=payload_format, enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    return backup


@contextlib.contextmanager
def opened_payload(backup: Backup) -> Iterator[archive.ArchiveReader]:
    with (
        storage.open_stored(backup.storage_name) as stream,
        archive.open_archive(stream, identities=identities_held()) as payload,
    ):
        yield payload


def damage_clinic() -> None:
    """Change the live clinic after the backup, so a restored copy equal to the backup cannot be the live data."""
    with schema_context(SCHEMA):
        patient = Patient.objects.order_by("pk").first()
        Invoice.objects.filter(patient=patient).delete()
        patient.delete()
        Invoice.objects.filter(pk=Invoice.objects.order_by("pk").first().pk).update(total=1)
    connection.set_schema_to_public()


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


def drop_schema(name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def content_checksums(schema: str, prefix: str = "dental_") -> dict[str, str]:
    """Like ``table_checksums`` but independent of column order (rows as jsonb: keys sorted)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE %s ORDER BY 1",
            [schema, prefix + "%"],
        )
        sums = {}
        for (table,) in cursor.fetchall():
            cursor.execute(
                f"SELECT md5(coalesce(string_agg(to_jsonb(t)::text, '|' ORDER BY to_jsonb(t)::text), '')) "
                f'FROM "{schema}"."{table}" t'
            )
            sums[table] = cursor.fetchone()[0]
        return sums


def restore_pg_into(payload, schema: str, **kwargs) -> dict[str, int]:
    """restore_into_pg in a transaction of its own, committed."""
    with connect_separately(autocommit=False) as conn, conn.cursor() as cursor:
        counts = restore_into.restore_into_pg(
            payload,
            source_schema=SCHEMA,
            schema=schema,
            expected_counts=kwargs.pop("expected_counts", payload.manifest["tables"]),
            tools=find_pg_tools(),
            plain=plain_script(payload.manifest),
            cursor=cursor,
            **kwargs,
        )
        conn.commit()
    return counts


def live_worker() -> psycopg.Connection:
    """Another session working on the live clinic; it fails at once instead of waiting on a lock."""
    conn = other_connection()
    conn.execute("SET lock_timeout = '500ms'")
    conn.execute("SET statement_timeout = '5s'")
    conn.execute(f"SET search_path TO {SCHEMA}, public")  # as django-tenants does
    return conn


# --- A copy of the backup, nothing else ------------------------------------------------


def test_pg_backup_restored_into_a_scratch_schema(scratch_clinic):
    original = table_checksums(SCHEMA)
    backup = make_backup("pg")
    damage_clinic()
    damaged = table_checksums(SCHEMA)
    try:
        with opened_payload(backup) as payload:
            counts = restore_pg_into(payload, SCRATCH)
            assert counts == payload.manifest["tables"]
        with connection.cursor() as cursor:  # the COPY counts the check relies on are the rows stored
            for table, rows in counts.items():
                cursor.execute(f'SELECT count(*) FROM "{SCRATCH}"."{table}"')
                assert cursor.fetchone()[0] == rows, table
        assert table_checksums(SCRATCH) == original  # every table, byte for byte
        assert table_checksums(SCHEMA) == damaged  # the live clinic as it was
        with connection.cursor() as cursor:  # the copy's identity sequences are its own, and at the backup's values
            cursor.execute(f"SELECT pg_get_serial_sequence('{SCRATCH}.dental_patient', 'id')")
            assert cursor.fetchone()[0].startswith(f"{SCRATCH}.")
    finally:
        drop_schema(SCRATCH)


def test_json_backup_restored_into_a_scratch_schema(scratch_clinic):
    original = content_checksums(SCHEMA)
    backup = make_backup("json")
    damage_clinic()
    damaged = table_checksums(SCHEMA)
    try:
        with opened_payload(backup) as payload, transaction.atomic():
            counts = json_into.restore_into_json(
                payload, schema=SCRATCH, expected_counts=payload.manifest["tables"], source_schema=SCHEMA
            )
            assert counts == payload.manifest["tables"]
        assert content_checksums(SCRATCH) == original
        assert set(table_checksums(SCRATCH)) == set(original)  # the payload's tables, nothing else
        assert table_checksums(SCHEMA) == damaged
        with schema_context(SCRATCH):  # foreign keys and sequences work in the copy
            patient = Patient.objects.create(first_name="Nueva", last_name="Copia", national_id="COPY-1")
            assert patient.pk > max(Patient.objects.exclude(pk=patient.pk).values_list("pk", flat=True))
    finally:
        connection.set_schema_to_public()
        drop_schema(SCRATCH)


# --- The live clinic keeps working meanwhile ---------------------------------------------


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_the_live_clinic_keeps_working_while_a_backup_is_restored_into_a_scratch_schema(scratch_clinic, payload_format):
    if payload_format == "pg":
        add_filler()
    original = table_checksums(SCHEMA) if payload_format == "pg" else content_checksums(SCHEMA)
    backup = make_backup(payload_format)
    worker, observer = live_worker(), other_connection()
    restoring = connect_separately(autocommit=False) if payload_format == "pg" else None
    outcome: dict = {}
    try:
        with opened_payload(backup) as payload:
            gate = Gate(payload, pause_at=8 << 20 if payload_format == "pg" else 4096)
            expected = payload.manifest["tables"]

            def run_pg() -> None:
                try:
                    with restoring.cursor() as cursor:
                        outcome["counts"] = restore_into.restore_into_pg(
                            gate,
                            source_schema=SCHEMA,
                            schema=SCRATCH,
                            expected_counts=expected,
                            tools=find_pg_tools(),
                            plain=plain_script(payload.manifest),
                            cursor=cursor,
                        )
                    restoring.commit()
                except BaseException as exc:
                    outcome["error"] = exc
                finally:
                    connection.close()  # find_pg_tools asked the server's version on this thread's connection

            def run_json() -> None:
                try:
                    connection.ensure_connection()
                    outcome["pid"] = connection.connection.info.backend_pid
                    with transaction.atomic():
                        outcome["counts"] = json_into.restore_into_json(
                            gate, schema=SCRATCH, expected_counts=expected, source_schema=SCHEMA
                        )
                except BaseException as exc:
                    outcome["error"] = exc
                finally:
                    connection.close()

            thread = threading.Thread(target=run_pg if payload_format == "pg" else run_json)
            thread.start()
            try:
                assert gate.paused.wait(60), outcome.get("error")
                if payload_format == "pg":
                    pid = restoring.info.backend_pid

                    def copying_filler() -> bool:
                        row = observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
                        return (
                            row is not None
                            and row[0].startswith("COPY")
                            and re.search(r'\."?filler"? ', row[0]) is not None
                        )

                    wait_for(copying_filler, timeout=30, what="the restore to be copying the big table")
                else:
                    pid = outcome["pid"]
                in_transaction = observer.execute(
                    "SELECT xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                assert in_transaction == (True,), "the restoring transaction should be open"
                for round_ in range(1, 4):
                    work_on_the_live_clinic(worker, round_)  # lock_timeout 500 ms: a wait fails here
                    assert locks_on_live(observer, pid) == []
                left = table_checksums(SCHEMA)
                assert SCRATCH not in schemas()  # not committed yet: invisible to everyone else
            finally:
                gate.release.set()
                thread.join(120)
        assert not thread.is_alive()
        if "error" in outcome:
            raise outcome["error"]
        assert outcome["counts"] == expected
        assert table_checksums(SCHEMA) == left  # exactly what the other session left
        if payload_format == "pg":
            assert table_checksums(SCRATCH) == original
        else:
            assert content_checksums(SCRATCH) == original
    finally:
        for conn in (worker, observer, restoring):
            if conn is not None:
                conn.close()
        drop_schema(SCRATCH)


# --- The normal restore through a staging schema ----------------------------------------


def test_the_normal_pg_restore_fills_a_staging_schema_then_swaps(scratch_clinic):
    original = table_checksums(SCHEMA)
    backup = make_backup("pg")
    damage_clinic()
    with opened_payload(backup) as payload, connect_separately(autocommit=False) as conn, conn.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '10s'")
        restore_into.restore_into_pg(
            payload,
            source_schema=SCHEMA,
            schema=STAGING,
            expected_counts=payload.manifest["tables"],
            tools=find_pg_tools(),
            plain=plain_script(payload.manifest),
            cursor=cursor,
        )
        assert cursor.execute("SHOW lock_timeout").fetchone()[0] == "10s"  # the script's settings are undone
        restore_into.swap_schema(cursor, live=SCHEMA, replacement=STAGING)
        conn.commit()
    assert table_checksums(SCHEMA) == original
    assert not {STAGING, SCHEMA + "__before_restore"} & schemas()


# --- Refusals leave nothing behind -------------------------------------------------------


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_an_existing_schema_is_refused(scratch_clinic, payload_format):
    backup = make_backup(payload_format)
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{SCRATCH}"')
    try:
        with opened_payload(backup) as payload, pytest.raises(RestoreIntoError, match="already exists"):
            if payload_format == "pg":
                restore_pg_into(payload, SCRATCH)
            else:
                with transaction.atomic():
                    json_into.restore_into_json(payload, schema=SCRATCH, expected_counts={})
        assert table_checksums(SCRATCH) == {}
    finally:
        drop_schema(SCRATCH)


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_wrong_row_counts_roll_everything_back(scratch_clinic, payload_format):
    before = table_checksums(SCHEMA)
    backup = make_backup(payload_format)
    with opened_payload(backup) as payload:
        wrong = {**payload.manifest["tables"], "dental_patient": payload.manifest["tables"]["dental_patient"] + 1}
        if payload_format == "pg":
            with pytest.raises(RestoreIntoError, match="dental_patient"):
                restore_pg_into(payload, SCRATCH, expected_counts=wrong)
        else:
            with pytest.raises(JsonPayloadError, match="dental_patient"), transaction.atomic():
                json_into.restore_into_json(payload, schema=SCRATCH, expected_counts=wrong)
    assert SCRATCH not in schemas()
    assert table_checksums(SCHEMA) == before


def test_the_callers_count_check_decides_the_error(scratch_clinic):
    """The normal restore passes its own count check (its error code and sentence), which replaces this module's."""
    backup = make_backup("pg")
    seen = []

    class Mismatch(Exception):
        pass

    def count_check(cursor, schema, expected, *, loaded):
        seen.append((schema, dict(expected)))
        raise Mismatch

    with opened_payload(backup) as payload, pytest.raises(Mismatch):
        restore_pg_into(payload, SCRATCH, count_check=count_check)
    assert seen == [(SCRATCH, payload.manifest["tables"])]
    assert SCRATCH not in schemas()


@pytest.mark.parametrize(
    ("check", "message"),
    [
        # PostgreSQL 15 locks the live sequence (the lock check fires first); 16.2 takes no lock there,
        # and the dependency check catches it.
        (
            "locks",
            r"locked the live schema 'restaura' \(AccessShareLock on filler_id_seq\)"
            r"|linked to objects of other schemas \(.*-> restaura\.filler_id_seq\)",
        ),
        ("dependencies", r"linked to objects of other schemas \(.*-> restaura\.filler_id_seq\)"),
    ],
)
def test_a_restored_object_pointing_into_the_live_schema_is_caught(scratch_clinic, monkeypatch, check, message):
    """The safety net under the rewrite: with nextval('...'::regclass) left alone, the copy's default would use
    the LIVE sequence. The lock check finds it (the default locked the live sequence), and without it the
    dependency check does; nothing is committed and the live sequence is untouched."""
    add_filler(rows=10)
    before = table_checksums(SCHEMA)
    backup = make_backup("pg")
    live_sequence = f"SELECT last_value, is_called FROM {SCHEMA}.filler_id_seq"
    with connection.cursor() as cursor:
        cursor.execute(live_sequence)
        sequence_before = cursor.fetchone()
    monkeypatch.setattr(pg_rewrite, "_REG_TYPES", frozenset())  # '...'::regclass left alone
    monkeypatch.setattr(pg_rewrite, "_SEQUENCE_FUNCTIONS", {b"setval"})  # nextval('...') too; setval still moved
    if check == "dependencies":
        monkeypatch.setattr(restore_into, "_check_untouched", lambda *args: None)
    try:
        with (
            opened_payload(backup) as payload,
            pytest.raises(RestoreIntoError, match=message),
        ):
            restore_pg_into(payload, SCRATCH)
        assert SCRATCH not in schemas()
        assert table_checksums(SCHEMA) == before
        with connection.cursor() as cursor:
            cursor.execute(live_sequence)
            assert cursor.fetchone() == sequence_before
    finally:
        drop_schema(SCRATCH)


def test_a_payload_of_another_schema_is_refused(scratch_clinic):
    backup = make_backup("pg")
    with opened_payload(backup) as payload, connect_separately(autocommit=False) as conn, conn.cursor() as cursor:
        with pytest.raises(RestoreIntoError, match="creates schema 'restaura'"):
            restore_into.restore_into_pg(
                payload,
                source_schema="bienestar",
                schema=SCRATCH,
                expected_counts=payload.manifest["tables"],
                tools=find_pg_tools(),
                plain=plain_script(payload.manifest),
                cursor=cursor,
            )
        conn.rollback()
    assert SCRATCH not in schemas()


# --- The rewrite itself ------------------------------------------------------------------


def rewrite(sql: str, source: str = "clin") -> str:
    return rewrite_schema(sql.encode(), source=source, target="clin__drill_42", lock_timeout_ms=1234).decode()


def test_the_rewrite_moves_references_and_leaves_data_alone():
    script = (
        "SET lock_timeout = 0;\n"
        "-- Name: t; Type: TABLE; Schema: clin; Owner: -\n"
        "CREATE SCHEMA clin;\n"
        "CREATE TABLE clin.t (\n    id integer NOT NULL,\n    clin integer,\n"
        "    d text DEFAULT 'clin.t_id_seq'::text,\n    e text DEFAULT E'it\\'s clin.x',\n"
        "    CONSTRAINT c CHECK ((d <> 'clin.x'::text))\n);\n"
        "ALTER SEQUENCE clin.t_id_seq OWNED BY clin.t.id;\n"
        "ALTER TABLE ONLY clin.t ALTER COLUMN id SET DEFAULT nextval('clin.t_id_seq'::regclass);\n"
        "SELECT pg_catalog.setval('clin.t_id_seq', 42, true);\n"
        "ALTER TABLE ONLY clin.t ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES clin.u(id);\n"
        "CREATE INDEX i ON clin.t USING btree (d varchar_pattern_ops);\n"
        "CREATE FUNCTION clin.f() RETURNS integer LANGUAGE sql AS $_$SELECT 1$_$;\n"
    )
    assert rewrite(script) == (
        "SET lock_timeout = '1234ms';\n"
        "-- Name: t; Type: TABLE; Schema: clin; Owner: -\n"
        'CREATE SCHEMA "clin__drill_42";\n'
        'CREATE TABLE "clin__drill_42".t (\n    id integer NOT NULL,\n    clin integer,\n'
        "    d text DEFAULT 'clin.t_id_seq'::text,\n    e text DEFAULT E'it\\'s clin.x',\n"
        "    CONSTRAINT c CHECK ((d <> 'clin.x'::text))\n);\n"
        'ALTER SEQUENCE "clin__drill_42".t_id_seq OWNED BY "clin__drill_42".t.id;\n'
        'ALTER TABLE ONLY "clin__drill_42".t ALTER COLUMN id SET DEFAULT '
        "nextval('\"clin__drill_42\".t_id_seq'::regclass);\n"
        "SELECT pg_catalog.setval('\"clin__drill_42\".t_id_seq', 42, true);\n"
        'ALTER TABLE ONLY "clin__drill_42".t ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES "clin__drill_42".u(id);\n'
        'CREATE INDEX i ON "clin__drill_42".t USING btree (d varchar_pattern_ops);\n'
        'CREATE FUNCTION "clin__drill_42".f() RETURNS integer LANGUAGE sql AS $_$SELECT 1$_$;\n'
    )


def test_the_rewrite_knows_quoted_names():
    script = 'CREATE SCHEMA "user";\nCREATE TABLE "user".t (a int);\nSELECT setval(\'"user".s\', 1);\n'
    assert rewrite(script, source="user") == (
        'CREATE SCHEMA "clin__drill_42";\nCREATE TABLE "clin__drill_42".t (a int);\n'
        "SELECT setval('\"clin__drill_42\".s', 1);\n"
    )
    assert rewrite("CREATE SCHEMA IF NOT EXISTS Clin; create table CLIN.t (a int)") == (
        'CREATE SCHEMA IF NOT EXISTS "clin__drill_42"; create table "clin__drill_42".t (a int)'
    )


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("CREATE SCHEMA other;", "creates schema 'other'"),
        ("SELECT pg_catalog.setval('public.s', 1, true);", "changes a sequence outside the schema"),
        ("SET search_path = clin, pg_catalog;", "search_path"),
        ("CREATE FUNCTION clin.f() RETURNS int LANGUAGE sql AS $$SELECT count(*) FROM clin.t$$;", r"\$-quoted"),
        ("SET standard_conforming_strings = off;", "standard_conforming_strings"),
        ("SELECT 'unterminated", "unterminated"),
    ],
)
def test_what_cannot_be_moved_is_refused(script, reason):
    with pytest.raises(RestoreIntoError, match=reason):
        rewrite(script)


def test_copy_rows_only_go_into_the_new_schema():
    rewriter = restore_into.SchemaRewriter("clin", "clin__drill_42", 1000)
    assert rewriter.copy(b"COPY clin.t (id, clin) FROM stdin") == (
        b'COPY "clin__drill_42".t (id, clin) FROM stdin',
        "t",
    )
    with pytest.raises(RestoreIntoError, match="outside the schema"):
        rewriter.copy(b"COPY public.t (id) FROM stdin")
