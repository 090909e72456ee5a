"""Offboarding: a clinic leaves. A last backup, then its schema and domains go; its backups stay
for ``BACKUPS_OFFBOARD_KEEP_DAYS`` (90 by default) and are then erased (``erase_offboarded``).

Deleting a Clinic row is never the way (the catalog refers to it): the row stays, marked
``offboarded_at``, so its backups can still be listed, downloaded by the platform, and used to
bring the clinic back.

Erasure (:func:`erase_clinic_backups`, also used on its own for a data-protection request) is
crypto-erasure: the clinic's archive key, which lives only in the backup storage (never in this
database: ``backups.keys.clinic``), is destroyed, then every stored backup deleted. It holds the
clinic's job lock and locks its backup rows against a concurrent legal hold.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import sql

from backups import jobs, storage
from backups.audit import SYSTEM, audit
from backups.conf import conf
from backups.exceptions import BackupRefused, ClinicBusy, RespaldoError, RestoreRefused, translated
from backups.keys.clinic import erase_clinic_key
from backups.models import ACTIVE_STATUSES, AuditEntry, Backup, BackupPolicy, ClinicKey, JobStatus, Restore
from backups.services.backup import backup_request, backup_run, clinic_get
from clinics.models import Clinic, Domain

logger = logging.getLogger(__name__)


@translated()
def offboard_clinic(*, clinic: Clinic | int | str, requested_by: str, address: str | None = None) -> Backup:
    """Take a last backup of the clinic, then drop its schema and domains; return that backup.

    Refused (nothing changes) when the clinic is busy, already offboarded, or the last backup fails.
    """
    target = clinic_get(clinic)  # refuses an offboarded clinic
    final = backup_request(
        clinic=target.pk, requested_by=requested_by, note="offboarding", enqueue=False, address=address
    )
    final = backup_run(backup_id=final.pk)
    if final.status != JobStatus.SUCCEEDED:
        raise BackupRefused("offboard_backup_failed", clinic=target.schema_name, backup=final.pk)
    with transaction.atomic():
        Clinic.objects.select_for_update().get(pk=target.pk)
        _drop_schema(target.schema_name)
        Domain.objects.filter(tenant_id=target.pk).delete()
        BackupPolicy.objects.filter(clinic_id=target.pk).update(enabled=False)
        Clinic.objects.filter(pk=target.pk).update(offboarded_at=timezone.now())
        audit(
            AuditEntry.Action.OFFBOARDED,
            clinic_id=target.pk,
            actor=requested_by,
            address=address,
            backup_id=final.pk,
            keep_days=conf.offboard_keep_days,
        )
    logger.info("Clinic %s offboarded; last backup #%s", target.schema_name, final.pk)
    return final


def erase_offboarded(now: datetime | None = None) -> int:
    """Erase the backups of clinics offboarded over ``BACKUPS_OFFBOARD_KEEP_DAYS`` ago
    (:func:`erase_clinic_backups`); returns how many stored backups were deleted.

    A clinic with a held backup is left alone, key and all (also one whose erasure is refused
    because a hold or a job came in meanwhile: the next run tries again)."""
    now = now or timezone.now()
    limit = now - timedelta(days=conf.offboard_keep_days)
    with_keys = ClinicKey.objects.filter(erased_at__isnull=True).values("clinic_id")
    with_backups = Backup.objects.stored()
    clinics = Clinic.objects.filter(offboarded_at__lt=limit).filter(
        Q(pk__in=with_keys) | Q(pk__in=with_backups.values("clinic_id"))
    )
    reason = f"offboarded over {conf.offboard_keep_days} days ago"
    erased = 0
    held = Backup.objects.filter(held_at__isnull=False, expired_at__isnull=True).values("clinic_id")
    for clinic in clinics.exclude(pk__in=held):
        try:
            erased += erase_clinic_backups(clinic, actor=SYSTEM, reason=reason, now=now).deleted
        except BackupRefused as exc:
            logger.warning("The backups of offboarded clinic %s were not erased: %s", clinic.schema_name, exc)
    return erased


@dataclass(frozen=True)
class Erasure:
    """What :func:`erase_clinic_backups` did: how many stored backups it deleted, and which it kept
    because they were put on legal hold while it ran (after the key was destroyed)."""

    deleted: int
    kept_held: list[int] = field(default_factory=list)


@translated()
def erase_clinic_backups(
    clinic: Clinic, *, actor: str, reason: str, address: str | None = None, now: datetime | None = None
) -> Erasure:
    """Crypto-erasure of a clinic's backups: its archive key destroyed, then every stored object deleted.

    Runs holding the clinic's job lock (no backup or restore starts meanwhile). The key goes
    first (``backups.keys.clinic.erase_clinic_key``), with the clinic's backup rows locked, so a
    legal hold cannot slip in between the check and the key's destruction: a held backup
    refuses the whole erasure (its key must survive) and nothing changes. From then on no key
    this deployment holds opens any of the clinic's archives, wherever a copy is. Then each
    object is deleted and its row marked expired (rows stay, for the record), one locked row at
    a time: a backup held by then is kept and reported (``Erasure.kept_held``); a storage
    failure leaves that row as it was, to be tried again. Refused while the clinic has a backup
    or restore waiting or running (it would write an archive to the key being destroyed).
    """
    now = now or timezone.now()
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(jobs.clinic_job_lock(clinic.pk, wait_seconds=1.0))
        except ClinicBusy:
            raise BackupRefused("clinic_busy_erase", clinic=clinic.schema_name) from None
        if _busy(clinic):
            raise BackupRefused("clinic_busy_erase", clinic=clinic.schema_name)
        with transaction.atomic():
            unexpired = list(Backup.objects.select_for_update().filter(clinic_id=clinic.pk, expired_at__isnull=True))
            held = sum(1 for backup in unexpired if backup.held_at is not None)
            if held:  # a held backup must stay readable: its key must survive
                raise BackupRefused("erase_held", clinic=clinic.schema_name, count=held)
            erase_clinic_key(clinic, actor=actor, reason=reason, address=address)
        stored = [
            backup.pk
            for backup in unexpired
            if backup.status == JobStatus.SUCCEEDED and backup.storage_name and backup.expired_at is None
        ]
        deleted, kept = 0, []
        for pk in sorted(stored):
            outcome = _erase_one(pk, actor=actor, reason=reason, now=now)
            deleted += outcome == "deleted"
            if outcome == "held":
                kept.append(pk)
    if kept:
        logger.warning(
            "Erasure of clinic %s: backups %s were put on legal hold meanwhile and kept", clinic.schema_name, kept
        )
    return Erasure(deleted=deleted, kept_held=kept)


def _erase_one(pk: int, *, actor: str, reason: str, now: datetime) -> str:
    """Delete one stored backup of an erasure, its row locked: 'deleted', 'held' (kept), or 'left'."""
    with transaction.atomic():
        backup = Backup.objects.select_for_update().filter(pk=pk, expired_at__isnull=True).first()
        if backup is None:
            return "left"
        if backup.held_at is not None:
            return "held"
        try:
            storage.delete_stored(backup.storage_name)
        except Exception:
            logger.exception("Could not erase backup #%s", backup.pk)
            return "left"
        Backup.objects.filter(pk=backup.pk).update(expired_at=now)
        audit(AuditEntry.Action.PRUNED, clinic_id=backup.clinic_id, actor=actor, backup_id=backup.pk, reason=reason)
    return "deleted"


def _busy(clinic: Clinic) -> bool:
    active = {"clinic_id": clinic.pk, "status__in": ACTIVE_STATUSES}
    return Backup.objects.filter(**active).exists() or Restore.objects.filter(**active).exists()


@translated()
def bring_back(
    *, clinic: Clinic | int, requested_by: str, backup_id: int | None = None, schema_name: str | None = None
) -> Backup:
    """Bring an offboarded clinic back from one of its backups (its newest by default).

    Its schema is created again (migrated, empty), its domain ``<schema>.<platform domain>``
    added, its policy switched on, then the backup is restored in this process. If that restore
    fails, the clinic goes back to offboarded exactly as it was (schema and domain dropped
    again) and the refusal is raised. Returns the backup restored.

    With a NEW ``schema_name``, the clinic comes back as a new clinic row of that schema (a
    clone of the backup, run in this process: ``backups.services.clone``), with the old
    clinic's name and policy; the offboarded row stays as it is, with its backups. A refused
    name or a failed clone creates nothing.
    """
    from backups.services import recover, restore

    target = Clinic.objects.get(pk=clinic.pk if isinstance(clinic, Clinic) else clinic)
    if target.offboarded_at is None:
        raise RespaldoError("clinic_not_offboarded", clinic=target.schema_name)
    source = _backup_to_bring_back(target, backup_id)
    if schema_name is not None and schema_name != target.schema_name:
        _bring_back_as_new(target, source, schema_name=schema_name, requested_by=requested_by)
        return source
    offboarded_at = target.offboarded_at
    target.create_schema(check_if_exists=True, verbosity=0)
    domain = Domain.objects.get_or_create(
        domain=recover.clinic_domain(target.schema_name), defaults={"tenant": target, "is_primary": True}
    )[0]
    Clinic.objects.filter(pk=target.pk).update(offboarded_at=None)
    try:
        request = restore.restore_request(
            clinic=target.pk, backup_id=source.pk, requested_by=requested_by, enqueue=False
        )
        done = restore.restore_run(restore_id=request.pk)
        if done.status != JobStatus.SUCCEEDED:
            raise RestoreRefused("bring_back_failed", clinic=target.schema_name, reason=done.error_params or {})
    except Exception:
        _drop_schema(target.schema_name)
        domain.delete()
        Clinic.objects.filter(pk=target.pk).update(offboarded_at=offboarded_at)
        raise
    BackupPolicy.objects.filter(clinic_id=target.pk).update(enabled=True)
    audit(AuditEntry.Action.BROUGHT_BACK, clinic_id=target.pk, actor=requested_by, backup_id=source.pk)
    return source


def _bring_back_as_new(old: Clinic, source: Backup, *, schema_name: str, requested_by: str) -> Clinic:
    """The offboarded clinic ``old`` cloned from ``source`` into a new clinic ``schema_name``; returns it."""
    from backups.services.clone import clone_request, clone_run
    from backups.services.policy import POLICY_FIELDS

    job = clone_request(
        source_backup_id=source.pk, schema_name=schema_name, name=old.name, requested_by=requested_by, enqueue=False
    )
    job = clone_run(clone_id=job.pk)
    if job.status != JobStatus.SUCCEEDED or job.clinic is None:
        raise RestoreRefused("bring_back_failed", clinic=old.schema_name, reason=job.error_params or {})
    new = job.clinic
    former = BackupPolicy.objects.filter(clinic_id=old.pk).first()
    if former is not None:  # the clinic keeps its own settings, switched on again
        settings = {field: getattr(former, field) for field in POLICY_FIELDS}
        BackupPolicy.objects.filter(clinic_id=new.pk).update(**{**settings, "enabled": True})
    audit(
        AuditEntry.Action.BROUGHT_BACK,
        clinic_id=new.pk,
        actor=requested_by,
        backup_id=source.pk,
        former_clinic=old.schema_name,
        former_clinic_id=old.pk,
        clone_id=job.pk,
    )
    logger.info("Offboarded clinic %s brought back as %s (clone #%s)", old.schema_name, schema_name, job.pk)
    return new


def bring_back_source(clinic: Clinic) -> Backup | None:
    """The backup :func:`bring_back` would restore by default (the newest stored one), or None."""
    try:
        return _backup_to_bring_back(clinic, None)
    except RestoreRefused:
        return None


def _backup_to_bring_back(clinic: Clinic, backup_id: int | None) -> Backup:
    restorable = Backup.objects.stored().filter(clinic_id=clinic.pk)
    source = (
        restorable.filter(pk=backup_id).first() if backup_id else restorable.order_by("-requested_at", "-pk").first()
    )
    if source is None:
        raise RestoreRefused("no_backup_to_bring_back", clinic=clinic.schema_name)
    return source


def _drop_schema(schema: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)).as_string(None))
