"""How long the readers of a clinic wait while it is restored (the clinic stays readable; only the swap blocks).

Run from the repository root, on a migrated database (``manage.py migrate_schemas --shared``):

    DATABASE_URL=postgresql://… .venv/bin/python bench/blocked_bench.py [--patients 300000] [--keep]

It creates (or, left by ``--keep``, reuses) a clinic ``blocked<patients>`` with
``clinics.demo.ensure_records`` and a superuser of its own, logs in, backs the clinic up
(pg), then runs ``manage.py restore_clinic`` in a child process while two readers loop:

* ``admin``: Django's test Client, logged in, ``GET /admin/dental/patient/`` on the clinic's domain;
* ``sql``: a psycopg session reading the patients as the admin list does (count, first page).

A read's wait is its latency minus the median latency of the same read during the 5 s
before the restore (same readers, same process: the GIL and the database are shared
alike); a read is *blocked* when it waited more than 100 ms (lock waits and CPU
contention from the restore alike; the lock sampling below tells them apart). Meanwhile
pg_stat_activity is sampled every 20 ms for sessions other than the restore's waiting on a
lock (``wait_event_type = 'Lock'``), which tells lock waits from CPU contention. The phases
of the restore are read from its catalog row. Progress on stderr, results on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench_setup import ROOT, start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-blocked-bench-")

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django_tenants.utils import schema_context  # noqa: E402

from backups import services  # noqa: E402
from backups.models import Backup, Restore  # noqa: E402
from backups.postgres import connect_separately  # noqa: E402
from clinics.demo import ensure_clinic, ensure_records  # noqa: E402
from clinics.models import Clinic  # noqa: E402

BLOCKED_S = 0.1  # a read that waited longer than this was blocked
BASELINE_S = 5.0  # of reads before the restore, under the same load
SAMPLE_S = 0.02
USERNAME, PASSWORD = "bench", "bench-password-only-for-this-clinic"


logging.getLogger("django.request").setLevel(logging.CRITICAL)  # every 503 would be logged as an error


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- The clinic -------------------------------------------------------------------------


def bench_clinic(schema: str, patients: int) -> Clinic:
    """The bench clinic with ``patients`` patients (and their records) and a superuser to log in with."""
    clinic = ensure_clinic(schema, f"Blocked bench {patients}")
    with schema_context(schema):
        started = time.perf_counter()
        added = ensure_records(patients=patients, seed=schema)
        if added:
            log(f"  {added} patients added in {time.perf_counter() - started:.1f} s")
        user_model = get_user_model()
        if not user_model.objects.filter(username=USERNAME).exists():
            user_model.objects.create_superuser(USERNAME, f"{USERNAME}@{schema}.example", PASSWORD)
    connection.set_schema_to_public()
    return clinic


def clinic_size(schema: str) -> tuple[int, float]:
    """(rows, MiB on disk) of the clinic's tables."""
    rows, size = 0, 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            [schema],
        )
        for table, table_size in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"')  # noqa: S608 - names from the catalog
            rows, size = rows + cursor.fetchone()[0], size + table_size
    return rows, size / 2**20


def domain_of(clinic: Clinic) -> str:
    return clinic.domains.get(is_primary=True).domain


# --- Readers ------------------------------------------------------------------------------


@dataclass
class Reader:
    """A loop of one kind of read, timed one by one."""

    name: str
    read: Callable[[], int]  # performs one read, returns an HTTP-like status
    close: Callable[[], None] = lambda: None
    pause: float = 0.0  # between reads, so that one reader does not starve the other of the GIL
    reads: list[tuple[float, float, int]] = field(default_factory=list)  # (start, seconds, status)

    def loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                start = time.perf_counter()
                status = self.read()
                self.reads.append((start, time.perf_counter() - start, status))
                stop.wait(self.pause)
        finally:
            self.close()

    def baseline(self, before: float) -> float:
        """Median latency of the reads that ended before ``before`` (the clinic idle, same load)."""
        return statistics.median(seconds for at, seconds, _ in self.reads if at + seconds < before)


def admin_reader(domain: str) -> Reader:
    """The clinic's patient list through Django's test Client, logged in (a session of the backup)."""
    client = Client(HTTP_HOST=domain)
    if client.post("/admin/login/", {"username": USERNAME, "password": PASSWORD}).status_code != 302:
        raise SystemExit("could not log in to the bench clinic")

    def read() -> int:
        return client.get("/admin/dental/patient/").status_code

    return Reader("admin", read, close=lambda: connection.close())  # the reading thread's connection


def sql_reader(schema: str) -> Reader:
    """The patient list as the admin reads it, on a psycopg session of its own."""
    conn = connect_separately(autocommit=True, application_name="blocked-bench-sql")
    conn.execute(f'SET search_path TO "{schema}", public')

    def read() -> int:
        conn.execute("SELECT count(*) FROM dental_patient").fetchone()
        conn.execute("SELECT * FROM dental_patient ORDER BY last_name, first_name, id DESC LIMIT 100").fetchall()
        return 200

    return Reader("sql", read, close=conn.close, pause=0.01)


class LockSampler:
    """Samples pg_stat_activity: sessions (not the restore's) waiting on a lock, per application name."""

    def __init__(self) -> None:
        self.waits: dict[str, float] = {}
        self._conn = connect_separately(autocommit=True, application_name="blocked-bench-sampler")

    def loop(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(SAMPLE_S):
                for (name,) in self._conn.execute(
                    "SELECT coalesce(nullif(application_name, ''), 'django') FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND application_name NOT LIKE 'respaldo-restore-%'"
                ).fetchall():
                    self.waits[name] = self.waits.get(name, 0.0) + SAMPLE_S
        finally:
            self._conn.close()


# --- The restore --------------------------------------------------------------------------


def make_backup(schema: str) -> Backup:
    row = services.backup_run(backup_id=services.backup_request(clinic=schema, enqueue=False).pk)
    if row.status != "succeeded":
        raise SystemExit(f"backup failed: {row.error}")
    return row


@dataclass
class Timeline:
    """When the restore process ran, and when its row entered each phase (perf_counter seconds)."""

    started: float
    ended: float = 0.0
    phases: list[tuple[str, float]] = field(default_factory=list)

    def window(self, phase: str) -> tuple[float, float]:
        """(start, end) of ``phase``, as polled; (0, 0) if it was never seen."""
        ends = [at for _, at in self.phases[1:]] + [self.ended]
        return next(((at, end) for (name, at), end in zip(self.phases, ends, strict=True) if name == phase), (0, 0))

    @property
    def job(self) -> tuple[float, float]:
        """From the first phase seen (the job claimed) to its end."""
        return self.phases[0][1], self.window("(succeeded)")[0] or self.ended


def run_restore(clinic: Clinic, backup: Backup) -> Timeline:
    """``manage.py restore_clinic`` in a child process, its row's phase polled every 20 ms."""
    timeline = Timeline(time.perf_counter())
    child = subprocess.Popen(
        [sys.executable, "manage.py", "restore_clinic", clinic.schema_name, "--backup", str(backup.pk), "--yes"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    while child.poll() is None:
        row = Restore.objects.filter(clinic=clinic, backup=backup).order_by("-pk").first()
        if row is None or row.status == "pending":
            phase = ""
        else:
            phase = row.progress_phase if row.status == "running" else f"({row.status})"
        if phase and (not timeline.phases or timeline.phases[-1][0] != phase):
            timeline.phases.append((phase, time.perf_counter()))
        time.sleep(0.02)
    timeline.ended = time.perf_counter()
    if child.returncode != 0:
        raise SystemExit(f"restore_clinic failed with status {child.returncode}")
    return timeline


def overlapping(reads: list[tuple[float, float, int]], window: tuple[float, float]) -> list[tuple[float, float, int]]:
    return [r for r in reads if r[0] < window[1] and r[0] + r[1] > window[0]]


def report(reader: Reader, timeline: Timeline) -> None:
    """One reader's figures over the restore job."""
    baseline = reader.baseline(timeline.started)
    job = timeline.job
    reads = overlapping(reader.reads, job)
    waits = [(seconds - baseline, at, seconds) for at, seconds, _ in reads]
    blocked = [w for w in waits if w[0] > BLOCKED_S]
    in_swap = overlapping([(at, seconds, 0) for _, at, seconds in blocked], timeline.window("swapping"))
    closed = [(at, at + seconds) for at, seconds, status in reads if status == 503]
    latencies = [seconds for _, seconds, _ in reads] or [0.0]
    total_blocked = sum(w for w, _, _ in blocked)
    rows = [
        ("latency before the restore (median, ms)", baseline * 1000),
        ("latency during the restore (median, ms)", statistics.median(latencies) * 1000),
        ("latency during the restore (max, ms)", max(latencies) * 1000),
        ("longest wait of a single read (s)", max((w for w, _, _ in waits), default=0.0)),
        ("blocked reads (waited > 100 ms)", len(blocked)),
        ("total time reads were blocked (s)", total_blocked),
        ("  of which by reads overlapping the swap (s)", sum(s - baseline for _, s, _ in in_swap)),
        ("answered 503", len(closed)),
        ("pages closed, first to last 503 (s)", closed[-1][1] - closed[0][0] if closed else 0.0),
        ("ratio blocked / whole restore job", total_blocked / (job[1] - job[0])),
    ]
    print(f"\n{reader.name} reads during the restore job: {len(reads)}")
    for label, value in rows:
        print(f"  {label:<48} {value:10d}" if isinstance(value, int) else f"  {label:<48} {value:10.3f}")


def print_timeline(timeline: Timeline) -> None:
    job = timeline.job
    print(f"\n{'whole restore, restore_clinic process (s)':<50} {timeline.ended - timeline.started:10.2f}")
    print(f"{'whole restore job, claimed to succeeded (s)':<50} {job[1] - job[0]:10.2f}")
    for phase, _ in timeline.phases:
        start, end = timeline.window(phase)
        print(f"  phase {phase:<20} at {start - job[0]:7.2f} s, for {end - start:7.3f} s (polled every 20 ms)")


def measure(clinic: Clinic) -> None:
    """Readers logged in (their session is in the backup), a backup, then the restore while they read."""
    readers = [admin_reader(domain_of(clinic)), sql_reader(clinic.schema_name)]
    log("backing up …")
    backup = make_backup(clinic.schema_name)
    connection.close()  # the admin reader's thread opens its own
    stop, sampler = threading.Event(), LockSampler()
    threads = [threading.Thread(target=r.loop, args=(stop,)) for r in readers]
    threads.append(threading.Thread(target=sampler.loop, args=(stop,)))
    for thread in threads:
        thread.start()
    try:
        log(f"reading for {BASELINE_S:.0f} s before the restore (the baseline) …")
        time.sleep(BASELINE_S)
        sampler.waits.clear()
        log("restoring …")
        timeline = run_restore(clinic, backup)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print_timeline(timeline)
    for reader in readers:
        report(reader, timeline)
    waits = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(sampler.waits.items())) or "none"
    print(f"\nsessions seen waiting on a lock (pg_stat_activity every {SAMPLE_S * 1000:.0f} ms): {waits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the bench clinic for the next run")
    args = parser.parse_args()
    schema = f"blocked{args.patients}"  # no "_": it is also the clinic's host name
    log("seeding …")
    clinic = bench_clinic(schema, args.patients)
    try:
        rows, mib = clinic_size(schema)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(f"Respaldo blocked-readers bench   nproc: {os.cpu_count()}   PostgreSQL {version}")
        print(f"clinic {schema}: {args.patients} patients, {rows} rows, {mib:.0f} MiB")
        measure(clinic)
    finally:
        Restore.objects.filter(clinic=clinic).delete()
        Backup.objects.filter(clinic=clinic).delete()
        if not args.keep:
            clinic.delete(force_drop=True)


if __name__ == "__main__":
    main()
