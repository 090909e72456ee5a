"""Many clinic schemas, fast: copies of a clinic's tables made in SQL, not by migrations.

Per copy ``CREATE SCHEMA``, ``CREATE TABLE … (LIKE <template>.<table> INCLUDING ALL)`` for each
of its tables (columns, defaults, identity sequences, checks, indexes, primary and unique keys)
and its foreign keys re-added from ``pg_get_constraintdef``, empty, ``BATCH`` copies a
transaction on one connection; then their ``clinics_clinic`` rows (no domain: nothing that
uses them serves pages). Used by the tests of the night (``operations/test_night_clusters.py``)
and by the bench's scale group.
"""

# ruff: noqa: S608 - SQL made from the template's own table names, quoted

from __future__ import annotations

from backups.postgres import connect_separately
from clinics.models import Clinic

BATCH = 20  # copies a transaction: each holds ≈ 120 locks until its commit (the lock table holds ≈ 6,400)


def copy_script(template: str, tables: list[str], foreign_keys: list[tuple[str, str, str]], name: str) -> str:
    """The SQL that makes schema ``name`` a copy of ``template``'s tables (empty), its foreign keys included."""
    parts = [f'CREATE SCHEMA "{name}"', f'SET LOCAL search_path TO "{name}"']
    parts += [f'CREATE TABLE "{t}" (LIKE "{template}"."{t}" INCLUDING ALL)' for t in tables]
    parts += [f'ALTER TABLE {table} ADD CONSTRAINT "{fk}" {definition}' for table, fk, definition in foreign_keys]
    return ";\n".join(parts) + ";\n"


def make_copies(template: str, names: list[str], *, name_prefix: str = "Copy", only: list[str] | None = None) -> None:
    """Schemas ``names``, copies of ``template`` made in SQL, ``BATCH`` a transaction; their clinic rows.

    ``only``: copy just these tables (and the foreign keys among them), for tests that need many
    clinics more than whole ones."""
    conn = connect_separately(autocommit=False, application_name="clinic-copies")
    try:
        with conn.cursor() as cursor:
            # names relative to the template's schema: the copies' foreign keys point inside the copy
            cursor.execute(f'SET LOCAL search_path TO "{template}"')
            cursor.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind IN ('r', 'p') "
                "ORDER BY oid",
                [template],
            )
            tables = [name for (name,) in cursor.fetchall() if only is None or name in only]
            cursor.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), confrelid::regclass::text "
                "FROM pg_constraint WHERE contype = 'f' AND connamespace = %s::regnamespace ORDER BY oid",
                [template],
            )
            foreign_keys = [
                (table, name, definition)
                for table, name, definition, target in cursor.fetchall()
                if only is None or (table.strip('"') in only and target.strip('"') in only)
            ]
            conn.rollback()
            for start in range(0, len(names), BATCH):
                batch = names[start : start + BATCH]
                cursor.execute("".join(copy_script(template, tables, foreign_keys, n) for n in batch).encode())
                conn.commit()
    finally:
        conn.close()
    Clinic.objects.bulk_create(
        [Clinic(schema_name=n, name=f"{name_prefix} {n}") for n in names],
        batch_size=1000,
        ignore_conflicts=True,
    )


def drop_copies(names: list[str]) -> None:
    """Drop the copies ``names`` (schemas, ``BATCH`` a transaction, and clinic rows)."""
    conn = connect_separately(autocommit=False, application_name="clinic-copies")
    try:
        with conn.cursor() as cursor:
            for start in range(0, len(names), BATCH):
                batch = names[start : start + BATCH]
                cursor.execute("".join(f'DROP SCHEMA IF EXISTS "{n}" CASCADE;' for n in batch).encode())
                conn.commit()
    finally:
        conn.close()
    Clinic.objects.filter(schema_name__in=names).delete()
