"""Restore services: replace one clinic's data with one of its backups, atomically.

The order of a restore is: verify the source (checksum against the catalog, this
deployment's authentication, the manifest names this clinic, a known format, migrations
the code knows), take a safety backup, then replace the data in ONE transaction and only
commit once every table's row count matches the manifest. Whatever fails, at whatever
point, leaves the clinic exactly as it was; the outcome column is written inside that same
transaction, so after a crash the catalog still says truthfully whether the data changed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management import call_command
from django.db import transaction
from psycopg import sql

from backups import archive, jobs, media, postgres
from backups.audit import audit
from backups.conf import conf
from backups.exceptions import RespaldoError, RestoreRefused, translated
from backups.formats import format_for
from backups.formats.pg import OLD_SCHEMA_SUFFIX  # noqa: F401 - the crash recovery and its tests name it
from backups.formats.scratch import STAGING_SUFFIX, check_read_to_the_end  # noqa: F401 - STAGING_SUFFIX: as above
from backups.keys.clinic import reading_identities
from backups.manifest import manifest_has_media
from backups.models import ACTIVE_STATUSES, AuditEntry, Backup, JobStatus, Restore
from backups.services import sessions
from backups.services.backup import backup_recover_crashed, backup_request, backup_run, check_not_busy, clinic_get
from backups.services.verification import VerifiedCopy, check_migrations, verified_copy
from backups.signals import restore_finished
from clinics.models import Clinic

logger = logging.getLogger(__name__)

# The phases of a restore, in order, as written to ``Restore.progress_phase``.
# A restore's phases are the model's (``Restore.Phase``); these names stay for their callers.
PHASE_VERIFYING = Restore.Phase.VERIFYING
PHASE_SAFETY_BACKUP = Restore.Phase.SAFETY_BACKUP
PHASE_RESTORING = Restore.Phase.RESTORING
PHASE_CHECKING = Restore.Phase.CHECKING
PHASE_SWAPPING = Restore.Phase.SWAPPING
PHASE_MIGRATING = Restore.Phase.MIGRATING


# --- Requesting ------------------------------------------------------------------------


@translated()
def restore_request(
    *,
    clinic: Clinic | int | str,
    backup_id: int,
    requested_by: str = "",
    address: str | None = None,
    enqueue: bool = True,
    token: str | None = None,
) -> Restore:
    """Create a pending restore of ``clinic`` from its backup ``backup_id`` (``token``: the API token that asked).

    Refuses (RestoreRefused, ClinicBusy) a backup of another clinic, one that did not succeed or has
    expired, and a clinic that already has a backup or restore waiting or running.
    """
    target = clinic_get(clinic)
    backup = Backup.objects.select_related("clinic").filter(pk=backup_id).first()
    if backup is None:
        raise RestoreRefused("backup_not_found", backup=backup_id)
    if backup.clinic_id != target.pk:
        raise RestoreRefused("backup_of_other_clinic", backup=backup.pk)
    _check_restorable(backup)
    with transaction.atomic():
        Clinic.objects.select_for_update().get(pk=target.pk)
        backup.refresh_from_db()  # retention prunes under this same lock: read the row again
        _check_restorable(backup)
        check_not_busy(target)
        restore = Restore.objects.create(clinic=target, backup=backup, requested_by=requested_by)
        audit(
            AuditEntry.Action.RESTORE_REQUESTED,
            clinic_id=target.pk,
            actor=requested_by,
            address=address,
            via_token=token,
            backup_id=backup.pk,
            restore_id=restore.pk,
        )
        if enqueue:
            transaction.on_commit(lambda: _enqueue_restore(restore.pk))
    return restore


def _check_restorable(backup: Backup) -> None:
    """Refuse a backup that did not succeed, or whose stored object retention removed."""
    if backup.expired_at is not None:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status="expired")
    if backup.status != JobStatus.SUCCEEDED or not backup.storage_name:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status=backup.status)


def _enqueue_restore(restore_id: int) -> None:
    from django_q.tasks import async_task

    async_task("backups.tasks.run_restore", restore_id, task_name=f"restore-{restore_id}", group="restores")


def restore_in_progress(clinic_id: int) -> Restore | None:
    """The clinic's restore while a worker is running it (its pages answer 'restore in progress').

    A restore is only ever running under the clinic's job lock, which PostgreSQL releases
    with the worker's connection: a row that says running while the lock is free lost its
    worker, changes nothing any more, and must not keep the clinic closed until the sweeper
    settles it.
    """
    restore = Restore.objects.select_related("backup").filter(clinic_id=clinic_id, status=JobStatus.RUNNING).first()
    if restore is None or not jobs.clinic_lock_is_held(clinic_id):
        return None
    return restore


def restore_blocks_readers(restore: Restore) -> bool:
    """Whether, at this phase of ``restore``, even reading the clinic must wait (its pages answer 503).

    A pg restore fills ``<clinic>__restoring`` without touching the live schema; only the
    final swap takes an ACCESS EXCLUSIVE lock on every live table, so only then would a
    reader queue behind it (and read nothing until the commit). A json restore loads IN
    PLACE (TRUNCATE + COPY in one transaction): from its load to its commit, every reader
    of the clinic's tables would wait on its locks. Anything else the clinic can still be read.
    """
    if restore.progress_phase == PHASE_SWAPPING:
        return True
    in_place = format_for(restore.backup.payload_format).in_place
    return in_place and restore.progress_phase in (PHASE_RESTORING, PHASE_CHECKING)


def phase_label(phase: str) -> str:
    """A restore phase as shown to people, in the active language (unknown phases as they are)."""
    return Restore(progress_phase=phase).phase_label()


# --- Running ---------------------------------------------------------------------------


def _update(restore_id: int, **changes) -> None:
    """Record progress on a restore (phase, safety backup, outcome) whatever its state."""
    Restore.objects.filter(pk=restore_id).update(**changes)


def _fail(restore_id: int, reason: RespaldoError | str) -> None:
    jobs.fail(Restore, restore_id, reason)


def restore_run(*, restore_id: int) -> Restore:
    """Run a pending restore to the end and return its final row. Never runs one twice.

    A restore found already running lost its worker: it is settled by
    ``restore_recover_crashed`` from what its transaction left, and never run again. The end
    of a restore this call settled is announced (``restore_finished``) once committed.
    """
    restore = Restore.objects.select_related("clinic", "backup").get(pk=restore_id)
    if restore.status == JobStatus.RUNNING:
        if jobs.clinic_lock_is_held(restore.clinic_id):
            return Restore.objects.get(pk=restore_id)
        restore_recover_crashed(restore)
        settled = Restore.objects.get(pk=restore_id)
        _announce(settled)
        return settled
    if restore.status != JobStatus.PENDING:
        return restore
    return jobs.run(
        Restore,
        restore_id,
        lock=jobs.clinic_lock(restore.clinic_id),
        busy=jobs.ClinicBusy("clinic_busy", "clinic_locked"),
        phase=PHASE_VERIFYING,
        execute=lambda: _execute(restore),
        on_failure=lambda reason: _settle_failure(restore_id, reason),
        label="Restore",
        log=logger,
        finished=_announce,
    )


def _announce(restore: Restore) -> None:
    """Tell who listens (email, webhooks) that ``restore`` ended, once committed."""
    if restore.status in jobs.FINAL_STATUSES:
        jobs.announce(restore_finished, Restore, restore=restore)


def _settle_failure(restore_id: int, reason: RespaldoError) -> None:
    """Fail the restore, saying whether the clinic changed (its outcome was written in the transaction)."""
    outcome = Restore.objects.get(pk=restore_id).outcome
    if outcome == Restore.Outcome.RESTORED:
        _fail(restore_id, RespaldoError(reason.code, "restore_failed_restored", reason=reason))
    else:
        _update(restore_id, outcome=Restore.Outcome.UNCHANGED)
        _fail(restore_id, RespaldoError(reason.code, "restore_failed_unchanged", reason=reason))


def restore_recover_crashed(restore: Restore) -> None:
    """Settle a restore whose worker died, from what its transaction committed (or not).

    Its safety backup, if the worker died while taking it, is settled with it (failed, and
    never retried: the restore it was for is over).
    """
    restore.refresh_from_db()
    if restore.status not in ACTIVE_STATUSES:
        return  # it ended since the caller saw it running (its worker finished meanwhile)
    if restore.safety_backup_id is not None:
        safety = Backup.objects.get(pk=restore.safety_backup_id)
        if safety.status in ACTIVE_STATUSES:
            backup_recover_crashed(safety)
    media.media_recover(restore.clinic.schema_name, restored=restore.outcome == Restore.Outcome.RESTORED)
    if restore.outcome == Restore.Outcome.RESTORED:
        try:
            _migrate_forward(restore)
        except Exception as exc:  # reported on the row; the data is restored either way
            _fail(restore.pk, RespaldoError("recovered_migration_failed", detail=str(exc)))
            return
        jobs.succeed(Restore, restore.pk, note=RespaldoError("recovered", "recovered_restore"))
        return
    _update(restore.pk, outcome=Restore.Outcome.UNCHANGED)
    _fail(restore.pk, RespaldoError("interrupted", "interrupted_restore"))


def restore_sweep_stale() -> list[Restore]:
    """Settle running restores whose worker is gone; returns them."""
    settled = []
    for restore in Restore.objects.filter(status=JobStatus.RUNNING):
        if not jobs.clinic_lock_is_held(restore.clinic_id):
            restore_recover_crashed(restore)
            settled.append(restore)
    return settled


# --- The restore itself ----------------------------------------------------------------


def _execute(restore: Restore) -> None:
    clinic, backup = restore.clinic, restore.backup
    with verified_copy(backup, clinic) as (manifest, verified):
        needs_migrate = check_migrations(manifest.get("migrations") or {})
        tools = format_for(manifest["payload_format"]).tools_for(manifest)
        if not postgres.schema_exists(clinic.schema_name):
            raise RestoreRefused("schema_missing", schema=clinic.schema_name)
        _take_safety_backup(restore)

        _update(restore.pk, progress_phase=PHASE_RESTORING)
        files = media.media_staging(clinic.schema_name) if manifest_has_media(manifest) else None
        _restore_data_and_files(restore, manifest, verified, tools, files)

    if needs_migrate:
        _update(restore.pk, progress_phase=PHASE_MIGRATING)
        _migrate_forward(restore)
    jobs.succeed(Restore, restore.pk, note=_media_note(manifest))


def _restore_data_and_files(
    restore: Restore, manifest: dict, verified: VerifiedCopy, tools: Any, files: media.Staging | None
) -> None:
    """The payload restored in its transaction while the files (if the archive has them) are staged;
    the files are switched in only once the data has committed. On failure the staged files go."""
    if files is not None:
        files.prepare()
    try:
        with verified.open(
            reading_identities(restore.clinic), media_sink=files.sink if files is not None else None
        ) as payload:
            format_for(manifest["payload_format"]).replace_live(
                payload,
                manifest,
                schema=restore.clinic.schema_name,
                tools=tools,
                hooks=_Replacing(restore, payload, files),
            )
    except BaseException:
        if files is not None:
            files.discard()
        raise
    if files is not None:
        files.switch()


def _media_note(manifest: dict) -> RespaldoError | None:
    """What the restore's row says about the clinic's files: not in this (version 1) backup, or some missing."""
    if not manifest_has_media(manifest):
        return RespaldoError("media_not_in_backup", "restore_media_not_in_backup")
    return media.missing_files_note(manifest, "restore_media_missing")


def _take_safety_backup(restore: Restore) -> None:
    _update(restore.pk, progress_phase=PHASE_SAFETY_BACKUP)
    safety = backup_request(
        clinic=restore.clinic_id, kind=Backup.Kind.PRE_RESTORE, requested_by=restore.requested_by, enqueue=False
    )
    _update(restore.pk, safety_backup=safety)
    safety = backup_run(backup_id=safety.pk)
    if safety.status != JobStatus.SUCCEEDED:
        raise RestoreRefused(
            "safety_backup_failed",
            backup=safety.pk,
            reason=safety.error_params or {"message_id": "unexpected", "params": {"detail": safety.error}},
        )


def _migrate_forward(restore: Restore) -> None:
    call_command("migrate_schemas", schema_name=restore.clinic.schema_name, interactive=False, verbosity=0)
    _update(restore.pk, migrated=True)


_UNTOUCHED = object()  # the restore replaces neither the sessions nor the users: nothing to carry


class _Replacing:
    """What the restore records while its format replaces the clinic's data (``formats.base.Replacing``)."""

    def __init__(self, restore: Restore, payload: archive.ArchiveReader, files: media.Staging | None) -> None:
        self.restore, self.payload, self.files = restore, payload, files
        self.app_name = f"respaldo-restore-{restore.pk}"
        self.lock_timeout_ms = conf.restore_lock_timeout_ms

    def read_to_the_end(self) -> None:
        check_read_to_the_end(self.payload, self.restore.backup)

    def checking(self) -> None:
        _update(self.restore.pk, progress_phase=PHASE_CHECKING)  # on Django's own, autocommit connection

    def closing(self) -> None:
        # Before the restoring transaction touches the restore's row: written on Django's own
        # connection, it would otherwise wait on that transaction's row lock forever.
        _update(self.restore.pk, progress_phase=PHASE_SWAPPING)  # the clinic's pages close (503) from here

    def take_sessions(self, cursor: Any, schema: str, replaced: set[str] | None) -> Any:
        if replaced is not None and not replaced & sessions.sign_in_tables():
            return _UNTOUCHED
        return sessions.take_live_sessions(cursor, schema)

    def put_sessions(self, cursor: Any, schema: str, taken: Any) -> None:
        if taken is not _UNTOUCHED:
            restore = self.restore
            sessions.put_sessions(cursor, schema, taken, restore_id=restore.pk, backup_id=restore.backup_id)

    def restored(self, cursor: Any | None) -> None:
        """The outcome written in the restoring transaction (``cursor``'s, or Django's), the files with it."""
        if cursor is None:
            Restore.objects.filter(pk=self.restore.pk).update(outcome=Restore.Outcome.RESTORED)
        else:
            cursor.execute(
                sql.SQL("UPDATE public.{} SET outcome = %s WHERE id = %s").format(
                    sql.Identifier(Restore._meta.db_table)
                ),
                [Restore.Outcome.RESTORED, self.restore.pk],
            )
        if self.files is not None:
            self.files.record(cursor)  # S3: the clinic's files switch with this commit
