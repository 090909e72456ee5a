"""Backup services: request a backup, run it, and recover from crashed workers.

Everything the admin, the commands and the django-q2 tasks do goes through these
functions. They take ids and return catalog rows; failures end in a failed row carrying a
readable reason, never in an exception that leaves a row claiming to be running.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import IO

from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from backups import archive, formats, jobs, media, postgres, storage
from backups.audit import audit
from backups.conf import conf
from backups.exceptions import (
    BackupRefused,
    ClinicBusy,
    ClinicNotFound,
    RespaldoError,
    translated,
)
from backups.keys.clinic import writing_identity
from backups.manifest import manifest_build, manifest_summary
from backups.models import ACTIVE_STATUSES, AuditEntry, Backup, JobStatus, Restore
from backups.selectors.catalog import active_job
from backups.signals import backup_finished
from clinics.models import Clinic

logger = logging.getLogger(__name__)
FAIR_USE_WINDOW = timedelta(days=1)  # manual backups count against the limit this long

ARCHIVE_EXTENSION = "respaldo"


# --- Requesting ------------------------------------------------------------------------


def clinic_get(clinic: Clinic | int | str) -> Clinic:
    """Return a clinic by instance, id or schema name; never the platform's public tenant, nor an
    offboarded clinic (its schema is gone)."""
    if isinstance(clinic, Clinic):
        found = clinic
    else:
        lookup = {"pk": clinic} if isinstance(clinic, int) else {"schema_name": clinic}
        found = Clinic.objects.filter(**lookup).first()
        if found is None:
            raise ClinicNotFound("clinic_not_found", clinic=str(clinic))
    if found.schema_name == get_public_schema_name():
        raise ClinicNotFound("platform_not_clinic")
    if found.offboarded_at is not None:
        raise ClinicNotFound("clinic_offboarded", clinic=found.schema_name)
    return found


def check_not_busy(clinic: Clinic, *, restoring_ok: bool = False) -> None:
    """Raise ClinicBusy when the clinic has a backup or restore waiting or running.

    ``restoring_ok``: a restore's own safety backup may start while that restore runs.
    Call it under the clinic's row lock (``select_for_update``), as the request services do.
    """
    busy = active_job(clinic.pk)
    if busy is not None:
        raise ClinicBusy("clinic_busy", "clinic_busy_backup", clinic=clinic.schema_name, backup=busy.pk)
    restoring = Restore.objects.filter(clinic_id=clinic.pk, status__in=ACTIVE_STATUSES).first()
    if restoring is not None and not restoring_ok:
        raise ClinicBusy("clinic_busy", "clinic_busy_restore", clinic=clinic.schema_name, restore=restoring.pk)


@translated()
def backup_request(
    *,
    clinic: Clinic | int | str,
    kind: str = Backup.Kind.MANUAL,
    payload_format: str = Backup.Format.PG,
    requested_by: str = "",
    note: str = "",
    enqueue: bool = True,
    retry_of: Backup | None = None,
    scheduled_for: date | None = None,
    address: str | None = None,
    token: str | None = None,
) -> Backup:
    """Create a pending backup row; with ``enqueue``, hand it to a worker once committed.

    Raises ClinicNotFound for an unknown clinic and ClinicBusy when the clinic
    already has a backup or restore waiting or running (checked under a row lock on the
    clinic, and backed by a unique index). ``token``: the prefix of the API token that asked
    (audited). ``scheduled_for``: the clinic's local day a
    scheduled backup is for; a second one for that day raises IntegrityError (unique).
    """
    if payload_format not in Backup.Format.values:
        raise BackupRefused("unknown_backup_format", format=str(payload_format), known=", ".join(Backup.Format.values))
    target = clinic_get(clinic)
    with transaction.atomic():
        Clinic.objects.select_for_update().get(pk=target.pk)
        check_not_busy(target, restoring_ok=kind == Backup.Kind.PRE_RESTORE)
        if kind == Backup.Kind.MANUAL and retry_of is None:
            _check_fair_use(target)
        backup = Backup.objects.create(
            clinic=target,
            kind=kind,
            payload_format=payload_format,
            requested_by=requested_by,
            note=note[:200] if note else (retry_of.note if retry_of else ""),
            retry_of=retry_of,
            attempt=(retry_of.attempt + 1) if retry_of else 1,
            scheduled_for=scheduled_for,
        )
        audit(
            AuditEntry.Action.BACKUP_REQUESTED,
            clinic_id=target.pk,
            actor=requested_by,
            address=address,
            via_token=token,
            backup_id=backup.pk,
            kind=str(kind),
            format=str(payload_format),
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue_backup(backup.pk))
    return backup


@dataclass(frozen=True)
class FairUse:
    """A clinic's manual backups of the last 24 hours against its limit, and when the oldest stops counting."""

    limit: int
    used: int
    frees_at: datetime | None  # when the oldest counted backup leaves the 24 hours (None: none counted)

    @property
    def reached(self) -> bool:
        return self.used >= self.limit


def fair_use_status(clinic: Clinic | int, now: datetime | None = None) -> FairUse:
    """How many manual backups ``clinic`` asked for in the last 24 hours (``BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY``)."""
    now = now or timezone.now()
    clinic_id = clinic if isinstance(clinic, int) else clinic.pk
    made = list(
        Backup.objects.filter(
            clinic_id=clinic_id, kind=Backup.Kind.MANUAL, retry_of__isnull=True, requested_at__gte=now - FAIR_USE_WINDOW
        )
        .order_by("requested_at")
        .values_list("requested_at", flat=True)
    )
    return FairUse(
        limit=conf.max_manual_backups_per_day, used=len(made), frees_at=made[0] + FAIR_USE_WINDOW if made else None
    )


def _check_fair_use(clinic: Clinic) -> None:
    """Refuse one manual backup too many in 24 hours (``BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY``)."""
    status = fair_use_status(clinic)
    if status.reached:
        raise BackupRefused("fair_use_backups", limit=status.limit)


def _enqueue_backup(backup_id: int) -> None:
    from django_q.tasks import async_task

    Backup.objects.filter(pk=backup_id).update(handed_at=timezone.now())
    async_task("backups.tasks.run_backup", backup_id, task_name=f"backup-{backup_id}", group="backups")


def backup_rehand_lost(now: datetime | None = None, *, older_than: timedelta | None = None) -> list[int]:
    """Hand again every pending backup handed to the broker longer than ``older_than`` ago
    (default ``BACKUPS_LOST_AFTER_SECONDS``); return their ids.

    django-q2's Redis broker has no receipts: the tasks a cluster had taken when it died are
    gone, and their rows would stay pending (and their clinics busy) for ever. Handing one
    again is harmless if it was only slow: a backup runs once, whoever gets it first
    (``backup_run`` leaves a row it does not find pending alone).
    """
    now = now or timezone.now()
    older_than = timedelta(seconds=conf.lost_after_seconds) if older_than is None else older_than
    lost = list(
        Backup.objects.filter(status=JobStatus.PENDING, handed_at__lte=now - older_than).values_list("pk", flat=True)
    )
    for pk in lost:
        logger.warning("Backup #%s handed to the workers over %s ago never started: handed again", pk, older_than)
        _enqueue_backup(pk)
    return lost


# --- Running ---------------------------------------------------------------------------


def backup_fail(backup_id: int, reason: RespaldoError | str) -> None:
    """Record a backup as failed with ``reason`` (from pending or running); it keeps no object."""
    jobs.fail(Backup, backup_id, reason, storage_name="")


def backup_run(*, backup_id: int) -> Backup:
    """Run a pending backup to the end and return its final row.

    A backup found already running was interrupted (its worker died and the queue gave
    the job out again): it is marked failed and a fresh attempt is run instead, up to
    ``BACKUPS_MAX_ATTEMPTS``. A finished backup is left alone. The end of a backup this call
    settled is announced (``backup_finished``) once committed.
    """
    backup = Backup.objects.select_related("clinic").get(pk=backup_id)
    if backup.status == JobStatus.RUNNING:
        if jobs.clinic_lock_is_held(backup.clinic_id):
            return backup  # still running elsewhere: a duplicate delivery, not a crash
        recovered = backup_recover_crashed(backup)
        if recovered.retry is not None:
            return backup_run(backup_id=recovered.retry.pk)
        row = Backup.objects.get(pk=backup_id)
        if recovered.failed:
            _announce(row)
        return row
    if backup.status != JobStatus.PENDING:
        return backup
    return jobs.run(
        Backup,
        backup_id,
        lock=jobs.clinic_lock(backup.clinic_id),
        busy=ClinicBusy("clinic_busy", "clinic_locked"),
        phase=Backup.Phase.STARTING,
        execute=lambda: _execute(Backup.objects.select_related("clinic").get(pk=backup_id)),
        on_failure=lambda reason: backup_fail(backup_id, reason),
        label="Backup",
        log=logger,
        finished=_announce,
    )


def _announce(backup: Backup) -> None:
    """Tell who listens (email, webhooks) that ``backup`` ended, once committed."""
    if backup.status in jobs.FINAL_STATUSES:
        jobs.announce(backup_finished, Backup, backup=backup)


@dataclass(frozen=True)
class Recovered:
    """What :func:`backup_recover_crashed` did: whether it failed the backup (False: the backup
    had ended meanwhile, and was left alone), and the new attempt it made, if any."""

    failed: bool
    retry: Backup | None = None


def backup_recover_crashed(backup: Backup) -> Recovered:
    """Mark an interrupted backup failed (removing what it had stored); make a new pending
    attempt if attempts remain.

    The row is locked and read again first: a backup that ended since the caller saw it
    running (its worker finished between the caller's look and the lock check) is left as it
    ended, its archive kept. A safety backup (pre-restore) is never retried: the restore it
    was taken for has stopped too, and is settled on its own (``restores.restore_recover_crashed``).
    """
    # The failure and its retry in one transaction: whoever counts the night's backups under way
    # (``schedule.night_room``) sees either the dead one or its retry, never a free place between.
    with transaction.atomic():
        current = Backup.objects.select_for_update().filter(pk=backup.pk, status__in=ACTIVE_STATUSES).first()
        if current is None:
            return Recovered(failed=False)
        backup_fail(backup.pk, RespaldoError("interrupted", "interrupted_backup"))
        retry = None
        if backup.kind != Backup.Kind.PRE_RESTORE and backup.attempt < conf.max_attempts:
            try:
                with transaction.atomic():
                    retry = backup_request(
                        clinic=backup.clinic_id,
                        kind=backup.kind,
                        payload_format=backup.payload_format,
                        requested_by=backup.requested_by,
                        retry_of=backup,
                        enqueue=False,
                        scheduled_for=backup.scheduled_for,
                    )
            except ClinicBusy:
                retry = None
    if current.storage_name:
        storage.delete_stored(current.storage_name)
    return Recovered(failed=True, retry=retry)


def backup_sweep_stale(*, older_than: timedelta | None = None) -> list[Backup]:
    """Fail running backups whose worker is gone and queue a retry for each; return the retries.

    Gone means: the clinic's job lock is free although the row says running, and the row
    started more than ``older_than`` ago (default ``BACKUPS_STALE_AFTER_SECONDS``).
    """
    if older_than is None:
        older_than = timedelta(seconds=conf.stale_after_seconds)
    cutoff = timezone.now() - older_than
    retries = []
    for backup in Backup.objects.filter(status=JobStatus.RUNNING, started_at__lte=cutoff).select_related("clinic"):
        if jobs.clinic_lock_is_held(backup.clinic_id):
            continue
        retry = backup_recover_crashed(backup).retry
        if retry is not None:
            transaction.on_commit(lambda pk=retry.pk: _enqueue_backup(pk))
            retries.append(retry)
    return retries


# --- The pipeline ----------------------------------------------------------------------


def _set_phase(backup_id: int, phase: str) -> None:
    Backup.objects.filter(pk=backup_id).update(progress_phase=phase)


class _ProgressWriter:
    """Counts bytes written on the way to storage and records progress every few seconds.

    Runs in the producer thread, so it writes through its own autocommit connection.
    """

    def __init__(self, out: IO[bytes], backup_id: int, every: float = 2.0):
        self.out, self.backup_id, self.every = out, backup_id, every
        self.count, self._last, self._conn = 0, 0.0, None

    def write(self, data: bytes) -> int:
        written = self.out.write(data)
        self.count += len(data)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            with contextlib.suppress(Exception):
                if self._conn is None:
                    self._conn = postgres.connect_separately(autocommit=True)
                self._conn.execute(
                    sql.SQL("UPDATE public.{} SET progress_bytes = %s WHERE id = %s").format(
                        sql.Identifier(Backup._meta.db_table)
                    ),
                    [self.count, self.backup_id],
                )
        return written

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _execute(backup: Backup) -> None:
    clinic = backup.clinic
    schema = clinic.schema_name
    if not postgres.schema_exists(schema):
        raise BackupRefused("schema_missing", schema=schema)
    identities = [writing_identity(clinic)]  # the clinic's own key (crypto-erasure), never the deployment's
    extra = [clinic.backup_recipient] if clinic.backup_recipient else []
    dumper = formats.dumper_for(backup.payload_format)
    storage.check_storage()
    name = storage.backup_key(schema=schema, kind=backup.kind, created_at=timezone.now(), ext=ARCHIVE_EXTENSION)
    _set_phase(backup.pk, Backup.Phase.SNAPSHOT)
    with postgres.schema_snapshot(schema) as snap:
        tables = dumper.tables(snap)
        assert snap.conn is not None
        files, missing = media.media_list(schema, media.named_files(snap.conn, schema))
        manifest = manifest_build(
            media_missing=missing,
            clinic=clinic,
            backup_id=backup.pk,
            kind=backup.kind,
            note=backup.note,
            payload_format=backup.payload_format,
            tables=tables,
            migrations=snap.migrations,
            server_version=snap.server_version,
            dump_tool=dumper.dump_tool,
            payload=dumper.payload,
        )

        def produce(out: IO[bytes]) -> archive.ArchiveSummary:
            progress = _ProgressWriter(out, backup.pk)
            try:
                with dumper.stream(schema, snap) as payload:
                    return archive.write_archive(
                        payload,
                        progress,
                        manifest=manifest,
                        identities=identities,
                        extra_recipients=extra,
                        level=conf.zstd_level,
                        threads=conf.zstd_threads,
                        media=files,
                    )
            finally:
                progress.close()

        # Recorded before writing, so that whoever finds this job crashed can remove what
        # the dead worker left behind (a partial file, an unfinished multipart upload).
        Backup.objects.filter(pk=backup.pk).update(progress_phase=Backup.Phase.DUMPING, storage_name=name)
        stored, summary = storage.store_stream(name, produce)
    try:
        dumper.check(tables)
    except RespaldoError:
        storage.delete_stored(stored.name)
        raise
    _record_success(backup, stored, summary)


def _record_success(backup: Backup, stored: storage.StoredObject, summary: archive.ArchiveSummary) -> None:
    done = jobs.succeed(
        Backup,
        backup.pk,
        note=media.missing_files_note(summary.manifest, "backup_media_missing"),
        storage_name=stored.name,
        size=stored.size,
        sha256=stored.sha256,
        manifest=manifest_summary(summary.manifest),
        progress_bytes=stored.size,
    )
    if not done:  # someone (the sweeper) gave up on us meanwhile: keep nothing
        storage.delete_stored(stored.name)
