"""The restore, drill, blocked and upload groups' steps (a mixin of ``run.Bench``): our
restore and drill against ``pg_restore | psql``, the reads a restore blocks, and an uploaded
file accepted and restored.

``restore_child`` and ``restore_rows`` also serve the json group.
"""

# ruff: noqa: S604 - bench-made shell lines, from fixed names and our own paths

from __future__ import annotations

import contextlib
import re
import statistics
import threading
import time

from django.db import connection
from fixtures import drop_leftover_schemas
from sampling import Sample, manage, python_child, run_tree

from backups import storage
from backups.models import Backup, JobStatus, Restore
from backups.postgres import connect_separately


class RestoreSteps:
    """Steps of the restore, drill, blocked and upload groups; use the bench's ``pg_backup``,
    ``dump`` (its payload, decrypted) and ``upload_file`` (its stored archive)."""

    def steps_restore(self) -> list:
        return [
            ("raw restore", self.raw_restore),
            ("raw psql of our script", self.raw_script_restore),
            ("ours restore", self.ours_restore),
        ]

    def raw_restore(self) -> dict[str, Sample]:
        """pg_dump's own custom file of the clinic, through ``pg_restore -f - | psql -1``."""
        command = (
            f"{self.tools.pg_restore} --no-owner --no-privileges -f - {self.dump} | "
            f"{self.tools.psql} -X -q -v ON_ERROR_STOP=1 --single-transaction > /dev/null"
        )
        return {"restore: raw pg_restore -f - | psql -1": self.restore_aside(command)}

    def raw_script_restore(self) -> dict[str, Sample]:
        """Our payload, the plain SQL script, as the archive doc restores it by hand: ``psql -1 -f``."""
        command = f"{self.tools.psql} -X -q -v ON_ERROR_STOP=1 --single-transaction -f {self.script} > /dev/null"
        return {"restore: raw psql -1 -f of our SQL payload": self.restore_aside(command)}

    def restore_aside(self, command: str) -> Sample:
        """Run ``command`` (which recreates the clinic's schema) with the live schema renamed aside."""
        aside = f"{self.schema}_rawaside"
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER SCHEMA "{self.schema}" RENAME TO "{aside}"')
        try:
            sample = run_tree(command, shell=True, env=self.env)
        except Exception:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                cursor.execute(f'ALTER SCHEMA "{aside}" RENAME TO "{self.schema}"')
            raise
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{aside}" CASCADE')
        return sample

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
