"""The backup group's steps (a mixin of ``run.Bench``): our pg backup against ``pg_dump -Fc``,
the raw ``pg_dump -Z0 | zstd -1 | age`` pipe and django-dbbackup, on the bench clinic.

``ours_backup`` also serves the json group (``--format json`` on the json clinic).
"""

# ruff: noqa: S604 - bench-made shell lines, from fixed names and our own paths

from __future__ import annotations

import importlib.util
import os
import shutil

from fixtures import backup_id_from
from report import DBBACKUP, RAW_PIPE
from sampling import Sample, manage, run_tree
from startup import ROOT, TMP

from backups import storage
from backups.models import Backup, JobStatus


class BackupSteps:
    """Steps of the backup group; uses the bench's ``schema``, ``tools`` and ``env``, sets ``missing``."""

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
