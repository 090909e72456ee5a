"""Benchmark our backups against raw pg_dump, on dedicated bench clinics of growing size.

Run from the repository root:  .venv/bin/python bench/backup_bench.py [--sizes 20000,100000] [--keep]
Progress goes to stderr, the result table to stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench_setup import ROOT, start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-bench-")

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django_tenants.utils import schema_context  # noqa: E402

from backups import storage  # noqa: E402
from backups.models import Backup, JobStatus  # noqa: E402
from backups.postgres import (  # noqa: E402
    PgTools,
    PgToolsError,
    find_pg_tools,
    libpq_environment,  # noqa: E402
)
from clinics.demo import ensure_clinic, ensure_records  # noqa: E402
from clinics.models import Clinic  # noqa: E402

# Runs `manage.py <args>` in this process, then writes its own peak RSS (KiB) to a file.
LAUNCHER = """
import resource, runpy, sys
usage_file, sys.argv = sys.argv[1], ["manage.py", *sys.argv[2:]]
try:
    runpy.run_path("manage.py", run_name="__main__")
finally:
    with open(usage_file, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""
# A process's ru_maxrss starts at its parent's RSS at fork time (the kernel keeps the old
# hiwater over exec), so a child of this big process would report at least our own size.
# GNU time is a tiny parent: under it, ru_maxrss is the measured program's own peak.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
METHODS = ["pg_dump -Fc", "pg_dump -Fc -Z0 | zstd -3", "ours pg", "ours json"]


class BenchError(Exception):
    """A step of the bench failed; the message says which and why."""


@dataclass
class Sample:
    """One measurement: wall time (s), output size (bytes), peak RSS (KiB) and extras."""

    seconds: float
    size: int
    rss: int
    zstd_rss: int = 0
    pg_dump_rss: int = 0
    job_seconds: float = 0.0


class PgDumpSampler(threading.Thread):
    """Samples the VmHWM (KiB) of the pg_dump that a child (or grandchild) of ``root`` runs.

    pg_dump's own ru_maxrss would start at the Python process's RSS (see GNU_TIME), but
    VmHWM is the high-water mark of pg_dump's own address space. It only grows, so the last
    sample before pg_dump exits is (all but) its peak. Scans /proc only until pg_dump is found.
    """

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak, self.pid, self.done = root, 0, "", threading.Event()

    @staticmethod
    def _stat(pid: str) -> tuple[str, int]:
        """(command name, parent pid) of ``pid``."""
        comm, fields = Path(f"/proc/{pid}/stat").read_text().split(" (", 1)[1].rsplit(") ", 1)
        return comm, int(fields.split()[1])

    def _find(self) -> str:
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                comm, parent = self._stat(entry.name)
                if comm == "pg_dump" and self.root in (parent, self._stat(str(parent))[1]):
                    return entry.name
        return ""

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.pid = self.pid or self._find()
            try:
                hwm = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{self.pid}/status").read_text()) if self.pid else None
            except OSError:  # gone: look for the next one
                self.pid, hwm = "", None
            self.peak = max(self.peak, int(hwm.group(1)) if hwm else 0)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spawn(args: list[str], name: str, err: IO[bytes], **kwargs) -> tuple[subprocess.Popen, Path]:
    """Start ``args`` (under GNU time when present); return the process and where its peak RSS goes."""
    rss_file = TMP / f"{name}.rss"
    rss_file.unlink(missing_ok=True)
    prefix = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if GNU_TIME else []
    return subprocess.Popen([*prefix, *args], stderr=err, start_new_session=True, **kwargs), rss_file


def wait(proc: subprocess.Popen, rss_file: Path, err: IO[bytes], what: str) -> int:
    """Reap ``proc``; return its peak RSS in KiB, or raise BenchError (with its stderr) if it failed."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # e.g. Ctrl-C: stop the whole child process group, then reap it
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err.seek(0)
        raise BenchError(f"{what} exited with {proc.returncode}: {err.read().decode(errors='replace')[-2000:]}")
    return int(rss_file.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss


def raw_dump(tools: PgTools, schema: str, *, zstd: str | None) -> Sample:
    """pg_dump -Fc to a file (default compression), or with -Z0 piped through ``zstd -3``."""
    out = TMP / f"{schema}.dump"
    args = [tools.pg_dump, "--format=custom", f'--schema="{schema}"', "--no-owner", "--no-privileges"]
    env = libpq_environment()
    with tempfile.TemporaryFile() as err, out.open("wb") as sink:
        start = time.perf_counter()
        if zstd is None:
            rss, zstd_rss = wait(*spawn(args, "pg_dump", err, stdout=sink, env=env), err, "pg_dump"), 0
        else:
            dump, dump_rss = spawn([*args, "-Z0"], "pg_dump", err, stdout=subprocess.PIPE, env=env)
            comp, comp_rss = spawn([zstd, "-3", "-q", "-c"], "zstd", err, stdin=dump.stdout, stdout=sink)
            dump.stdout.close()
            rss, zstd_rss = wait(dump, dump_rss, err, "pg_dump -Z0"), wait(comp, comp_rss, err, "zstd")
        seconds = time.perf_counter() - start
    size = out.stat().st_size
    out.unlink()
    return Sample(seconds, size, rss, zstd_rss)


def our_backup(schema: str, payload_format: str) -> Sample:
    """`manage.py backup_clinic` in a fresh child process; its archive is deleted afterwards."""
    usage_file = TMP / "python.rss"
    args = [sys.executable, "-c", LAUNCHER, str(usage_file), "backup_clinic", schema, "--format", payload_format]
    what = f"backup_clinic {schema} --format {payload_format}"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc, rss_file = spawn([*args, "--requested-by", "bench"], "backup", err, cwd=ROOT, stdout=out)
        sampler = PgDumpSampler(proc.pid)
        sampler.start()
        try:
            wait(proc, rss_file, err, what)
        finally:
            sampler.done.set()
            sampler.join()
        seconds = time.perf_counter() - start
        out.seek(0)
        found = re.search(rb"^#(\d+) ", out.read(), re.MULTILINE)
    if not found:
        raise BenchError(f"{what} printed no backup id.")
    backup = Backup.objects.get(pk=int(found.group(1)))
    if backup.status != JobStatus.SUCCEEDED:
        raise BenchError(f"Backup #{backup.pk} did not succeed: {backup.status} {backup.error}")
    storage.delete_stored(backup.storage_name)
    backup.delete()
    rss = int(usage_file.read_text())
    return Sample(seconds, backup.size, rss, pg_dump_rss=sampler.peak, job_seconds=backup.duration.total_seconds())


def prepare_clinic(size: int, clinics: list[Clinic]) -> float:
    """Create (or reuse) clinic ``bench_<size>`` with ``size`` patients, add it to ``clinics``; return seed time."""
    schema = f"bench_{size}"
    start = time.perf_counter()
    clinics.append(ensure_clinic(schema, f"Bench {size}"))
    with schema_context(schema):
        added = ensure_records(patients=size, seed=schema)
    seconds = time.perf_counter() - start
    log(f"{schema}: {f'seeded {added} patients' if added else 'reused'} in {seconds:.1f} s")
    return seconds


def measure(method: str, schema: str, tools: PgTools, zstd: str | None) -> Sample:
    """Run one measurement of ``method`` (one of METHODS) on ``schema``."""
    if method.startswith("ours "):
        return our_backup(schema, method.removeprefix("ours "))
    return raw_dump(tools, schema, zstd=zstd if "zstd" in method else None)


def schema_stats(schema: str) -> tuple[dict[str, int], int]:
    """Row count per table and on-disk size (tables + indexes + TOAST) of ``schema``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            [schema],
        )
        tables = cursor.fetchall()
        counts = {}
        for table, _ in tables:
            name = f"{connection.ops.quote_name(schema)}.{connection.ops.quote_name(table)}"
            cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 -- quoted names read from pg_class
            counts[table] = cursor.fetchone()[0]
    return counts, sum(size for _, size in tables)


def drop_clinic(clinic: Clinic) -> None:
    """Remove a bench clinic: its catalog rows and archives, then its schema."""
    for backup in Backup.objects.filter(clinic=clinic):
        if backup.storage_name:
            storage.delete_stored(backup.storage_name)
        backup.delete()
    clinic.delete(force_drop=True)
    log(f"{clinic.schema_name}: dropped")


def mib(count: float, *, unit: int = 1) -> str:
    """``count`` units of ``unit`` bytes, in MiB."""
    return f"{count * unit / 2**20:.1f} MiB"


def print_report(sizes: list[int], info: dict, results: dict, tools: PgTools, repeats: int) -> None:
    """Print the whole result as plain-text tables, one column per clinic size."""

    def row(label: str, cell: Callable[[int], str]) -> None:
        print(f"{label:<46}" + "".join(f"{cell(size):>16}" for size in sizes))

    def med(size: int, method: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in results[size, method])

    def peak(size: int, method: str, attr: str = "rss") -> str:
        return mib(max(getattr(s, attr) for s in results[size, method]), unit=1024)  # ru_maxrss is in KiB

    def ratio(method: str, attr: str, base: str = "pg_dump -Fc", base_attr: str = "") -> Callable[[int], str]:
        return lambda s: f"x{med(s, method, attr) / med(s, base, base_attr or attr):.2f}"

    def method_rows(m: str) -> None:
        ours = m.startswith("ours")
        row(f"{m}: wall time" + (" (whole process)" if ours else ""), lambda s: f"{med(s, m, 'seconds'):.2f} s")
        if ours:
            row(f"{m}: job time (catalog start->end)", lambda s: f"{med(s, m, 'job_seconds'):.2f} s")
        row(f"{m}: output size", lambda s: mib(med(s, m, "size")))
        if m == "pg_dump -Fc -Z0 | zstd -3":
            row(f"{m}: peak RSS pg_dump", lambda s: peak(s, m))
            row(f"{m}: peak RSS zstd", lambda s: peak(s, m, "zstd_rss"))
        else:
            row(f"{m}: peak RSS" + (" (python process)" if ours else " (pg_dump)"), lambda s: peak(s, m))
        if m == "ours pg":
            row(f"{m}: peak RSS of its pg_dump (sampled)", lambda s: peak(s, m, "pg_dump_rss"))

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    db = settings.DATABASES["default"]
    where = "embedded pgserver" if settings.EMBEDDED_DATABASE else f"{db['HOST']}:{db['PORT']}/{db['NAME']}"
    print(f"Respaldo backup bench, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"nproc: {len(os.sched_getaffinity(0))}    PostgreSQL server: {server} ({where})")
    print(f"pg_dump: {tools.version} ({tools.bin_dir})    zstd CLI: {shutil.which('zstd') or 'not found'}")
    how = "GNU time / getrusage, per process" if GNU_TIME else "wait4: includes this script's RSS (no GNU time)"
    print(f"times and sizes: median of {repeats} runs; peak RSS: max of {repeats} runs ({how})\n")
    row("clinic", lambda s: f"bench_{s}")
    for table in [t for t, n in info[sizes[-1]]["counts"].items() if n]:
        row(f"  rows: {table}", lambda s, t=table: f"{info[s]['counts'].get(t, 0):,}")
    row("  rows: all tables", lambda s: f"{sum(info[s]['counts'].values()):,}")
    row("  on-disk size (sum of pg_total_relation_size)", lambda s: mib(info[s]["disk"]))
    row("  seeding time in this run", lambda s: f"{info[s]['seed']:.1f} s")
    for method in METHODS:
        print()
        if (sizes[0], method) in results:
            method_rows(method)
        else:
            print(f"{method}: skipped (no zstd CLI)")
    print()
    for method in ("ours pg", "ours json"):
        row(f"{method} / pg_dump -Fc: wall time", ratio(method, "seconds"))
        row(f"{method} / pg_dump -Fc: job time", ratio(method, "job_seconds", base_attr="seconds"))
        row(f"{method} / pg_dump -Fc: size", ratio(method, "size"))
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        grew = info[large]["disk"] / info[small]["disk"]
        print(f"\npeak RSS of our backup process, bench_{small} -> bench_{large} (on-disk size x{grew:.1f}):")
        for method in ("ours pg", "ours json"):
            a, b = (max(s.rss for s in results[size, method]) for size in (small, large))
            print(f"  {method:<10} {mib(a, unit=1024)} -> {mib(b, unit=1024)} (x{b / a:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,100000", help="patients per bench clinic, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median is reported)")
    parser.add_argument("--keep", action="store_true", help="keep the bench clinics for the next run")
    args = parser.parse_args()
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not sizes or min(sizes) <= 0 or args.repeats < 1:
        parser.error("sizes and --repeats must be positive")
    started, clinics = time.perf_counter(), []
    try:
        tools, zstd = find_pg_tools(), shutil.which("zstd")
        methods = [m for m in METHODS if zstd or "zstd" not in m]
        info, results = {}, {}
        for size in sizes:
            seed_seconds = prepare_clinic(size, clinics)
            counts, disk = schema_stats(f"bench_{size}")
            info[size] = {"counts": counts, "disk": disk, "seed": seed_seconds}
        for size in sizes:
            for n in range(args.repeats):
                log(f"bench_{size}: run {n + 1}/{args.repeats}")
                for method in methods:
                    results.setdefault((size, method), []).append(measure(method, f"bench_{size}", tools, zstd))
        print_report(sizes, info, results, tools, args.repeats)
        print(f"\ntotal bench run time: {time.perf_counter() - started:.0f} s (seeding included)")
        return 0
    except (BenchError, PgToolsError) as exc:
        log(f"bench failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for clinic in [] if args.keep else clinics:
            try:
                drop_clinic(clinic)
            except Exception as exc:  # report, and still try the others
                log(f"{clinic.schema_name}: could not drop it: {exc}")


if __name__ == "__main__":
    sys.exit(main())
