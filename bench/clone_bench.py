"""Time a clone of a demo-sized clinic against creating an empty clinic through its migrations.

Run from the repository root:  .venv/bin/python bench/clone_bench.py [--patients 40] [--repeats 3] [--keep]

Source: a bench clinic ``bench_clone_src`` (``clinics.demo.ensure_clinic`` + ``ensure_records``,
40 patients by default, the demo's size), backed up once in each format. Then, ``--repeats``
times each (medians printed):

1. an empty clinic, ``Clinic(schema_name=..., name=...).save()`` (``auto_create_schema``: CREATE
   SCHEMA and every tenant migration), plus its domain: what creating a clinic costs today;
2. ``clone_request`` + ``clone_run`` of the pg backup (verify the archive, restore it into the
   new schema in one transaction, files staged and renamed in);
3. the same with the json backup (a migrated schema, then the payload loaded with COPY).

Every clinic the bench makes is dropped at the end (the source too, unless ``--keep``).
Archives and media go to a temporary folder. Progress on stderr, results on stdout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="respaldo-clone-bench-media-"))

from bench_setup import start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-clone-bench-")

from django.db import connection  # noqa: E402
from django_tenants.utils import schema_context  # noqa: E402

from backups import services  # noqa: E402
from backups.models import Backup  # noqa: E402
from backups.models_clone import CloneJob  # noqa: E402
from backups.services import clone as clones  # noqa: E402
from clinics.demo import ensure_clinic, ensure_records  # noqa: E402
from clinics.models import Clinic, Domain  # noqa: E402

SOURCE = "bench_clone_src"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def drop_clinic(schema: str) -> None:
    """The clinic, its schema, domains, clone jobs and backup rows, gone."""
    connection.set_schema_to_public()
    clinic = Clinic.objects.filter(schema_name=schema).first()
    CloneJob.objects.filter(target_schema=schema).delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if clinic is not None:
        CloneJob.objects.filter(source_backup__clinic=clinic).delete()
        Backup.objects.filter(clinic=clinic).delete()
        Domain.objects.filter(tenant=clinic).delete()
        Clinic.objects.filter(pk=clinic.pk).delete()


def median_seconds(label: str, repeats: int, run: Callable[[str], None]) -> float:
    times = []
    for attempt in range(repeats):
        schema = f"bench_clone_{label}_{attempt}"
        drop_clinic(schema)
        start = time.perf_counter()
        run(schema)
        times.append(time.perf_counter() - start)
        log(f"{label} #{attempt + 1}: {times[-1]:.2f}s")
        drop_clinic(schema)
    return statistics.median(times)


def empty_clinic(schema: str) -> None:
    clinic = Clinic(schema_name=schema, name=schema)
    clinic.save(verbosity=0)  # CREATE SCHEMA + every tenant migration
    Domain.objects.create(domain=clones.default_domain(schema), tenant=clinic, is_primary=True)


def cloner(backup: Backup) -> Callable[[str], None]:
    def run(schema: str) -> None:
        job = clones.clone_request(
            source_backup_id=backup.pk, schema_name=schema, name=schema, requested_by="bench", enqueue=False
        )
        job = clones.clone_run(clone_id=job.pk)
        if job.status != "succeeded":
            raise SystemExit(f"clone failed: {job.error}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the source clinic for the next run")
    options = parser.parse_args()

    log(f"source clinic {SOURCE} with {options.patients} patients")
    ensure_clinic(SOURCE, "Bench clone source")
    with schema_context(SOURCE):
        ensure_records(patients=options.patients, seed=SOURCE)
    connection.set_schema_to_public()
    backups = {}
    for payload_format in ("pg", "json"):
        request = services.backup_request(clinic=SOURCE, payload_format=payload_format, enqueue=False)
        backups[payload_format] = services.backup_run(backup_id=request.pk)
    rows = sum((backups["pg"].manifest.get("tables") or {}).values())
    try:
        empty = median_seconds("empty", options.repeats, empty_clinic)
        pg = median_seconds("pg", options.repeats, cloner(backups["pg"]))
        json = median_seconds("json", options.repeats, cloner(backups["json"]))
    finally:
        if not options.keep:
            drop_clinic(SOURCE)
    print(f"source: {options.patients} patients, {rows} rows in {len(backups['pg'].manifest['tables'])} tables")
    print(f"{'what':<42} {'median s':>9} {'vs empty':>9}")
    print(f"{'empty clinic (CREATE SCHEMA + migrations)':<42} {empty:>9.2f} {1:>9.2f}")
    print(f"{'clone of the pg backup':<42} {pg:>9.2f} {pg / empty:>9.2f}")
    print(f"{'clone of the json backup':<42} {json:>9.2f} {json / empty:>9.2f}")


if __name__ == "__main__":
    main()
