"""The scale group (a mixin of ``run.Bench``, issue 28): what one small clinic's backup, drill
and restore cost as the database holds more clinics, against raw ``pg_dump -n`` and ``COPY``.

The database is grown to each scale point (the clinic schemas in it, ``public`` and the
system's not counted) with copies of the small clinic's schema made in SQL, not by
migrations: per copy ``CREATE SCHEMA``, ``CREATE TABLE … (LIKE <template>.<table> INCLUDING
ALL)`` for each of its tables (columns, defaults, identity sequences, checks, indexes, primary
and unique keys) and its foreign keys re-added from ``pg_get_constraintdef``, empty
(``backups/tests/clinic_copies.py``, which the tests of the night use too). Then the system
catalogs are analyzed, as autovacuum would soon do: with stale catalog statistics pg_dump
16's query for materialized views' dependencies runs in ≈ 1 s at 1,000 clinics, analyzed it
joins every view rule's dependency with every table's (≈ 58M rows, ≈ 9 s), and without the
ANALYZE the plan flipped in the middle of a run. At each point the measured steps run
``repeats`` times, their order rotated. The copies are ``benchz00001``…
and are dropped at cleanup (kept with ``--keep``, and reused or trimmed by the next run).
"""

# ruff: noqa: S608, S604 - bench-made SQL and shell lines, from fixed names and our own paths

from __future__ import annotations

import re
import time

from django.db import connection
from fixtures import make_backup
from sampling import Sample, python_child, run_tree, timed
from startup import TMP, log

from backups import storage
from backups.models import Backup, JobStatus
from backups.postgres import connect_separately
from backups.services.backup import backup_request, backup_run
from backups.tests.clinic_copies import drop_copies, make_copies
from clinics.models import Clinic

SCALE_PREFIX = "benchz"
# clinic schemas in the database at each point; the target is at 10,000 vs at 10
SCALE_POINTS = {"XS": [5, 50], "S": [10, 1000], "M": [10, 1000, 10000]}
SCALE_TEMPLATE = "benchtiny"  # the measured clinic (40 patients) and the copies' template
SYSTEM_SCHEMAS = "nspname NOT LIKE 'pg\\_%%' AND nspname NOT IN ('information_schema', 'public')"


def clinic_schemas() -> int:
    """The clinic schemas in the database (every schema but ``public`` and the system's)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM pg_namespace WHERE {SYSTEM_SCHEMAS}")
        return cursor.fetchone()[0]


def scale_copies() -> list[str]:
    """The scale group's copies in the database, by number."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1", [SCALE_PREFIX + "%"])
        return [name for (name,) in cursor.fetchall()]


def drop_scale_clinics() -> None:
    """Drop every copy the scale group made (also those of a run that failed half-way)."""
    connection.set_schema_to_public()
    names = set(scale_copies())
    names |= set(Clinic.objects.filter(schema_name__startswith=SCALE_PREFIX).values_list("schema_name", flat=True))
    if names:
        started = time.perf_counter()
        drop_copies(sorted(names))
        log(f"scale: dropped {len(names)} copies in {time.perf_counter() - started:.1f} s")


def analyze_catalog() -> None:
    """``ANALYZE`` of every system catalog table (the statistics autovacuum keeps in a live database)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace AND relkind = 'r'"
        )
        cursor.execute("ANALYZE " + ", ".join(name for (name,) in cursor.fetchall()))


def grow_to(point: int) -> tuple[int, float]:
    """Make or drop copies so that the database holds ``point`` clinic schemas (or as near as the
    copies allow), then analyze the catalogs; the schemas it holds and the seconds spent."""
    started = time.perf_counter()
    have = clinic_schemas()
    copies = scale_copies()
    if have > point and copies:
        drop_copies(copies[-min(have - point, len(copies)) :])
    elif have < point:
        last = int(copies[-1][len(SCALE_PREFIX) :]) if copies else 0
        names = [f"{SCALE_PREFIX}{n:05d}" for n in range(last + 1, last + 1 + point - have)]
        make_copies(SCALE_TEMPLATE, names, name_prefix="Bench scale")
    seconds = time.perf_counter() - started
    analyze_catalog()
    held = clinic_schemas()
    log(
        f"scale: {held:,} clinic schemas ({held - have:+,} in {seconds:.1f} s, "
        f"catalog analyzed in {time.perf_counter() - started - seconds:.1f} s)"
    )
    return held, seconds


class ScaleSteps:
    """The scale group; uses the bench's ``tools``, ``env``, ``scale_points`` and ``run_steps``."""

    def setup_scale(self) -> None:
        """The measured clinic's backup, made before any copy (what the drill and the restore use)."""
        self.scale_backup = make_backup(SCALE_TEMPLATE)
        self.info["scale"] = {"clinic": SCALE_TEMPLATE, "points": {}}

    def run_scale(self, repeats: int) -> None:
        """At each scale point, in ascending order: grow the database to it, then its steps ``repeats`` times."""
        for point in sorted(self.scale_points):
            held, seconds = grow_to(point)
            self.info["scale"]["points"][point] = {"clinic schemas": held, "grown in s": round(seconds, 1)}
            self.scale_notes = {"clinic schemas": held, "copies made or dropped in s": round(seconds, 1)}
            at = f"at {point:,} clinics"
            steps = [
                (f"scale pg_dump, {at}", lambda at=at: self.scale_pg_dump(at)),
                (f"scale COPY, {at}", lambda at=at: self.scale_copy(at)),
                (f"scale backup, {at}", lambda at=at: self.scale_ours_backup(at)),
                (f"scale drill, {at}", lambda at=at: self.scale_drill(at)),
                (f"scale restore, {at}", lambda at=at: self.scale_restore(at)),
            ]
            self.run_steps(steps, repeats, f"{point:,} clinics, ")

    def scale_pg_dump(self, at: str) -> dict[str, Sample]:
        out = TMP / "scale.dump"
        sample = run_tree(
            f"{self.tools.pg_dump} --format=custom -Z0 --schema='{SCALE_TEMPLATE}' --no-owner --no-privileges -f {out}",
            shell=True,
            env=self.env,
        )
        sample.size = out.stat().st_size
        sample.notes.pop("stdout")
        sample.notes.update(self.scale_notes)
        out.unlink()
        return {f"scale: raw pg_dump -Fc -Z0 -n one clinic, {at}": sample}

    def scale_copy(self, at: str) -> dict[str, Sample]:
        """Connect, list the clinic's tables, ``COPY … TO STDOUT`` each in one REPEATABLE READ snapshot."""
        size = 0

        def run() -> None:
            nonlocal size
            conn = connect_separately(autocommit=False, application_name="bench-scale-copy")
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    cursor.execute(
                        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'r'",
                        [SCALE_TEMPLATE],
                    )
                    for (table,) in cursor.fetchall():
                        with cursor.copy(f'COPY "{SCALE_TEMPLATE}"."{table}" TO STDOUT') as copy:
                            for block in copy:
                                size += len(block)
                conn.rollback()
            finally:
                conn.close()

        sample = timed(run)
        sample.size = size
        return {f"scale: COPY of its tables in one snapshot (in-process), {at}": sample}

    def scale_ours_backup(self, at: str) -> dict[str, Sample]:
        """``backup_request`` + ``backup_run`` in this process (no start-up); the archive is then deleted."""
        rows: list[Backup] = []

        def run() -> None:
            request = backup_request(clinic=SCALE_TEMPLATE, payload_format="pg", requested_by="bench", enqueue=False)
            rows.append(backup_run(backup_id=request.pk))

        sample = timed(run)
        row = rows[0]
        if row.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"backup #{row.pk} failed: {row.error}")
        sample.size = row.size
        sample.notes["job s"] = round(row.duration.total_seconds(), 3)
        storage.delete_stored(row.storage_name)
        row.delete()
        connection.set_schema_to_public()
        return {f"scale: ours backup, request + run (in-process), {at}": sample}

    def scale_drill(self, at: str) -> dict[str, Sample]:
        """``drills.drill`` of the clinic's backup in a fresh process; the call's own seconds."""
        sample = python_child(
            "import time\n"
            "from backups.operations import drills\n"
            "started = time.perf_counter()\n"
            f"b = drills.drill({self.scale_backup.pk})\n"
            "print('#seconds', time.perf_counter() - started)\n"
            "assert b.drill_status == drills.SUCCEEDED, b.drill_error\n"
        )
        call = float(re.search(r"#seconds (\S+)", sample.notes.pop("stdout")).group(1))
        notes = {"whole process s": round(sample.seconds, 3), **sample.notes}
        return {f"scale: ours drill, the drill call (no start-up), {at}": Sample(call, peak=sample.peak, notes=notes)}

    def scale_restore(self, at: str) -> dict[str, Sample]:
        """``manage.py restore_clinic`` of the clinic's backup; the job's seconds, its safety backup included."""
        sample, restore = self.restore_child(self.scale_backup)
        safety = restore.safety_backup.duration.total_seconds() if restore.safety_backup else 0.0
        notes = {"whole process s": round(sample.seconds, 3), "safety backup s": round(safety, 3)}
        job = Sample(restore.duration.total_seconds(), peak=sample.peak, notes=notes)
        self.cleanup_restore(restore)
        connection.set_schema_to_public()
        return {f"scale: ours restore, job incl. safety backup, {at}": job}
