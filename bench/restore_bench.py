"""Benchmark our restores against the raw tools, on a dedicated bench clinic.

Run from the repository root:  .venv/bin/python bench/restore_bench.py [--patients 100000] [--json-patients 5000]

pg: `pg_restore -f - dump | psql --single-transaction` (after dropping the schema) versus
`manage.py restore_clinic --backup ID --yes` (which also verifies the archive, takes a
safety backup, checks every table's row count and migrates if needed).
json: our json restore (COPY) versus `manage.py loaddata` of the very same payload.
Peak RSS of each process is measured with GNU time. Progress on stderr, table on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_setup import ROOT, start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-restore-bench-")

from django.db import connection  # noqa: E402
from django_tenants.utils import schema_context  # noqa: E402

from backups import archive, services, storage  # noqa: E402
from backups.formats.json.payload import payload_models  # noqa: E402
from backups.keys import archive_identities  # noqa: E402
from backups.models import Backup, Restore  # noqa: E402
from backups.postgres import find_pg_tools, libpq_environment  # noqa: E402
from clinics.demo import ensure_clinic, ensure_records  # noqa: E402

GNU_TIME = "/usr/bin/time"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(args: list[str], **kwargs) -> tuple[float, int]:
    """Run a command under GNU time; return (wall seconds, peak RSS in MiB)."""
    rss_file = TMP / "rss"
    start = time.perf_counter()
    subprocess.run([GNU_TIME, "-f", "%M", "-o", str(rss_file), *args], check=True, **kwargs)
    return time.perf_counter() - start, int(rss_file.read_text().split()[-1]) // 1024


def shell_timed(script: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], check=True, env=libpq_environment(), stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def bench_clinic(schema: str, patients: int) -> None:
    ensure_clinic(schema, f"Bench {patients}")
    with schema_context(schema):
        ensure_records(patients=patients, seed=schema)
    connection.set_schema_to_public()


def backup(schema: str, payload_format: str) -> Backup:
    row = services.backup_run(
        backup_id=services.backup_request(clinic=schema, payload_format=payload_format, enqueue=False).pk
    )
    if row.status != "succeeded":
        raise SystemExit(f"backup failed: {row.error}")
    return row


def payload_to_file(row: Backup, path: Path) -> None:
    with (
        storage.open_stored(row.storage_name) as stream,
        archive.open_archive(stream, identities=archive_identities()) as reader,
        open(path, "wb") as out,
    ):
        shutil.copyfileobj(reader, out, 1 << 20)


def manage(*args: str) -> tuple[float, int]:
    return timed([sys.executable, "manage.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL)


def pg_round(schema: str) -> dict[str, float]:
    tools = find_pg_tools()
    row = backup(schema, "pg")
    dump = TMP / "raw.dump"
    payload_to_file(row, dump)
    result = {}
    log("raw pg_restore | psql --single-transaction …")
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
    result["raw pg_restore | psql -1 (s)"] = shell_timed(
        f"{tools.pg_restore} --no-owner --no-privileges -f - {dump} | {tools.psql} -X -q -v ON_ERROR_STOP=1 "
        f"--single-transaction"
    )
    log("ours: restore_clinic --backup …")
    seconds, rss = manage("restore_clinic", schema, "--backup", str(row.pk), "--yes")
    restore = Restore.objects.filter(backup=row).latest("pk")
    safety = restore.safety_backup
    result["ours restore_clinic, whole process (s)"] = seconds
    result["ours restore job (s)"] = restore.duration.total_seconds()
    result["  of which safety backup (s)"] = safety.duration.total_seconds()
    result["ours restore peak RSS (MiB)"] = rss
    result["dump size (MiB)"] = dump.stat().st_size / 2**20
    return result


def json_round(schema: str) -> dict[str, float]:
    row = backup(schema, "json")
    payload = TMP / "payload.json"
    payload_to_file(row, payload)
    result = {}
    log("ours: json restore …")
    seconds, rss = manage("restore_clinic", schema, "--backup", str(row.pk), "--yes")
    restore = Restore.objects.filter(backup=row).latest("pk")
    result["ours json restore_clinic, whole process (s)"] = seconds
    result["ours json restore job (s)"] = restore.duration.total_seconds()
    result["ours json restore peak RSS (MiB)"] = rss
    log("loaddata of the same payload …")
    tables = ", ".join(f'"{schema}"."{m._meta.db_table}"' for m in payload_models())
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables}")
    code = (
        "import django,sys; django.setup(); from django.core.management import call_command; "
        "from django_tenants.utils import schema_context\n"
        f"with schema_context({schema!r}): call_command('loaddata', {str(payload)!r}, verbosity=0)"
    )
    seconds, rss = timed([sys.executable, "-c", code], cwd=ROOT)
    result["loaddata, whole process (s)"] = seconds
    result["loaddata peak RSS (MiB)"] = rss
    result["payload size (MiB)"] = payload.stat().st_size / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--json-patients", type=int, default=5_000, help="loaddata is slow: keep this small")
    args = parser.parse_args()
    archive_identities()  # generates the throw-away key
    schemas = [f"rbench_{args.patients}", f"rbench_json_{args.json_patients}"]
    try:
        log("seeding …")
        bench_clinic(schemas[0], args.patients)
        bench_clinic(schemas[1], args.json_patients)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(f"Respaldo restore bench   nproc: {os.cpu_count()}   PostgreSQL {version}")
        for title, result in [
            (f"pg format, {args.patients} patients", pg_round(schemas[0])),
            (f"json format, {args.json_patients} patients", json_round(schemas[1])),
        ]:
            print(f"\n{title}")
            for key, value in result.items():
                print(f"  {key:<45} {value:10.2f}")
            raw = result.get("raw pg_restore | psql -1 (s)") or result.get("loaddata, whole process (s)")
            ours = result.get("ours restore_clinic, whole process (s)") or result.get(
                "ours json restore_clinic, whole process (s)"
            )
            print(f"  {'ratio ours / raw (whole process)':<45} {ours / raw:10.2f}")
    finally:
        from clinics.models import Clinic

        for schema in schemas:
            clinic = Clinic.objects.filter(schema_name=schema).first()
            if clinic:
                Restore.objects.filter(clinic=clinic).delete()
                Backup.objects.filter(clinic=clinic).delete()
                clinic.delete(force_drop=True)
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
