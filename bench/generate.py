"""Deterministic, realistic dental data for a bench clinic, generated in SQL.

Run from the repository root (Django settings as usual, e.g. with DATABASE_URL):

    .venv/bin/python bench/generate.py --size XS [--schema benchxs] [--drop]

A clinic is created the ordinary way (``clinics.demo.ensure_clinic``: CREATE SCHEMA and every
tenant migration; its 4 dentists and 8 materials by ``ensure_records``), then its records are
filled by a few ``INSERT … SELECT … FROM generate_series`` statements inside its schema. Every
"random" value is a hash of the row number (``hashint8``), never ``random()`` or ``now()``,
so two runs give identical rows (``fingerprint`` prints an md5 per table to check it).

Sizes (patients; each patient has 2 appointments, 1 treatment with 0–3 materials, 1 invoice
and most have a payment: ≈ 8.2 rows per patient):
XS ≈ 20 MB on disk, S ≈ 300 MB and 1.4M rows, M ≈ 1 GB. ``clone_clinics`` copies one
generated schema into many clinics (a plain dump of it, renamed, replayed) instead of generating
each.
"""

# ruff: noqa: S608, S604 - bench-made SQL and shell lines, from fixed names and our own paths

from __future__ import annotations

import argparse
import sys
import time

PATIENTS = {"XS": 12_000, "S": 175_000, "M": 620_000, "TINY": 40, "JSON": 7500}
BASE = "timestamptz '2026-01-01 09:00:00+00'"
FIRST = ["José", "María", "Ángela", "Iñaki", "Lucía", "Martín", "Zoë", "Begoña", "Raúl", "Inés", "Sebastián", "Mónica"]
LAST = ["García", "Núñez", "Pérez", "Martínez", "Gómez", "Ibáñez", "Fernández", "Muñoz", "Álvarez", "Sánchez"]
NOTES = [
    "",
    "Prefiere citas por la mañana.",
    "Paciente nervioso; explicar cada paso antes de empezar y ofrecer pausas.",
    "Seguro dental: Sanitas — nº póliza «A-77». Autorización previa para endodoncias y coronas.",
    "Antecedentes: hipertensión controlada, toma enalapril 10 mg. Evitar vasoconstrictor en dosis altas.",
]
TABLES = [
    "dental_dentist",
    "dental_inventoryitem",
    "dental_patient",
    "dental_appointment",
    "dental_treatment",
    "dental_treatment_materials",
    "dental_invoice",
    "dental_invoice_treatments",
    "dental_payment",
]


def h(expr: str, salt: int) -> str:
    """A deterministic non-negative pseudo-random int of ``expr`` (a bigint SQL expression)."""
    return f"(hashint8(({expr})::bigint * 7919 + {salt}) & 2147483647)"


def pick(values: list[str], expr: str, salt: int) -> str:
    """SQL choosing one of ``values`` by the hash of ``expr``."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"(ARRAY[{quoted}])[1 + {h(expr, salt)} % {len(values)}]"


def statements(schema: str, patients: int) -> list[str]:
    """The INSERTs that fill ``schema`` (dentists and materials already there, ids 1..4 and 1..8)."""
    from clinics.demo import PROCEDURES  # the demo's treatments and prices, once

    s = f'"{schema}"'
    n = patients
    procs = [p for p, _ in PROCEDURES]
    costs = ", ".join(c for _, c in PROCEDURES)
    return [
        f"""INSERT INTO {s}.dental_patient (id, first_name, last_name, national_id, birth_date, phone, email,
            allergies, notes, xray, consent_signature, created_at)
        SELECT g, {pick(FIRST, "g", 1)}, {pick(LAST, "g", 2)} || ' ' || {pick(LAST, "g", 3)},
            'BN' || lpad(g::text, 8, '0') || substr('TRWAGMYFPDXBNJZSQVHLCKE', 1 + (g % 23)::int, 1),
            date '1940-01-01' + {h("g", 4)} % 30000,
            '+34 6' || (10000000 + {h("g", 5)} % 90000000)::text,
            'paciente' || g || '@correo.example',
            (ARRAY['[]', '["penicilina"]', '["látex", "lidocaína"]', '["níquel"]'])[1 + {h("g", 6)} % 4]::jsonb,
            {pick(NOTES, "g", 7)}, '',
            CASE {h("g", 8)} % 3 WHEN 0 THEN NULL WHEN 1 THEN decode(md5(g::text), 'hex')
                ELSE decode(md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text), 'hex')
            END,
            {BASE} - g * interval '7 minutes 13.123457 seconds'
        FROM generate_series(1, {n}) g""",
        f"""INSERT INTO {s}.dental_appointment (id, patient_id, dentist_id, starts_at, duration, status, reason)
        SELECT a, (a + 1) / 2, 1 + {h("a", 11)} % 4,
            {BASE} - ({h("a", 12)} % 750 - 30) * interval '1 day' - ({h("a", 13)} % 600) * interval '1 minute'
                - (1 + {h("a", 14)} % 999999) * interval '1 microsecond',
            (ARRAY[20, 30, 45, 60, 90])[1 + {h("a", 15)} % 5] * interval '1 minute',
            {pick(["scheduled", "confirmed", "completed", "cancelled", "no_show"], "a", 16)},
            {pick(procs, "a", 17)}
        FROM generate_series(1, {2 * n}) a""",
        f"""INSERT INTO {s}.dental_treatment (id, patient_id, dentist_id, appointment_id, tooth_number, procedure,
            cost, performed_on, notes)
        SELECT (ap.id + 1) / 2, ap.patient_id, ap.dentist_id, ap.id,
            (ARRAY[11, 12, 16, 21, 26, 36, 37, 46, 47, 55, 85])[1 + {h("ap.id", 21)} % 11],
            {pick(procs, "ap.id", 22)}, (ARRAY[{costs}])[1 + {h("ap.id", 22)} % {len(PROCEDURES)}]::numeric,
            (ap.starts_at AT TIME ZONE 'Europe/Madrid')::date,
            {pick(["", "Sin complicaciones.", "Revisar en 6 meses."], "ap.id", 23)}
        FROM {s}.dental_appointment ap WHERE ap.id % 2 = 1""",
        f"""INSERT INTO {s}.dental_treatment_materials (treatment_id, inventoryitem_id)
        SELECT t, 1 + ({h("t", 31)} + 3 * k) % 8
        FROM generate_series(1, {n}) t, generate_series(1, 3) k WHERE k <= {h("t", 32)} % 4""",
        f"""INSERT INTO {s}.dental_invoice (id, patient_id, number, reference, issued_on, due_on, total, status)
        SELECT t.id, t.patient_id, 'F-BEN-' || lpad(t.id::text, 7, '0'), md5('invoice' || t.id)::uuid,
            t.performed_on, t.performed_on + 30, t.cost, {pick(["draft", "issued", "paid", "void"], "t.id", 41)}
        FROM {s}.dental_treatment t""",
        f"""INSERT INTO {s}.dental_invoice_treatments (invoice_id, treatment_id)
        SELECT id, id FROM {s}.dental_invoice""",
        f"""INSERT INTO {s}.dental_payment (invoice_id, amount, method, paid_at, reference)
        SELECT i.id, round(i.total / 2, 2), {pick(["cash", "card", "transfer", "insurance"], "i.id", 51)},
            (i.issued_on + time '10:15:30' + (1 + {h("i.id", 52)} % 999999) * interval '1 microsecond')
                AT TIME ZONE 'Europe/Madrid',
            md5('payment' || i.id)::uuid
        FROM {s}.dental_invoice i WHERE i.status IN ('paid', 'issued') ORDER BY i.id""",
    ]


def _connection():
    from django.db import connection

    return connection


def fill(schema: str, patients: int) -> None:
    """Fill an empty, migrated clinic schema with ``patients`` patients and their records."""
    from django_tenants.utils import schema_context

    from clinics.demo import ensure_records

    with schema_context(schema):
        ensure_records(patients=0, seed=schema)  # the 4 dentists and 8 materials (seeded random)
    connection = _connection()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        for sql in statements(schema, patients):
            cursor.execute(sql)
        for table in TABLES:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('\"{schema}\".{table}', 'id'), "
                f'(SELECT coalesce(max(id), 0) + 1 FROM "{schema}".{table}), false)'
            )


def analyze(schema: str) -> None:
    with _connection().cursor() as cursor:
        for table in TABLES:
            cursor.execute(f'ANALYZE "{schema}".{table}')


def stats(schema: str) -> tuple[int, int]:
    """(rows in the dental tables, bytes on disk of the whole schema: tables, indexes, TOAST)."""
    with _connection().cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            [schema],
        )
        disk = int(cursor.fetchone()[0])
        rows = 0
        for table in TABLES:
            cursor.execute(f'SELECT count(*) FROM "{schema}".{table}')  # noqa: S608 - fixed table names
            rows += cursor.fetchone()[0]
    return rows, disk


def fingerprint(schema: str) -> dict[str, str]:
    """md5 of each dental table's rows in id order (the same for two runs of the generator)."""
    out = {}
    with _connection().cursor() as cursor:
        for table in TABLES:
            order = "1, 2" if table.endswith(("_materials", "_treatments")) else "id"
            cursor.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {order}), '')) "  # noqa: S608
                f'FROM (SELECT * FROM "{schema}".{table}) t'
            )
            out[table] = cursor.fetchone()[0]
    return out


def expected_rows(schema: str, patients: int) -> bool:
    with _connection().cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{schema}".dental_patient')  # noqa: S608
        return cursor.fetchone()[0] == patients


def generate(schema: str, size: str, *, patients: int | None = None, log=print) -> dict:
    """Create (or reuse, when it already holds the asked patients) clinic ``schema`` at ``size``."""
    from django_tenants.utils import schema_exists

    from clinics.demo import ensure_clinic
    from clinics.models import Clinic

    patients = patients or PATIENTS[size]
    started = time.perf_counter()
    existing = Clinic.objects.filter(schema_name=schema).first()
    if existing is not None and not schema_exists(schema):  # left by a run that failed half-way
        existing.domains.all().delete()
        Clinic.objects.filter(pk=existing.pk).delete()
        existing = None
    if existing is not None and not expected_rows(schema, patients):
        existing.delete(force_drop=True)
        existing = None
    if existing is None:
        ensure_clinic(schema, f"Bench {size}")
        fill(schema, patients)
        analyze(schema)
        log(f"{schema}: generated {patients} patients in {time.perf_counter() - started:.1f} s")
    else:
        log(f"{schema}: reused ({patients} patients)")
    rows, disk = stats(schema)
    return {"schema": schema, "patients": patients, "rows": rows, "disk_bytes": disk}


def clone_clinics(template: str, prefix: str, count: int, *, log=print) -> list[str]:
    """``count`` clinics ``<prefix>0001``… whose schemas are copies of ``template`` (not regenerated).

    One plain ``pg_dump`` of the template, its schema name replaced, fed ``count`` times to one
    psql session (≈ 20 ms a clinic; django-tenants' ``clone_schema`` function took ≈ 1 s each),
    then the clinic and domain rows in two bulk inserts.
    """
    import re
    import subprocess

    from backups.postgres import find_pg_tools, libpq_environment
    from clinics.models import Clinic, Domain

    started = time.perf_counter()
    names = [f"{prefix}{n:04d}" for n in range(1, count + 1)]
    tools, env = find_pg_tools(), libpq_environment()
    with _connection().cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [names])
        have = {name for (name,) in cursor.fetchall()}
    todo = [n for n in names if n not in have]
    if todo:
        dump = subprocess.run(
            [tools.pg_dump, f"--schema={template}", "--no-owner", "--no-privileges"],
            env=env,
            check=True,
            capture_output=True,
        ).stdout.decode()
        pattern = re.compile(rf"\b{re.escape(template)}\b")
        psql = subprocess.Popen(
            [tools.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        for name in todo:
            psql.stdin.write(pattern.sub(name, dump).encode())
        psql.stdin.close()
        if psql.wait() != 0:
            raise RuntimeError("cloning the template schema failed")
    existing = set(Clinic.objects.filter(schema_name__in=names).values_list("schema_name", flat=True))
    made = Clinic.objects.bulk_create(
        [Clinic(schema_name=n, name=f"Bench {n}", time_zone="Europe/Madrid") for n in names if n not in existing]
    )
    Domain.objects.bulk_create([Domain(domain=f"{c.schema_name}.localhost", tenant=c, is_primary=True) for c in made])
    log(f"{count} clinics cloned from {template} in {time.perf_counter() - started:.1f} s")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(PATIENTS), default="XS")
    parser.add_argument("--schema", default="")
    parser.add_argument("--patients", type=int, default=0, help="override the size's patient count")
    parser.add_argument("--drop", action="store_true", help="drop the clinic afterwards")
    parser.add_argument("--fingerprint", action="store_true", help="print an md5 per table")
    args = parser.parse_args()
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from bench_setup import start_django

    start_django("respaldo-generate-")
    from clinics.models import Clinic

    schema = args.schema or f"bench{args.size.lower()}"
    info = generate(schema, args.size, patients=args.patients or None)
    print(f"{schema}: {info['rows']:,} rows, {info['disk_bytes'] / 2**20:.1f} MiB on disk")
    if args.fingerprint:
        for table, digest in fingerprint(schema).items():
            print(f"  {table:<28} {digest}")
    if args.drop:
        Clinic.objects.get(schema_name=schema).delete(force_drop=True)


if __name__ == "__main__":
    main()
