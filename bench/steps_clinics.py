"""The clone and many groups' steps (mixins of ``run.Bench``): a clone of a small clinic's
backup against a new clinic through every migration, and a night of many clinics backed up
by django-q2 (1 and 2 workers, every backup requested at once; and the night as the dispatcher
hands it out) against a ``pg_dump -Fc`` loop.
"""

# ruff: noqa: S604 - bench-made shell lines, from fixed names and our own paths

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock

from django.db.models import QuerySet
from django.test import override_settings
from fixtures import drop_clinic
from sampling import Sample, TreeSampler, run_tree, timed
from startup import ROOT, TMP

from backups import storage
from backups.models import Backup, BackupPolicy, JobStatus
from backups.operations import schedule
from backups.services.backup import backup_request
from backups.services.clone import clone_request, clone_run, default_domain
from backups.services.policy import policy_for
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
        return [
            ("many raw", self.many_raw),
            ("many q1", lambda: self.many_q2(1)),
            ("many q2", lambda: self.many_q2(2)),
            ("many night", lambda: self.many_night(2)),
            ("many night 2 clusters", lambda: self.many_night(2, clusters=2)),
        ]

    def many_raw(self) -> dict[str, Sample]:
        out = TMP / "many.dump"
        loop = "; ".join(
            f"{self.tools.pg_dump} -Fc --schema='{s}' --no-owner --no-privileges -f {out}" for s in self.many_schemas
        )
        sample = run_tree(loop, shell=True, env=self.env)
        out.unlink(missing_ok=True)
        return {f"many: raw pg_dump -Fc loop, {self.many} clinics": sample}

    def many_q2(self, workers: int) -> dict[str, Sample]:
        """Every clinic's manual backup requested at once, then a cluster of ``workers`` drains the queue."""
        ids = [
            backup_request(clinic=s, payload_format="pg", requested_by="bench", enqueue=True).pk
            for s in self.many_schemas
        ]
        sample = run_cluster(workers, lambda: Backup.objects.filter(pk__in=ids))
        return {f"many: django-q2, {workers} worker{'s' if workers > 1 else ''}, {self.many} clinics": sample}

    def many_night(self, workers: int, clusters: int = 1) -> dict[str, Sample]:
        """The night as it runs: every clinic due (its policy at 00:00 UTC), the dispatcher run once,
        each finished daily backup handing out the next, ``BACKUPS_NIGHT_CONCURRENCY`` = 2 × the
        workers of all ``clusters`` (separate ``qcluster`` processes sharing the broker, as machines would)."""
        clinics = Clinic.objects.filter(schema_name__in=self.many_schemas)
        clinics.update(time_zone="UTC")
        for clinic in clinics:
            policy_for(clinic)
        others = list(
            BackupPolicy.objects.exclude(clinic__in=clinics).filter(enabled=True).values_list("pk", flat=True)
        )
        BackupPolicy.objects.filter(pk__in=others).update(enabled=False)
        BackupPolicy.objects.filter(clinic__in=clinics).update(enabled=True, run_at=clock(0, 0))
        today = datetime.now(UTC).date()
        Backup.objects.filter(clinic__in=clinics, scheduled_for=today).update(scheduled_for=None)
        handed = 2 * workers * clusters  # each worker finds its next clinic waiting in the broker
        try:
            with override_settings(BACKUPS_NIGHT_CONCURRENCY=handed):
                sample = run_cluster(
                    workers,
                    lambda: Backup.objects.filter(clinic__in=clinics, scheduled_for=today),
                    start=schedule.dispatch,
                    env={"BACKUPS_NIGHT_CONCURRENCY": str(handed)},
                    expected=len(self.many_schemas),
                    clusters=clusters,
                )
        finally:
            BackupPolicy.objects.filter(pk__in=others).update(enabled=True)
        if clusters > 1:
            return {
                f"many: the night (dispatcher, {clusters} clusters of {workers} workers), {self.many} clinics": sample
            }
        return {f"many: the night (dispatcher, {workers} workers), {self.many} clinics": sample}


def run_cluster(
    workers: int,
    rows: Callable[[], QuerySet],
    *,
    start: Callable[[], object] | None = None,
    env: dict[str, str] | None = None,
    expected: int | None = None,
    clusters: int = 1,
) -> Sample:
    """Start ``clusters`` × ``manage.py qcluster`` with ``workers`` each; ``start()`` once they run;
    wait until ``rows()`` holds ``expected`` rows (default: as many as at the start), none pending or
    running; stop them. The sample: seconds from the clusters' start, their processes' peak memory
    (summed), the archives' bytes."""
    count = expected if expected is not None else rows().count()
    environ = {**os.environ, "Q_WORKERS": str(workers), **(env or {})}
    began = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=(TMP / "qcluster.log").open("ab"),
            start_new_session=True,
        )
        for _ in range(clusters)
    ]
    samplers = [TreeSampler(proc.pid) for proc in procs]
    for sampler in samplers:
        sampler.start()
    if start is not None:
        start()
    deadline = time.monotonic() + 60 + 5 * count
    try:
        while rows().count() < count or rows().filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).exists():
            if time.monotonic() > deadline or any(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"django-q2 did not finish {count} backups (see {TMP / 'qcluster.log'})")
            time.sleep(0.05)
        seconds = time.perf_counter() - began
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for sampler in samplers:
            sampler.done.set()
            sampler.join()
    done = list(rows())
    failed = sum(r.status != JobStatus.SUCCEEDED for r in done)
    span = (max(r.finished_at for r in done) - min(r.started_at or r.requested_at for r in done)).total_seconds()
    size = sum(r.size or 0 for r in done)
    for row in done:
        if row.storage_name:
            storage.delete_stored(row.storage_name)
    rows().delete()
    notes = {"first start to last end s": round(span, 2), "failed": failed}
    return Sample(seconds, peak=sum(sampler.peak for sampler in samplers), size=size, notes=notes)
