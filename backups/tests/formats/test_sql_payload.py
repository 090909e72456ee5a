"""The pg payload as a plain SQL script read from the clinic's own catalog entries (issue 28).

The check of record: a clinic holding every kind of object the script carries is backed up,
broken and restored, and ``pg_dump`` then sees the same schema and the same rows as before.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from django.core.management import call_command
from django.db import connection

from backups.formats.pg import copyout, plain_script
from backups.formats.pg.catalog import unsupported
from backups.models import Restore
from backups.postgres import find_pg_tools, libpq_environment
from backups.tests.helpers import SCHEMA, make_backup, storage_files, table_checksums

# Every kind of object the script carries, with names that make order matter (a view reading a
# view named after it, a function on the schema's own row type) and rows that test COPY's escapes.
EVERY_KIND = """
CREATE SEQUENCE {s}.invoice_numbers AS integer START WITH 1000 INCREMENT BY 7 CACHE 3;
SELECT nextval('{s}.invoice_numbers'), nextval('{s}.invoice_numbers');
CREATE SEQUENCE {s}.never_used;
CREATE TABLE {s}.kinds (
    id bigint GENERATED ALWAYS AS IDENTITY (START WITH 50 INCREMENT BY 5) PRIMARY KEY,
    counter serial,
    code text COLLATE "C" NOT NULL DEFAULT 'x',
    amount numeric(10, 2) CHECK (amount >= 0),
    doubled numeric GENERATED ALWAYS AS (amount * 2) STORED,
    parent bigint REFERENCES {s}.kinds (id) DEFERRABLE INITIALLY DEFERRED,
    tags text[],
    doc jsonb,
    blob bytea,
    at timestamptz DEFAULT now(),
    invoice integer DEFAULT nextval('{s}.invoice_numbers'::regclass),
    CONSTRAINT kinds_code_key UNIQUE (code)
) WITH (fillfactor = 80);
CREATE UNLOGGED TABLE {s}.scratchpad (note text, kind bigint);
CREATE UNIQUE INDEX scratchpad_note ON {s}.scratchpad (note);
ALTER TABLE {s}.scratchpad ADD CONSTRAINT scratchpad_kind FOREIGN KEY (kind) REFERENCES {s}.kinds (id)
    ON DELETE CASCADE;
ALTER TABLE {s}.kinds ADD CONSTRAINT kinds_later CHECK (code <> '') NOT VALID;
CREATE INDEX kinds_lower ON {s}.kinds (lower(code)) WHERE amount > 0;
CREATE INDEX kinds_pattern ON {s}.kinds (code text_pattern_ops);
ALTER TABLE {s}.kinds CLUSTER ON kinds_pattern;
CREATE FUNCTION {s}.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.at := now(); RETURN NEW; END$$;
CREATE FUNCTION {s}.total(k {s}.kinds) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$SELECT k.amount + 1$$;
CREATE PROCEDURE {s}.nothing(n integer) LANGUAGE sql AS $$SELECT n$$;
CREATE TRIGGER kinds_touch BEFORE UPDATE ON {s}.kinds FOR EACH ROW EXECUTE FUNCTION {s}.touch();
CREATE TRIGGER kinds_off BEFORE INSERT ON {s}.kinds FOR EACH ROW WHEN (NEW.amount > 100)
    EXECUTE FUNCTION {s}.touch();
ALTER TABLE {s}.kinds DISABLE TRIGGER kinds_off;
CREATE VIEW {s}.z_source AS SELECT id, code, amount FROM {s}.kinds;
CREATE VIEW {s}.a_top WITH (security_barrier) AS SELECT id, amount FROM {s}.z_source WHERE amount > 1
    WITH CASCADED CHECK OPTION;
ALTER TABLE {s}.scratchpad REPLICA IDENTITY FULL;
ALTER TABLE {s}.scratchpad ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE {s}.kinds IS 'Every kind: it''s here';
COMMENT ON COLUMN {s}.kinds.code IS 'a code';
COMMENT ON VIEW {s}.a_top IS 'top';
COMMENT ON COLUMN {s}.a_top.amount IS 'a view''s column';
COMMENT ON SEQUENCE {s}.invoice_numbers IS 'numbers';
COMMENT ON FUNCTION {s}.total({s}.kinds) IS 'total';
COMMENT ON INDEX {s}.kinds_lower IS 'lower codes';
COMMENT ON CONSTRAINT kinds_later ON {s}.kinds IS 'later';
COMMENT ON TRIGGER kinds_touch ON {s}.kinds IS 'touch';
INSERT INTO {s}.kinds (code, amount, tags, doc, blob) VALUES
    (E'tab\\there', 1.5, '{{a,b}}', '{{"k": [1, null]}}', '\\x00ff'),
    (E'line\\nbreak\\\\.', 200, NULL, NULL, NULL),
    (E'\\\\.', 0, '{{}}', '[]', ''),
    ('ñandú 🦷 back\\slash', NULL, '{{"with space"}}', '"text"', '\\x5c2e');
UPDATE {s}.kinds SET parent = (SELECT min(id) FROM {s}.kinds);
INSERT INTO {s}.scratchpad VALUES ('unlogged', (SELECT max(id) FROM {s}.kinds)), (NULL, NULL);
"""


def _run(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True, env=libpq_environment(), timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pg_dump_text(schema: str, *options: str) -> str:
    """What pg_dump sees of the schema (its own catalog reading: the reference), comments aside."""
    text = _run(find_pg_tools().pg_dump, "--no-owner", "--no-privileges", f"--schema={schema}", *options)
    return "\n".join(line for line in text.splitlines() if not line.startswith("--") and not line.startswith("\\"))


def add_every_kind(schema: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(EVERY_KIND.format(s=schema))


@pytest.mark.parametrize("rows_by", ["this process", "psql"])
def test_a_clinic_with_every_kind_of_object_comes_back_as_pg_dump_saw_it(scratch_clinic, monkeypatch, rows_by):
    if rows_by == "psql":  # what a big clinic's rows go through (copyout): here whatever its size
        monkeypatch.setattr(copyout, "PSQL_ROWS", 0)
    add_every_kind(SCHEMA)
    schema_before = pg_dump_text(SCHEMA, "--schema-only")
    rows_before = pg_dump_text(SCHEMA, "--data-only", f"--exclude-table-data={SCHEMA}.django_session")
    checksums = table_checksums(SCHEMA)
    assert "CREATE VIEW" in schema_before and "CREATE TRIGGER" in schema_before  # the fixture is what it says

    backup = make_backup()
    assert backup.manifest["postgresql"]["payload"] == "sql"
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {SCHEMA}.scratchpad; DROP VIEW {SCHEMA}.a_top; DROP FUNCTION {SCHEMA}.total")
        cursor.execute(f"SELECT setval('{SCHEMA}.invoice_numbers', 5000)")
    assert pg_dump_text(SCHEMA, "--schema-only") != schema_before

    call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes")
    assert Restore.objects.get(clinic=scratch_clinic).outcome == Restore.Outcome.RESTORED
    assert pg_dump_text(SCHEMA, "--schema-only") == schema_before
    assert pg_dump_text(SCHEMA, "--data-only", f"--exclude-table-data={SCHEMA}.django_session") == rows_before
    assert table_checksums(SCHEMA) == checksums


def test_objects_the_script_does_not_carry_are_backed_up_by_pg_dump(scratch_clinic):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TYPE {SCHEMA}.mood AS ENUM ('calm', 'nervous')")
        cursor.execute(f"ALTER TABLE {SCHEMA}.dental_patient ADD COLUMN mood {SCHEMA}.mood DEFAULT 'calm'")
        cursor.execute(f"CREATE MATERIALIZED VIEW {SCHEMA}.busy AS SELECT count(*) AS n FROM {SCHEMA}.dental_patient")
        cursor.execute(f"ALTER TABLE {SCHEMA}.dental_patient ALTER COLUMN mood SET (n_distinct = 2)")
        found = unsupported(cursor, SCHEMA)
    assert found == [
        f"column setting (statistics target, n_distinct, storage or compression): {SCHEMA}.dental_patient.mood",
        f"materialized view: {SCHEMA}.busy",
        f"type: {SCHEMA}.mood",
    ]
    checksums = table_checksums(SCHEMA)

    backup = make_backup()
    assert backup.manifest["postgresql"]["payload"] == "custom"  # pg_dump carried them
    assert not plain_script(backup.manifest)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {SCHEMA}.dental_patient SET mood = 'nervous'")
    call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes")
    assert table_checksums(SCHEMA) == checksums
    assert re.search(r"CREATE TYPE \S+\.mood AS ENUM", pg_dump_text(SCHEMA, "--schema-only"))
    assert storage_files()
