"""Respaldo's benchmark: our backup, restore, drill, json, clone, pages and a night of many
clinics, each measured side by side with the raw tool it replaces, in the same run.

Run from the repository root:

    .venv/bin/python bench/run.py --size XS|S|M [--repeats 3] [--only backup,restore,...] [--keep]

Every step of every selected group runs once per repeat, round-robin (the order rotates each
repeat), so a noisy neighbour hurts all competitors alike. Prints one markdown table (min and
median seconds, ratio to the row it is compared with, peak memory of the measured process
tree, output size, the issue's target and a pass/miss mark) and writes the same as JSON to
``bench/results/<timestamp>-<size>.json`` (compare two with ``bench/compare.py``).
Progress goes to stderr. See bench/README.md for what each row measures.
"""

# ruff: noqa: S608, S604 - bench-made SQL and shell lines, from fixed names and our own paths

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="respaldo-bench-media-")  # clinics' files (clones)
from bench_setup import ROOT, start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-bench-")

import generate  # noqa: E402
import psutil  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django_tenants.utils import schema_context  # noqa: E402

from backups import archive, services, storage  # noqa: E402
from backups.formats.json.payload import payload_models  # noqa: E402
from backups.keys.clinic import reading_identities  # noqa: E402
from backups.models import (  # noqa: E402
    Backup,
    BackupPolicy,
    ClinicKey,
    CloneJob,  # noqa: E402
    JobStatus,
    Restore,
)
from backups.postgres import connect_separately, find_pg_tools, libpq_environment  # noqa: E402
from backups.services import clone as clones  # noqa: E402
from clinics.models import Clinic, Domain  # noqa: E402

GROUPS = ["backup", "restore", "drill", "blocked", "upload", "json", "clone", "pages", "many"]
# With 1,000 schemas in a database, pg_dump of any one takes ~1 s (its catalog queries read them all):
# 1,000 clinics is the M run's night (~1 hour for 3 repeats on 2 cores); S keeps "a few minutes".
MANY_CLINICS = {"XS": 20, "S": 100, "M": 1000}
# the json group's own clinic: ≈ 8 rows per patient (≥ 60k rows at S and M; small at XS, for CI's
# sake: Django's dumpdata and loaddata, its baselines, take minutes at 60k rows)
JSON_PATIENTS = {"XS": 1500, "S": 7500, "M": 7500}
PAGE_REQUESTS = 40  # per page and repeat, over the load generator's clients
PAGE_CLIENTS = 2  # concurrent logged-in clients of bench/load.py
PAGE_WORKERS = 2  # gunicorn workers serving them (one per core here)
MB = 2**20
SUPERUSER, PASSWORD = "benchadmin", "bench-password-only-for-bench"


logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per enqueued task


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Measuring ---------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    peak: int | None = None  # bytes: max of the summed PSS of the measured process tree
    size: int | None = None  # bytes of output
    notes: dict = field(default_factory=dict)


class TreeSampler(threading.Thread):
    """Samples the memory of process ``pid`` and all its descendants every 10 ms; keeps the max sum.

    The memory of a process is its PSS (a page shared by N processes counts 1/N to each):
    summed over the tree it is the tree's real footprint. RSS counted twice the pages a
    forked child shares with its parent until it execs (pg_dump, pg_restore), which showed as
    a lone "python" twice the size of the process.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.parts: dict[str, int] = {}  # at the peak: PSS by process name (summed per name)

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            parts: dict[str, int] = {}
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        name = proc.name()
                        parts[name] = parts.get(name, 0) + proc.memory_full_info().pss
            total = sum(parts.values())
            if total > self.peak:
                self.peak, self.parts = total, parts
            self.done.wait(0.01)


def run_tree(args: list[str] | str, *, shell: bool = False, env: dict | None = None, stdout=None) -> Sample:
    """Run a command (a bash pipeline when ``shell``); its wall time and process-tree peak memory (PSS)."""
    if shell:
        args = ["bash", "-o", "pipefail", "-c", args]
    err = (TMP / "stderr").open("w+b")
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=stdout or subprocess.PIPE, stderr=err, start_new_session=True
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        err.seek(0)
        raise RuntimeError(f"{args!r} exited with {proc.returncode}: {err.read().decode(errors='replace')[-1500:]}")
    err.close()
    by_process = " ".join(f"{name} {rss / MB:.0f}" for name, rss in sorted(sampler.parts.items(), key=lambda p: -p[1]))
    return Sample(
        seconds,
        peak=sampler.peak,
        notes={"stdout": (out or b"").decode(errors="replace"), "peak MiB by process": by_process},
    )


def python_child(code: str, env: dict | None = None) -> Sample:
    """A fresh Python with Django set up runs ``code`` (its wall time includes Django's start-up)."""
    prelude = "import django; django.setup()\n"
    return run_tree([sys.executable, "-c", prelude + code], env=env)


def manage(*args: str, env: dict | None = None) -> Sample:
    return run_tree([sys.executable, "manage.py", *args], env=env)


def timed(fn: Callable[[], object]) -> Sample:
    start = time.perf_counter()
    result = fn()
    sample = Sample(time.perf_counter() - start)
    if isinstance(result, dict):
        sample.notes.update(result)
    return sample


# --- Clinics and catalog housekeeping ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forget_jobs(clinic: Clinic, *, keep: set[int] = frozenset()) -> None:
    """Delete the clinic's restores, clone jobs and backups (and their stored archives), but ``keep``."""
    Restore.objects.filter(clinic=clinic).delete()
    CloneJob.objects.filter(source_backup__clinic=clinic).delete()
    for backup in Backup.objects.filter(clinic=clinic).exclude(pk__in=keep).order_by("-pk"):
        if backup.storage_name:
            with contextlib.suppress(Exception):
                storage.delete_stored(backup.storage_name)
        Backup.objects.filter(retry_of=backup).update(retry_of=None)
        backup.delete()


def drop_clinic(schema: str) -> None:
    connection.set_schema_to_public()
    clinic = Clinic.objects.filter(schema_name=schema).first()
    CloneJob.objects.filter(target_schema=schema).delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    shutil.rmtree(Path(settings.MEDIA_ROOT) / schema, ignore_errors=True)
    if clinic is not None:
        forget_jobs(clinic)
        BackupPolicy.objects.filter(clinic=clinic).delete()
        Domain.objects.filter(tenant=clinic).delete()
        Clinic.objects.filter(pk=clinic.pk).delete()


def drop_leftover_schemas(schema: str) -> None:
    """Schemas a restore keeps aside (the undo window) or the raw restore moved aside."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s AND nspname <> %s", [schema + "\\_%", schema]
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP SCHEMA "{name}" CASCADE')


def make_backup(schema: str, payload_format: str = "pg") -> Backup:
    row = services.backup_run(
        backup_id=services.backup_request(clinic=schema, payload_format=payload_format, enqueue=False).pk
    )
    if row.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"backup of {schema} failed: {row.error}")
    return row


def payload_to_file(row: Backup, path: Path) -> None:
    """The payload (pg_dump custom file or JSON) of our archive, decrypted, to ``path``."""
    with (
        storage.open_stored(row.storage_name) as stream,
        archive.open_archive(stream, identities=reading_identities(row.clinic)) as reader,
        open(path, "wb") as out,
    ):
        shutil.copyfileobj(reader, out, 1 << 20)


def stored_to_file(row: Backup, path: Path) -> None:
    with storage.open_stored(row.storage_name) as stream, open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)


def backup_id_from(stdout: str) -> int:
    found = re.search(r"^#(\d+) ", stdout, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no backup id in: {stdout[-500:]}")
    return int(found.group(1))


# --- The bench ---------------------------------------------------------------------------


class Bench:
    def __init__(self, size: str, groups: list[str], many: int):
        self.size, self.groups, self.many = size, groups, many
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
        # Reused bench clinics' archive keys are wrapped with an earlier run's throw-away key: new ones.
        ClinicKey.objects.filter(clinic__schema_name__startswith="bench").delete()
        main = generate.generate(self.schema, self.size, log=log)
        self.info["clinic"] = main
        self.made_schemas.append(self.schema)
        forget_jobs(Clinic.objects.get(schema_name=self.schema))
        if "pages" in self.groups:  # before the backup that restores bring back: it must hold the user
            self.setup_users()
        needs_pg_backup = {"restore", "drill", "blocked", "upload"} & set(self.groups)
        if needs_pg_backup:
            self.pg_backup = make_backup(self.schema)
            self.dump = TMP / "raw.dump"
            payload_to_file(self.pg_backup, self.dump)
            self.info["dump_bytes"] = self.dump.stat().st_size
        if "json" in self.groups:
            patients = JSON_PATIENTS[self.size]
            self.info["json_clinic"] = generate.generate(self.json_schema, "JSON", patients=patients, log=log)
            self.made_schemas.append(self.json_schema)
            forget_jobs(Clinic.objects.get(schema_name=self.json_schema))
            self.json_backup = make_backup(self.json_schema, "json")
            self.json_fingerprint = generate.fingerprint(self.json_schema)
        if {"clone", "many"} & set(self.groups):
            self.info["tiny_clinic"] = generate.generate("benchtiny", "TINY", log=log)
            self.made_schemas.append("benchtiny")
        if "clone" in self.groups:
            forget_jobs(Clinic.objects.get(schema_name="benchtiny"))
            self.tiny_backup = make_backup("benchtiny")
        if "upload" in self.groups:
            self.upload_file = TMP / "upload.respaldo"
            stored_to_file(self.pg_backup, self.upload_file)
        if "many" in self.groups:
            self.many_schemas = generate.clone_clinics("benchtiny", "benchq", self.many, log=log)
            self.made_schemas += self.many_schemas
        if "pages" in self.groups:
            self.setup_pages()
        connection.set_schema_to_public()
        self.steps = [s for g in self.groups for s in getattr(self, f"steps_{g}")()]

    # -- backup ------------------------------------------------------------------------------

    def steps_backup(self) -> list:
        import pyrage

        self.age_recipient = str(pyrage.x25519.Identity.generate().to_public())
        dbbackup = importlib.util.find_spec("dbbackup") is not None
        pipe = bool(shutil.which("zstd") and shutil.which("age"))
        self.missing = [] if pipe else [RAW_PIPE + " — no zstd or age CLI"]
        self.missing += [] if dbbackup else [DBBACKUP + " — not installed"]
        return [
            ("pg_dump -Fc", self.raw_fc),
            *([("raw pipe", self.raw_pipe)] if pipe else []),
            ("ours backup", self.ours_backup),
            *([("dbbackup", self.dbbackup)] if dbbackup else []),
        ]

    def dump_args(self) -> str:
        return f"{self.tools.pg_dump} --format=custom --schema='{self.schema}' --no-owner --no-privileges"

    def raw_fc(self) -> dict[str, Sample]:
        out = TMP / "raw-fc.dump"
        sample = run_tree(f"{self.dump_args()} > {out}", shell=True, env=self.env)
        sample.size = out.stat().st_size
        out.unlink()
        return {"backup: raw pg_dump -Fc -n <schema>": sample}

    def raw_pipe(self) -> dict[str, Sample]:
        out = TMP / "raw-pipe.age"
        sample = run_tree(
            f"{self.dump_args()} -Z0 | zstd -1 -q -c | age -r {self.age_recipient} > {out}", shell=True, env=self.env
        )
        sample.size = out.stat().st_size
        out.unlink()
        return {"backup: raw pipe pg_dump -Z0 | zstd -1 | age": sample}

    def dbbackup(self) -> dict[str, Sample]:
        out = TMP / "dbbackup.psql.gz"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dbbackup_settings"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), str(ROOT)])
        env["BENCH_PG_DUMP"] = str(self.tools.pg_dump)  # of the server's major version, as ours
        sample = manage("dbbackup", "-z", "-n", self.schema, "-O", str(out), "--noinput", "-q", env=env)
        sample.size = out.stat().st_size
        out.unlink()
        return {"backup: django-dbbackup -z -n <schema>": sample}

    def ours_backup(self, schema: str = "", payload_format: str = "pg") -> dict[str, Sample]:
        schema = schema or self.schema
        sample = manage("backup_clinic", schema, "--format", payload_format, "--requested-by", "bench")
        row = Backup.objects.get(pk=backup_id_from(sample.notes.pop("stdout")))
        if row.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"backup #{row.pk} failed: {row.error}")
        sample.size = row.size
        job = Sample(row.duration.total_seconds(), size=row.size)
        storage.delete_stored(row.storage_name)
        row.delete()
        return {f"{payload_format}: ours backup, whole process": sample, f"{payload_format}: ours backup, job": job}

    # -- restore -----------------------------------------------------------------------------

    def steps_restore(self) -> list:
        return [("raw restore", self.raw_restore), ("ours restore", self.ours_restore)]

    def raw_restore(self) -> dict[str, Sample]:
        aside = f"{self.schema}_rawaside"
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER SCHEMA "{self.schema}" RENAME TO "{aside}"')
        try:
            sample = run_tree(
                f"{self.tools.pg_restore} --no-owner --no-privileges -f - {self.dump} | "
                f"{self.tools.psql} -X -q -v ON_ERROR_STOP=1 --single-transaction > /dev/null",
                shell=True,
                env=self.env,
            )
        except Exception:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                cursor.execute(f'ALTER SCHEMA "{aside}" RENAME TO "{self.schema}"')
            raise
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{aside}" CASCADE')
        return {"restore: raw pg_restore -f - | psql -1": sample}

    def restore_child(self, backup: Backup) -> tuple[Sample, Restore]:
        sample = manage("restore_clinic", backup.clinic.schema_name, "--backup", str(backup.pk), "--yes")
        restore = Restore.objects.filter(backup=backup).latest("pk")
        if restore.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"restore #{restore.pk} failed: {restore.error}")
        drop_leftover_schemas(backup.clinic.schema_name)
        return sample, restore

    def restore_rows(self, prefix: str, sample: Sample, restore: Restore) -> dict[str, Sample]:
        job = restore.duration.total_seconds()
        safety = restore.safety_backup.duration.total_seconds() if restore.safety_backup else 0.0
        sample.notes["safety backup s"] = round(safety, 2)
        rows = {
            f"{prefix}: ours restore, whole process": sample,
            f"{prefix}: ours restore, job incl. safety backup": Sample(job),
            f"{prefix}: ours restore, job after the safety backup": Sample(job - safety),
        }
        self.cleanup_restore(restore)
        return rows

    def cleanup_restore(self, restore: Restore) -> None:
        safety = restore.safety_backup
        restore.delete()
        if safety is not None:
            with contextlib.suppress(Exception):
                storage.delete_stored(safety.storage_name)
            safety.delete()

    def ours_restore(self) -> dict[str, Sample]:
        return self.restore_rows("restore", *self.restore_child(self.pg_backup))

    # -- drill, blocked, upload --------------------------------------------------------------

    def steps_drill(self) -> list:
        raw = [] if "restore" in self.groups else [("raw restore", self.raw_restore)]
        return [*raw, ("drill", self.drill)]

    def drill(self) -> dict[str, Sample]:
        sample = python_child(
            "import time\n"
            "from backups.operations import drills\n"
            "started = time.perf_counter()\n"
            f"b = drills.drill({self.pg_backup.pk})\n"
            "print('#seconds', time.perf_counter() - started)\n"
            "assert b.drill_status == drills.SUCCEEDED, b.drill_error\n"
        )
        call = float(re.search(r"#seconds (\S+)", sample.notes.pop("stdout")).group(1))
        return {
            "drill: ours, restore into scratch (whole process)": sample,
            "drill: ours, the drill call (no start-up)": Sample(call),
        }

    def steps_blocked(self) -> list:
        return [("blocked", self.blocked)]

    def blocked(self) -> dict[str, Sample]:
        """Reads of the clinic's patient list on a session of their own while a restore runs."""
        conn = connect_separately(autocommit=True, application_name="bench-reader")
        conn.execute(f'SET search_path TO "{self.schema}", public')
        reads: list[tuple[float, float]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                with contextlib.suppress(Exception):
                    conn.execute("SELECT count(*) FROM dental_patient").fetchone()
                    conn.execute("SELECT * FROM dental_patient ORDER BY last_name, first_name, id LIMIT 100").fetchall()
                reads.append((start, time.perf_counter() - start))
                stop.wait(0.01)

        reader = threading.Thread(target=loop)
        reader.start()
        try:
            time.sleep(1.0)
            before = time.perf_counter()
            sample, restore = self.restore_child(self.pg_backup)
            after = time.perf_counter()
        finally:
            stop.set()
            reader.join()
            conn.close()
        baseline = statistics.median([s for at, s in reads if at + s < before] or [0.0])
        waits = [s - baseline for at, s in reads if at < after and at + s > before]
        longest = max(waits, default=0.0)
        blocked = sum(w for w in waits if w > 0.1)
        self.cleanup_restore(restore)
        return {
            "blocked: longest read wait during a restore": Sample(
                longest,
                notes={
                    "reads": len(waits),
                    "blocked > 100 ms, total s": round(blocked, 2),
                    "restore s": round(sample.seconds, 2),
                },
            )
        }

    def steps_upload(self) -> list:
        return [("upload", self.upload)]

    def upload(self) -> dict[str, Sample]:
        sample = python_child(
            "from backups.services.upload import backup_from_upload\n"
            "from backups.services import restore as r\n"
            f"with open({str(self.upload_file)!r}, 'rb') as f:\n"
            f"    b = backup_from_upload(clinic={self.schema!r}, source=f, filename='b', requested_by='b')\n"
            f"x = r.restore_request(clinic={self.schema!r}, backup_id=b.pk, enqueue=False)\n"
            "x = r.restore_run(restore_id=x.pk)\n"
            "print('#restore', x.pk, x.status, b.pk)\n"
        )
        found = re.search(r"#restore (\d+) (\w+) (\d+)", sample.notes.pop("stdout"))
        restore = Restore.objects.get(pk=int(found.group(1)))
        if restore.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"upload restore failed: {restore.error}")
        uploaded = Backup.objects.get(pk=int(found.group(3)))
        drop_leftover_schemas(self.schema)
        self.cleanup_restore(restore)
        storage.delete_stored(uploaded.storage_name)
        uploaded.delete()
        sample.size = self.upload_file.stat().st_size
        return {"upload: file accepted + restored (whole process)": sample}

    # -- json --------------------------------------------------------------------------------

    def steps_json(self) -> list:
        with schema_context(self.json_schema):
            self.json_tables = [m._meta.db_table for m in payload_models()]
        return [
            ("copy to", self.copy_to),
            ("copy from", self.copy_from),
            ("ours json backup", lambda: self.ours_backup(self.json_schema, "json")),
            ("ours json restore", self.ours_json_restore),
            ("dumpdata", self.once("dumpdata", self.dumpdata)),
            ("loaddata", self.once("loaddata", self.loaddata)),
        ]

    def once(self, label: str, step: Callable[[], dict[str, Sample]]) -> Callable[[], dict[str, Sample]]:
        """Django's dumpdata and loaddata are slow: measured in one repeat only."""

        def run() -> dict[str, Sample]:
            if label in self.done_once:
                return {}
            self.done_once.add(label)
            return step()

        return run

    def copy_to(self) -> dict[str, Sample]:
        out = TMP / "copy.tsv"

        def run() -> None:
            with connect_separately(autocommit=True) as conn, open(out, "wb") as sink:
                for table in self.json_tables:
                    with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" TO STDOUT') as copy:
                        for data in copy:
                            sink.write(data)

        sample = timed(run)
        sample.size = out.stat().st_size
        self.copy_file_tables = True
        return {"json: psycopg COPY TO (same rows, in-process)": sample}

    def copy_from(self) -> dict[str, Sample]:
        """COPY FROM of every table (after TRUNCATE), in one transaction rolled back."""
        dumps = {}
        with connect_separately(autocommit=True) as conn:
            for table in self.json_tables:
                with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" TO STDOUT') as copy:
                    dumps[table] = b"".join(bytes(d) for d in copy)

        def run() -> None:
            with connect_separately(autocommit=False) as conn:
                names = ", ".join(f'"{self.json_schema}"."{t}"' for t in self.json_tables)
                conn.execute(f"TRUNCATE {names}")
                for table in self.json_tables:
                    with conn.cursor().copy(f'COPY "{self.json_schema}"."{table}" FROM STDIN') as copy:
                        copy.write(dumps[table])
                conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                conn.rollback()

        return {"json: psycopg COPY FROM (one transaction, in-process)": timed(run)}

    def ours_json_restore(self) -> dict[str, Sample]:
        sample, restore = self.restore_child(self.json_backup)
        exact = generate.fingerprint(self.json_schema) == self.json_fingerprint
        rows = self.restore_rows("json", sample, restore)
        rows["json: ours restore, whole process"].notes["exact"] = exact
        return rows

    def dumpdata(self) -> dict[str, Sample]:
        out = TMP / "dumpdata.json"
        labels = sorted({m._meta.app_label for m in payload_models()})
        sample = python_child(
            "from django.core.management import call_command\n"
            "from django_tenants.utils import schema_context\n"
            f"with schema_context({self.json_schema!r}):\n"
            f"    call_command('dumpdata', *{labels!r}, output={str(out)!r}, verbosity=0)\n"
        )
        sample.notes = {}
        sample.size = out.stat().st_size
        return {"json: dumpdata (whole process)": sample}

    def loaddata(self) -> dict[str, Sample]:
        fixture = TMP / "loaddata.json"
        if not fixture.exists():
            payload_to_file(self.json_backup, fixture)  # our payload is Django-serialized JSON
        names = ", ".join(f'"{t}"' for t in self.json_tables)
        sample = python_child(
            "from django.core.management import call_command\n"
            "from django.db import connection, transaction\n"
            "from django_tenants.utils import schema_context\n"
            f"with schema_context({self.json_schema!r}), transaction.atomic():\n"
            f"    connection.cursor().execute('TRUNCATE {names}')\n"
            f"    call_command('loaddata', {str(fixture)!r}, verbosity=0)\n"
            "    transaction.set_rollback(True)\n"
        )
        sample.notes = {}
        return {"json: loaddata, one transaction (whole process)": sample}

    # -- clone -------------------------------------------------------------------------------

    def steps_clone(self) -> list:
        return [("migrations", self.clinic_by_migrations), ("clone", self.clone)]

    def clinic_by_migrations(self) -> dict[str, Sample]:
        drop_clinic("benchnew")

        def run() -> None:
            clinic = Clinic(schema_name="benchnew", name="benchnew")
            clinic.save(verbosity=0)
            Domain.objects.create(domain=clones.default_domain("benchnew"), tenant=clinic, is_primary=True)

        sample = timed(run)
        drop_clinic("benchnew")
        return {"clone: new empty clinic through migrations (in-process)": sample}

    def clone(self) -> dict[str, Sample]:
        drop_clinic("benchclone")

        def run() -> None:
            job = clones.clone_request(
                source_backup_id=self.tiny_backup.pk,
                schema_name="benchclone",
                name="benchclone",
                requested_by="bench",
                enqueue=False,
            )
            job = clones.clone_run(clone_id=job.pk)
            if job.status != "succeeded":
                raise RuntimeError(f"clone failed: {job.error}")

        sample = timed(run)
        drop_clinic("benchclone")
        return {"clone: ours, of a 40-patient clinic's pg backup (in-process)": sample}

    # -- pages -------------------------------------------------------------------------------

    def setup_pages(self) -> None:
        """1,000 catalog-only clinics with 100 backups each (one in ten failed), as in the tests."""
        self.drop_catalog()
        from backups.tests.catalog_fill import fill_catalog

        fill_catalog(clinics=1000, backups_each=100, size=MB)

    def setup_users(self) -> None:
        """The platform tenant, and a superuser in it and in the bench clinic, for the pages."""
        from django.contrib.auth import get_user_model

        from clinics.demo import ensure_public_tenant

        ensure_public_tenant()
        user_model = get_user_model()
        for schema in ("public", self.schema):
            with schema_context(schema):
                if not user_model.objects.filter(username=SUPERUSER).exists():
                    user_model.objects.create_superuser(SUPERUSER, f"{SUPERUSER}@example.com", PASSWORD)
        connection.set_schema_to_public()
        self.domain = Domain.objects.get(tenant__schema_name=self.schema, is_primary=True).domain
        public = Domain.objects.filter(tenant__schema_name="public").first()
        self.public_domain = public.domain if public else "localhost"

    def drop_catalog(self) -> None:
        budget = "(SELECT id FROM clinics_clinic WHERE schema_name LIKE 'budget\\_%%')"
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM backups_backup WHERE clinic_id IN {budget}")
            cursor.execute(f"DELETE FROM backups_backuppolicy WHERE clinic_id IN {budget}")
        Clinic.objects.filter(schema_name__startswith="budget_").delete()

    def steps_pages(self) -> list:
        return [
            ("page index", lambda: self.page("pages: platform index /admin/", self.public_domain, "/admin/")),
            (
                "page clinics",
                lambda: self.page("pages: platform clinics list", self.public_domain, "/admin/clinics/clinic/"),
            ),
            (
                "page backups",
                lambda: self.page("pages: clinic backups page", self.domain, "/admin/backups/backup/"),
            ),
        ]

    def page_server(self) -> str:
        """gunicorn serving the site as deployed (Procfile), 2 workers, started once; its base URL."""
        if self.server is None:
            port = free_port()
            log_file = (TMP / "gunicorn.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "clinic_site.wsgi", "--bind", f"127.0.0.1:{port}"]
                + ["--workers", str(PAGE_WORKERS), "--timeout", "120"],
                cwd=ROOT,
                env=dict(os.environ, DEBUG="0"),  # DEBUG would keep every query's SQL
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            base = f"http://127.0.0.1:{port}"
            self.server = proc
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {(TMP / 'gunicorn.log').read_text()[-1500:]}")
                time.sleep(0.1)
            self.server_base = base
        return self.server_base

    def stop_page_server(self) -> None:
        if self.server is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.server.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(30)
            self.server = None

    def page(self, name: str, host: str, path: str) -> dict[str, Sample]:
        """p95 latency of ``path`` served by gunicorn (2 workers) to 2 logged-in clients of a load
        generator in another process (``bench/load.py``); the query count from the test client."""
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "load.py"), "--base", self.page_server(), "--host", host]
            + ["--path", path, "--user", SUPERUSER, "--password", PASSWORD, "--requests", str(PAGE_REQUESTS)]
            + ["--clients", str(PAGE_CLIENTS)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed on {host}{path}: {out.stderr[-1500:]}")
        measured = json.loads(out.stdout)
        if measured["failures"]:
            raise RuntimeError(measured["failures"][0])
        latencies = measured["latencies"]
        c = Client(HTTP_HOST=host)
        if c.post("/admin/login/", {"username": SUPERUSER, "password": PASSWORD}).status_code != 302:
            raise RuntimeError(f"could not log in on {host}")
        c.get(path)
        with CaptureQueriesContext(connection) as captured:
            c.get(path)
        connection.set_schema_to_public()
        queries = [q for q in captured.captured_queries if not q["sql"].startswith("SET search_path")]
        p95 = statistics.quantiles(latencies, n=20)[-1]
        return {
            name: Sample(p95, notes={"queries": len(queries), "median ms": round(statistics.median(latencies) * 1000)})
        }

    # -- many clinics ------------------------------------------------------------------------

    def steps_many(self) -> list:
        return [("many raw", self.many_raw), ("many q1", lambda: self.many_q2(1)), ("many q2", lambda: self.many_q2(2))]

    def many_raw(self) -> dict[str, Sample]:
        out = TMP / "many.dump"
        loop = "; ".join(
            f"{self.tools.pg_dump} -Fc --schema='{s}' --no-owner --no-privileges -f {out}" for s in self.many_schemas
        )
        sample = run_tree(loop, shell=True, env=self.env)
        out.unlink(missing_ok=True)
        return {f"many: raw pg_dump -Fc loop, {self.many} clinics": sample}

    def many_q2(self, workers: int) -> dict[str, Sample]:
        ids = [
            services.backup_request(clinic=s, payload_format="pg", requested_by="bench", enqueue=True).pk
            for s in self.many_schemas
        ]
        env = {**os.environ, "Q_WORKERS": str(workers)}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(TMP / "qcluster.log").open("ab"),
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        deadline = time.monotonic() + 60 + 5 * len(ids)
        try:
            while Backup.objects.filter(pk__in=ids, status__in=[JobStatus.PENDING, JobStatus.RUNNING]).exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"django-q2 did not finish {len(ids)} backups (see {TMP / 'qcluster.log'})")
                time.sleep(0.05)
            seconds = time.perf_counter() - start
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            sampler.done.set()
            sampler.join()
        rows = list(Backup.objects.filter(pk__in=ids))
        failed = sum(r.status != JobStatus.SUCCEEDED for r in rows)
        span = (max(r.finished_at for r in rows) - min(r.started_at or r.requested_at for r in rows)).total_seconds()
        size = sum(r.size or 0 for r in rows)
        for row in rows:
            if row.storage_name:
                storage.delete_stored(row.storage_name)
        Backup.objects.filter(pk__in=ids).delete()
        notes = {"first start to last end s": round(span, 2), "failed": failed}
        return {
            f"many: django-q2, {workers} worker{'s' if workers > 1 else ''}, {self.many} clinics": Sample(
                seconds, peak=sampler.peak, size=size, notes=notes
            )
        }

    # -- running -----------------------------------------------------------------------------

    def run(self, repeats: int) -> None:
        for r in range(repeats):
            shift = r % len(self.steps)
            order = self.steps[shift:] + self.steps[:shift]
            for label, step in order:
                log(f"repeat {r + 1}/{repeats}: {label}")
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
        self.stop_page_server()
        connection.set_schema_to_public()
        if "pages" in self.groups:
            self.drop_catalog()
        with connection.cursor() as cursor:  # the many clinics, also those of a run that failed half-way
            cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'benchq%%'")
            clones = {name for (name,) in cursor.fetchall()}
        clones |= set(Clinic.objects.filter(schema_name__startswith="benchq").values_list("schema_name", flat=True))
        for schema in sorted(clones):
            drop_clinic(schema)
        for schema in self.made_schemas:
            clinic = Clinic.objects.filter(schema_name=schema).first()
            if clinic is None:
                continue
            if keep and not schema.startswith("benchq"):
                forget_jobs(clinic)
            else:
                drop_clinic(schema)
            drop_leftover_schemas(schema)


# --- Targets and the table -----------------------------------------------------------------

# row -> (the row it is compared with, target text, check(ratio, median, peak_mib, notes) -> bool | None)
RAW_FC = "backup: raw pg_dump -Fc -n <schema>"
RAW_PIPE = "backup: raw pipe pg_dump -Z0 | zstd -1 | age"
DBBACKUP = "backup: django-dbbackup -z -n <schema>"
RAW_RESTORE = "restore: raw pg_restore -f - | psql -1"
COPY_TO = "json: psycopg COPY TO (same rows, in-process)"
COPY_FROM = "json: psycopg COPY FROM (one transaction, in-process)"
LOADDATA = "json: loaddata, one transaction (whole process)"
DUMPDATA = "json: dumpdata (whole process)"


def mem_ok(peak: float | None) -> bool | None:
    return None if peak is None else peak <= 100


COMPARISONS: list[tuple[str, str, str, Callable]] = [
    (
        "pg: ours backup, whole process",
        RAW_FC,
        "≤ 0.30 × pg_dump -Fc; ≤ 100 MB",
        lambda r, m, p, n: r <= 0.30 and mem_ok(p) is not False,
    ),
    ("pg: ours backup, job", RAW_FC, "≤ 0.30 × pg_dump -Fc", lambda r, m, p, n: r <= 0.30),
    ("pg: ours backup, job", RAW_PIPE, "≤ 1.2 × raw pipe", lambda r, m, p, n: r <= 1.2),
    ("pg: ours backup, job", DBBACKUP, "≤ 0.2 × dbbackup", lambda r, m, p, n: r <= 0.2),
    (
        "restore: ours restore, whole process",
        RAW_RESTORE,
        "≤ 1.6 × raw; ≤ 100 MB",
        lambda r, m, p, n: r <= 1.6 and mem_ok(p) is not False,
    ),
    ("restore: ours restore, job incl. safety backup", RAW_RESTORE, "≤ 1.6 × raw", lambda r, m, p, n: r <= 1.6),
    ("restore: ours restore, job after the safety backup", RAW_RESTORE, "≤ 1.15 × raw", lambda r, m, p, n: r <= 1.15),
    ("drill: ours, restore into scratch (whole process)", RAW_RESTORE, "", None),
    ("drill: ours, the drill call (no start-up)", RAW_RESTORE, "≤ 1.15 × raw", lambda r, m, p, n: r <= 1.15),
    ("blocked: longest read wait during a restore", "", "≤ 1 s (size S)", lambda r, m, p, n: m <= 1.0),
    ("upload: file accepted + restored (whole process)", "", "≤ 100 MB", lambda r, m, p, n: mem_ok(p)),
    ("json: ours backup, job", COPY_TO, "≤ 3 × COPY TO", lambda r, m, p, n: r <= 3),
    ("json: ours backup, whole process", DUMPDATA, "", None),
    ("json: ours restore, job after the safety backup", COPY_FROM, "≤ 3 × COPY FROM", lambda r, m, p, n: r <= 3),
    (
        "json: ours restore, whole process",
        LOADDATA,
        "≤ 0.05 × loaddata, exact",
        lambda r, m, p, n: r <= 0.05 and n.get("exact") is True,
    ),
    ("json: ours restore, job incl. safety backup", COPY_FROM, "", None),
]


def summarize(bench: Bench) -> list[dict]:  # noqa: C901 - one table, its rules in one place
    stats = {}
    for name, samples in bench.results.items():
        secs = [s.seconds for s in samples]
        peaks = [s.peak for s in samples if s.peak]
        sizes = [s.size for s in samples if s.size]
        notes = {}
        for s in sorted(samples, key=lambda s: s.peak or 0):  # the peak's breakdown is the highest peak's
            notes.update(s.notes)
        stats[name] = {
            "min": min(secs),
            "median": statistics.median(secs),
            "peak_mib": max(peaks) / MB if peaks else None,
            "size_mib": statistics.median(sizes) / MB if sizes else None,
            "runs": len(samples),
            "notes": notes,
            "seconds": secs,
        }
    rows = []
    compared = {c[0] for c in COMPARISONS}
    for name in bench.results:
        if name in compared:
            continue
        row = {"step": name, **stats[name], "vs": "", "ratio": None, "target": "", "pass": None}
        many_q = name.startswith("many: django-q2")
        if name.startswith("pages:"):
            row["target"] = "p95 ≤ 0.150 s, ≤ 10 queries"
            row["pass"] = row["median"] <= 0.150 and row["notes"].get("queries", 99) <= 10
        elif name.startswith("clone: ours"):
            base = next((n for n in bench.results if n.startswith("clone: new empty")), "")
            row.update(vs=base, ratio=row["median"] / stats[base]["median"] if base else None)
        elif many_q:
            raw = next((n for n in bench.results if n.startswith("many: raw")), "")
            one = next((n for n in bench.results if n.startswith("many: django-q2, 1 worker,")), "")
            if raw:
                per = (row["notes"]["first start to last end s"] - stats[raw]["median"]) / bench.many
                row["notes"]["overhead ms/clinic (span - raw)"] = round(per * 1000)
            if ", 1 worker," in name and raw:
                row.update(vs=raw, ratio=row["median"] / stats[raw]["median"], target="overhead ≤ 100 ms/clinic")
                row["pass"] = row["notes"]["overhead ms/clinic (span - raw)"] <= 100
            elif one:
                row.update(
                    vs=one, ratio=row["median"] / stats[one]["median"], target="≤ 0.625 × 1 worker (≥ 1.6× faster)"
                )
                row["pass"] = row["ratio"] <= 0.625
        rows.append(row)
        for ours, base, target, check in COMPARISONS:
            if base != name:
                continue
            if ours in stats:
                r = dict(stats[ours])
                ratio = r["median"] / stats[base]["median"]
                ok = check(ratio, r["median"], r["peak_mib"], r["notes"]) if check else None
                rows.append({"step": ours, **r, "vs": base, "ratio": ratio, "target": target, "pass": ok})
    for ours, base, target, check in COMPARISONS:  # targets without a comparison row, or whose base is missing
        if ours in stats and not any(r["step"] == ours for r in rows):
            r = dict(stats[ours])
            ok = check(None, r["median"], r["peak_mib"], r["notes"]) if check and not base else None
            rows.append(
                {"step": ours, **r, "vs": base and f"{base} (missing)", "ratio": None, "target": target, "pass": ok}
            )
    for missing in bench.missing:
        empty = dict.fromkeys(["min", "median", "peak_mib", "size_mib", "ratio", "pass"])
        rows.append({"step": missing, **empty, "runs": 0, "notes": {}, "vs": "", "target": ""})
    return rows


def fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None or value != value else format(value, spec)


def short(name: str) -> str:
    names = {RAW_FC: "pg_dump -Fc", RAW_PIPE: "raw pipe", DBBACKUP: "dbbackup", RAW_RESTORE: "raw restore"}
    names |= {COPY_TO: "COPY TO", COPY_FROM: "COPY FROM", LOADDATA: "loaddata", DUMPDATA: "dumpdata"}
    return names.get(name, name.split(": ", 1)[-1].split(" (")[0].split(",")[0])


def print_table(rows: list[dict]) -> None:
    print("| step | min s | median s | ratio | vs | peak MiB | output MiB | target | | notes |")
    print("|---|---:|---:|---:|---|---:|---:|---|---|---|")
    for r in rows:
        mark = {True: "✓", False: "✗ miss", None: ""}[r["pass"]]
        notes = ", ".join(f"{k} {v}" for k, v in r["notes"].items() if k != "stdout")
        step = r["step"].replace("|", "\\|")
        print(
            f"| {step} | {fmt(r['min'])} | {fmt(r['median'])} | {fmt(r['ratio'], '.2f')} | {short(r['vs'])} | "
            f"{fmt(r['peak_mib'], '.0f')} | {fmt(r['size_mib'], '.1f')} | {r['target']} | {mark} | {notes} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["XS", "S", "M"], default="S")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help=f"comma-separated groups of: {','.join(GROUPS)}")
    parser.add_argument(
        "--clinics", type=int, default=0, help="clinics for the 'many' group (default: XS 20, S 100, M 1000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated clinics for the next run")
    args = parser.parse_args()
    groups = [g for g in args.only.split(",") if g] or GROUPS
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; known: {GROUPS}")
    started = time.perf_counter()
    bench = Bench(args.size, groups, args.clinics or MANY_CLINICS[args.size])
    try:
        bench.setup()
        bench.run(args.repeats)
        rows = summarize(bench)
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
