"""Respaldo's benchmark: our backup, restore, drill, json, clone, pages, a night of many
clinics and one clinic's costs as the database grows (scale), each measured side by side with
the raw tool it replaces, in the same run.

Run from the repository root:

    .venv/bin/python bench/run.py --size XS|S|M [--repeats 3] [--only backup,restore,...] [--keep]
    .venv/bin/python bench/run.py --size S --only scale --scale 10,1000,10000

Every step of every selected group runs once per repeat, round-robin (the order rotates each
repeat), so a noisy neighbour hurts all competitors alike; the scale group runs last, its
steps round-robin at each of its scale points in turn. Prints one markdown table (min and
median seconds, ratio to the row it is compared with, peak memory of the measured process
tree, output size, the issue's target and a pass/miss mark) and writes the same as JSON to
``bench/results/<timestamp>-<size>.json`` (compare two with ``bench/compare.py``).
Progress goes to stderr. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import MB, ROOT, TMP, log  # noqa: E402 - first: it starts Django; bench/ is the script's folder

# isort: split
import generate  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from fixtures import (  # noqa: E402
    drop_clinic,
    drop_leftover_schemas,
    forget_jobs,
    make_backup,
    payload_to_file,
    stored_to_file,
)
from report import print_table, summarize  # noqa: E402
from sampling import Sample  # noqa: E402
from steps_backup import BackupSteps  # noqa: E402
from steps_clinics import CloneSteps, ManySteps  # noqa: E402
from steps_json import JsonSteps  # noqa: E402
from steps_pages import PageSteps  # noqa: E402
from steps_restore import RestoreSteps  # noqa: E402
from steps_scale import SCALE_POINTS, ScaleSteps, drop_scale_clinics  # noqa: E402

from backups.models import ClinicKey  # noqa: E402
from backups.postgres import find_pg_tools, libpq_environment  # noqa: E402
from clinics.models import Clinic  # noqa: E402

GROUPS = ["backup", "restore", "drill", "blocked", "upload", "json", "clone", "pages", "many", "scale"]
# With 1,000 schemas in a database, pg_dump of any one takes ~1 s (its catalog queries read them all):
# 1,000 clinics is the M run's night (~1 hour for 3 repeats on 2 cores); S keeps "a few minutes".
MANY_CLINICS = {"XS": 20, "S": 100, "M": 1000}
# the json group's own clinic: ≈ 8 rows per patient (≥ 60k rows at S and M; small at XS, for CI's
# sake: Django's dumpdata and loaddata, its baselines, take minutes at 60k rows)
JSON_PATIENTS = {"XS": 1500, "S": 7500, "M": 7500}


class Bench(BackupSteps, RestoreSteps, JsonSteps, CloneSteps, ManySteps, PageSteps, ScaleSteps):
    """One bench run: its clinics (set up once), its steps (one list over the selected groups,
    from each group's ``steps_<group>``; the scale group's per scale point), the samples
    measured, and the cleaning up."""

    def __init__(self, size: str, groups: list[str], many: int, scale_points: list[int] | None = None):
        self.size, self.groups, self.many = size, groups, many
        self.scale_points = scale_points or SCALE_POINTS[size]
        self.tools = find_pg_tools()
        self.env = libpq_environment()
        self.schema = f"bench{size.lower()}"
        self.json_schema = "benchjson"
        self.info: dict = {}
        self.steps: list[tuple[str, Callable[[], dict[str, Sample]]]] = []
        self.results: dict[str, list[Sample]] = {}
        self.made_schemas: list[str] = []
        self.done_once: set[str] = set()
        self.missing: list[str] = []
        self.server: subprocess.Popen | None = None  # gunicorn, for the pages
        self.server_base = ""

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Generate or reuse the clinics and backups the selected groups need; collect their steps."""
        # Reused bench clinics' archive keys are wrapped with an earlier run's throw-away key: new ones.
        ClinicKey.objects.filter(clinic__schema_name__startswith="bench").delete()
        if set(self.groups) - {"scale"}:  # the scale group measures the small clinic only
            self.info["clinic"] = generate.generate(self.schema, self.size, log=log)
            self.made_schemas.append(self.schema)
            forget_jobs(Clinic.objects.get(schema_name=self.schema))
        if "pages" in self.groups:  # before the backup that restores bring back: it must hold the user
            self.setup_users()
        needs_pg_backup = {"restore", "drill", "blocked", "upload"} & set(self.groups)
        if needs_pg_backup:
            self.pg_backup = make_backup(self.schema)
            # the raw tools' restore reads pg_dump's own file; our payload (a plain SQL script since
            # issue 28) is restored by hand with psql alone, its own row
            self.script = TMP / "raw.sql"
            payload_to_file(self.pg_backup, self.script)
            self.dump = TMP / "raw.dump"
            subprocess.run(
                [
                    self.tools.pg_dump,
                    "--format=custom",
                    "-Z0",
                    f"--schema={self.schema}",
                    "--no-owner",
                    "--no-privileges",
                    "-f",
                    str(self.dump),
                ],
                env=self.env,
                check=True,
            )
            self.info["dump_bytes"] = self.dump.stat().st_size
            self.info["script_bytes"] = self.script.stat().st_size
        if "json" in self.groups:
            patients = JSON_PATIENTS[self.size]
            self.info["json_clinic"] = generate.generate(self.json_schema, "JSON", patients=patients, log=log)
            self.made_schemas.append(self.json_schema)
            forget_jobs(Clinic.objects.get(schema_name=self.json_schema))
            self.json_backup = make_backup(self.json_schema, "json")
            self.json_fingerprint = generate.fingerprint(self.json_schema)
        if {"clone", "many", "scale"} & set(self.groups):
            self.info["tiny_clinic"] = generate.generate("benchtiny", "TINY", log=log)
            self.made_schemas.append("benchtiny")
            forget_jobs(Clinic.objects.get(schema_name="benchtiny"))
        if "clone" in self.groups:
            self.tiny_backup = make_backup("benchtiny")
        if "upload" in self.groups:
            self.upload_file = TMP / "upload.respaldo"
            stored_to_file(self.pg_backup, self.upload_file)
        if "many" in self.groups:
            self.many_schemas = generate.clone_clinics("benchtiny", "benchq", self.many, log=log)
            self.made_schemas += self.many_schemas
        if "pages" in self.groups:
            self.setup_pages()
        if "scale" in self.groups:
            self.setup_scale()
        connection.set_schema_to_public()
        self.steps = [s for g in self.groups if g != "scale" for s in getattr(self, f"steps_{g}")()]

    # -- running -----------------------------------------------------------------------------

    def run(self, repeats: int) -> None:
        """The selected groups' steps, interleaved; then the scale group (the many clinics dropped
        first: the scale points count the clinic schemas in the database)."""
        self.run_steps(self.steps, repeats)
        if "scale" in self.groups:
            self.drop_many_clinics()
            self.run_scale(repeats)

    def run_steps(self, steps: list, repeats: int, where: str = "") -> None:
        """Every step ``repeats`` times, the order rotated each repeat; a failed step becomes a FAILED row."""
        for r in range(repeats if steps else 0):
            shift = r % len(steps)
            order = steps[shift:] + steps[:shift]
            for label, step in order:
                log(f"{where}repeat {r + 1}/{repeats}: {label}")
                try:
                    measured = step()
                except Exception as exc:
                    log(f"  {label} failed: {exc}")
                    self.results.setdefault(f"FAILED {label}", []).append(
                        Sample(float("nan"), notes={"error": str(exc)[:300]})
                    )
                    connection.set_schema_to_public()
                    continue
                for name, sample in measured.items():
                    self.results.setdefault(name, []).append(sample)

    def cleanup(self, keep: bool) -> None:
        """Stop the page server, drop the catalog and the many clinics, and the bench clinics unless ``keep``."""
        self.stop_page_server()
        connection.set_schema_to_public()
        if "pages" in self.groups:
            self.drop_catalog()
        self.drop_many_clinics()
        if "scale" in self.groups and not keep:
            drop_scale_clinics()
        for schema in self.made_schemas:
            clinic = Clinic.objects.filter(schema_name=schema).first()
            if clinic is None:
                continue
            if keep and not schema.startswith("benchq"):
                forget_jobs(clinic)
            else:
                drop_clinic(schema)
            drop_leftover_schemas(schema)

    def drop_many_clinics(self) -> None:
        """The many group's clinics, also those of a run that failed half-way."""
        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'benchq%%'")
            clones = {name for (name,) in cursor.fetchall()}
        clones |= set(Clinic.objects.filter(schema_name__startswith="benchq").values_list("schema_name", flat=True))
        for schema in sorted(clones):
            drop_clinic(schema)


def main() -> int:
    """Parse the arguments, run the bench, print the table and write the JSON; 1 when a step failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["XS", "S", "M"], default="S")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", "--groups", default="", help=f"comma-separated groups of: {','.join(GROUPS)}")
    parser.add_argument(
        "--clinics", type=int, default=0, help="clinics for the 'many' group (default: XS 20, S 100, M 1000)"
    )
    parser.add_argument(
        "--scale",
        default="",
        help="the scale group's points, clinic schemas in the database (default: XS 5,50, S 10,1000, M 10,1000,10000)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the generated clinics (and the scale group's copies) for the next run"
    )
    args = parser.parse_args()
    groups = [g for g in args.only.split(",") if g] or GROUPS
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; known: {GROUPS}")
    started = time.perf_counter()
    try:
        points = [int(p.replace("_", "")) for p in args.scale.split(",") if p]
    except ValueError:
        parser.error(f"--scale takes comma-separated numbers, not {args.scale!r}")
    bench = Bench(args.size, groups, args.clinics or MANY_CLINICS[args.size], points)
    try:
        bench.setup()
        bench.run(args.repeats)
        rows = summarize(bench.results, bench.many, bench.missing)
        bench.info.setdefault("clinic", bench.info.get("tiny_clinic"))
    finally:
        bench.cleanup(args.keep)
        shutil.rmtree(TMP, ignore_errors=True)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    clinic = bench.info["clinic"]
    header = (
        f"Respaldo bench, size {args.size}: {clinic['schema']} {clinic['rows']:,} rows, "
        f"{clinic['disk_bytes'] / MB:.0f} MiB on disk; {args.repeats} repeats interleaved; "
        f"nproc {len(os.sched_getaffinity(0))}; PostgreSQL {server}; pg_dump {bench.tools.version}"
    )
    print(header + "\n")
    print_table(rows)
    total = time.perf_counter() - started
    print(f"\ntotal bench time {total:.0f} s")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.size}.json"
    db = settings.DATABASES["default"]
    out.write_text(
        json.dumps(
            {
                "size": args.size,
                "repeats": args.repeats,
                "groups": groups,
                "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "host": platform.node(),
                "nproc": len(os.sched_getaffinity(0)),
                "postgres": server,
                "database": "embedded" if settings.EMBEDDED_DATABASE else f"{db['HOST']}:{db['PORT']}",
                "info": bench.info,
                "rows": rows,
                "total_seconds": total,
            },
            indent=1,
            default=str,
        )
    )
    print(f"results: {out.relative_to(ROOT)}")
    failed = [r for r in rows if r["step"].startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
