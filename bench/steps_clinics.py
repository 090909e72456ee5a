"""The clone and many groups' steps (mixins of ``run.Bench``): a clone of a small clinic's
backup against a new clinic through every migration, and a night of many clinics backed up
by django-q2 (1 and 2 workers) against a ``pg_dump -Fc`` loop.
"""

# ruff: noqa: S604 - bench-made shell lines, from fixed names and our own paths

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fixtures import drop_clinic
from sampling import Sample, TreeSampler, run_tree, timed
from startup import ROOT, TMP

from backups import storage
from backups.models import Backup, JobStatus
from backups.services.backup import backup_request
from backups.services.clone import clone_request, clone_run, default_domain
from clinics.models import Clinic, Domain


class CloneSteps:
    """Steps of the clone group; use the bench's ``tiny_backup`` (of the 40-patient clinic)."""

    def steps_clone(self) -> list:
        return [("migrations", self.clinic_by_migrations), ("clone", self.clone)]

    def clinic_by_migrations(self) -> dict[str, Sample]:
        drop_clinic("benchnew")

        def run() -> None:
            clinic = Clinic(schema_name="benchnew", name="benchnew")
            clinic.save(verbosity=0)
            Domain.objects.create(domain=default_domain("benchnew"), tenant=clinic, is_primary=True)

        sample = timed(run)
        drop_clinic("benchnew")
        return {"clone: new empty clinic through migrations (in-process)": sample}

    def clone(self) -> dict[str, Sample]:
        drop_clinic("benchclone")

        def run() -> None:
            job = clone_request(
                source_backup_id=self.tiny_backup.pk,
                schema_name="benchclone",
                name="benchclone",
                requested_by="bench",
                enqueue=False,
            )
            job = clone_run(clone_id=job.pk)
            if job.status != "succeeded":
                raise RuntimeError(f"clone failed: {job.error}")

        sample = timed(run)
        drop_clinic("benchclone")
        return {"clone: ours, of a 40-patient clinic's pg backup (in-process)": sample}


class ManySteps:
    """Steps of the many group; use the bench's ``many_schemas`` (``many`` copies of the small clinic)."""

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
            backup_request(clinic=s, payload_format="pg", requested_by="bench", enqueue=True).pk
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
