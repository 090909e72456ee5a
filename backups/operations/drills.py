"""Proof that backups can be restored: verification and restore drills.

* :func:`verify` re-reads a stored backup once: its SHA-256 against the catalog, this
  deployment's authentication of the archive, the manifest naming the clinic. Success sets
  ``verified_at``.
* :func:`drill` restores the backup into a scratch schema ``<clinic>__drill_<backup id>``
  (its format's ``into_scratch``), compares every table's row count with the manifest,
  runs the tenant migrations check, and ROLLS BACK: nothing is ever committed, so the
  scratch schema never becomes visible to anyone and is gone at the end whatever happens.
  The live clinic is never locked nor touched (restore_into checks, before the end, that the
  drilling session holds no lock on it). Success sets ``drilled_at``, ``verified_at`` and
  ``drill_status = "succeeded"``.

A failure of either sets ``drill_status = "failed"`` and ``drill_error`` (the error record:
code, message id, parameters): a failed drill counts as a failed backup (see
:func:`failed_drills`). Both write an audit entry and send ``drill_finished``.

:func:`dispatch_drills` (called by the dispatcher every minute) enqueues a drill of each
clinic's newest successful backup when the clinic's newest drill is older than a week;
:func:`request_drill` queues one now for a clinic the platform picked ("drill selected now").
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from backups import postgres
from backups.audit import audit
from backups.exceptions import RespaldoError, RestoreRefused, as_respaldo_error, failure_reason, translated
from backups.formats import format_for
from backups.jobs.locks import CLINIC_JOBS, advisory_xact_lock
from backups.keys.clinic import reading_identities
from backups.models import AuditEntry, Backup, JobStatus
from backups.models.backup import DRILL_EVERY, DRILL_FAILED, DRILL_SUCCEEDED
from backups.services.verification import check_migrations, verified_copy, verify_stored
from backups.signals import drill_finished
from clinics.models import Clinic

logger = logging.getLogger(__name__)

DRILLS_PER_MINUTE = 3
SCRATCH_INFIX = "__drill_"
SUCCEEDED, FAILED = DRILL_SUCCEEDED, DRILL_FAILED
# Only one dispatcher at a time picks drills (a transaction-level advisory lock on this key).
_DISPATCH_LOCK_KEY = 0x44524C  # "DRL"


def scratch_schema(backup: Backup) -> str:
    """The schema a drill of ``backup`` restores into (never committed)."""
    return f"{backup.clinic.schema_name}{SCRATCH_INFIX}{backup.pk}"


def _load(backup: Backup | int) -> Backup:
    pk = backup.pk if isinstance(backup, Backup) else backup
    found = Backup.objects.select_related("clinic").get(pk=pk)
    if found.status != JobStatus.SUCCEEDED or found.expired_at or not found.storage_name:
        raise RestoreRefused("backup_not_restorable", backup=found.pk, status=found.get_status_display())
    return found


# --- Recording an outcome ---------------------------------------------------------------


def _finish(backup: Backup, action: str, fields: dict, **details) -> Backup:
    """Write the outcome and its audit entry together, then announce it."""
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk).update(**fields)
        audit(action, clinic_id=backup.clinic_id, backup_id=backup.pk, **details)
    backup.refresh_from_db()
    for receiver, result in drill_finished.send_robust(sender=Backup, backup=backup):
        if isinstance(result, Exception):  # a mail server down must not undo a recorded outcome
            logger.error("drill_finished receiver %r failed: %r", receiver, result, exc_info=result)
    return backup


def _failed(backup: Backup, action: str, exc: Exception) -> Backup:
    if as_respaldo_error(exc) is None:
        logger.exception("%s of backup #%s failed unexpectedly", action, backup.pk)
    reason = failure_reason(exc)
    fields = {"drill_status": FAILED, "drill_error": reason.record}
    if action == AuditEntry.Action.DRILLED:
        fields["drilled_at"] = timezone.now()
    logger.warning("%s of backup #%s failed: %s", action, backup.pk, reason)
    return _finish(backup, action, fields, outcome=FAILED, error=reason.record)


# --- Verification -----------------------------------------------------------------------


def check_stored(backup: Backup) -> None:
    """Read the stored object once; raise unless it is the catalog's, authenticated, of this clinic."""
    verify_stored(backup, backup.clinic)


def verify(backup: Backup | int) -> Backup:
    """Verify a stored backup (checksum, authentication, manifest); record and return the outcome."""
    backup = _load(backup)
    try:
        check_stored(backup)
    except Exception as exc:
        return _failed(backup, AuditEntry.Action.VERIFIED, exc)
    return _finish(backup, AuditEntry.Action.VERIFIED, {"verified_at": timezone.now()}, outcome=SUCCEEDED)


# --- Drills -----------------------------------------------------------------------------


def drop_leftover(schema: str) -> None:
    """Drop a scratch schema a crashed drill might have left (drills commit nothing, so normally none)."""
    with postgres.connect_separately(autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_drill(backup: Backup) -> None:
    """Verified copy → scratch restore → counts and migrations check → rolled back. Raises on failure."""
    drop_leftover(scratch_schema(backup))
    with verified_copy(backup, backup.clinic) as (manifest, copy):
        check_migrations(manifest.get("migrations") or {})
        payload_format = format_for(manifest["payload_format"])
        schema, app_name = scratch_schema(backup), f"respaldo-drill-{backup.pk}"
        with (
            copy.open(reading_identities(backup.clinic)) as payload,
            payload_format.into_scratch(backup, payload, manifest, schema=schema, app_name=app_name),
        ):
            pass  # restored, counted and read to its end: a drill keeps nothing


def drill(backup: Backup | int) -> Backup:
    """Drill a stored backup (see the module's docstring); record and return the outcome."""
    backup = _load(backup)
    started = timezone.now()
    try:
        run_drill(backup)
    except Exception as exc:
        return _failed(backup, AuditEntry.Action.DRILLED, exc)
    now = timezone.now()
    fields = {"drilled_at": now, "verified_at": now, "drill_status": SUCCEEDED, "drill_error": {}}
    seconds = round((now - started).total_seconds(), 1)
    return _finish(backup, AuditEntry.Action.DRILLED, fields, outcome=SUCCEEDED, seconds=seconds)


# --- What is due, and what failed -------------------------------------------------------


def newest_restorable(clinic_ref: OuterRef | int) -> QuerySet[Backup]:
    """A clinic's successful, still stored backups, newest first."""
    return Backup.objects.stored().filter(clinic_id=clinic_ref).order_by("-succeeded_at", "-id")


def drills_due(now: datetime, *, limit: int = DRILLS_PER_MINUTE) -> list[int]:
    """Ids of the newest backups to drill: clinics never drilled, or drilled over a week ago, first."""
    newest = newest_restorable(OuterRef("pk")).values("pk")[:1]
    # each clinic's newest drill by one probe of its partial index (not an aggregate of the catalog)
    drilled = Backup.objects.filter(clinic_id=OuterRef("pk"), drilled_at__isnull=False).order_by("-drilled_at")
    clinics = (
        Clinic.objects.exclude(schema_name=get_public_schema_name())
        .filter(offboarded_at__isnull=True)
        .annotate(newest=Subquery(newest), last_drill=Subquery(drilled.values("drilled_at")[:1]))
        # a stored backup exists (its first row answers); ``newest`` is computed for the picked only
        .filter(Exists(newest_restorable(OuterRef("pk"))))
        .filter(Q(last_drill__isnull=True) | Q(last_drill__lt=now - DRILL_EVERY))
    )
    requested = recently_requested(now)
    picked = clinics.exclude(pk__in=requested).order_by(F("last_drill").asc(nulls_first=True), "pk")
    return list(picked.values_list("newest", flat=True)[:limit])


def recently_requested(now: datetime) -> QuerySet:
    """Clinics with a drill requested in the last day (so a waiting drill is not queued again)."""
    return Backup.objects.filter(drill_requested_at__gte=now - timedelta(days=1)).values("clinic_id")


@contextlib.contextmanager
def _dispatch_lock() -> Iterator[bool]:
    """One dispatcher at a time picks drills; the others skip (a transaction-level advisory lock)."""
    with transaction.atomic():
        yield advisory_xact_lock(CLINIC_JOBS, _DISPATCH_LOCK_KEY)


def dispatch_drills(now: datetime | None = None, *, enqueue: bool = True) -> list[int]:
    """Enqueue at most a few drills (``backups.tasks.run_drill``); return the backup ids chosen.

    Each request is recorded on the backup (``drill_requested_at``), which keeps the clinic out
    of the next minutes' picks until the drill has run (or a day has passed).
    """
    now = now or timezone.now()
    with _dispatch_lock() as mine:
        if not mine:
            return []
        chosen = drills_due(now)
        Backup.objects.filter(pk__in=chosen).update(drill_requested_at=now)
        if enqueue:
            for pk in chosen:
                transaction.on_commit(lambda pk=pk: _enqueue_drill(pk))
    return chosen


def _enqueue_drill(backup_id: int) -> None:
    from django_q.tasks import async_task

    async_task("backups.tasks.run_drill", backup_id, task_name=f"drill-{backup_id}", group="drills")


def failed_drills() -> QuerySet[Backup]:
    """Backups whose last verification or drill failed: they count as failed backups."""
    return Backup.objects.filter(drill_status=FAILED)


def latest_to_check(schema: str | None = None) -> list[tuple[Clinic, Backup | None]]:
    """Each clinic (or the one named) with its newest successful stored backup, for the command line."""
    clinics = Clinic.objects.exclude(schema_name=get_public_schema_name()).filter(offboarded_at__isnull=True)
    clinics = clinics.order_by("schema_name")
    if schema:
        clinics = clinics.filter(schema_name=schema)
    return [(clinic, newest_restorable(clinic.pk).select_related("clinic").first()) for clinic in clinics]


class DrillRefused(RespaldoError):
    """A drill the platform asked for that cannot be queued."""


@translated()
def request_drill(clinic: Clinic, *, enqueue: bool = True) -> Backup:
    """Queue a drill of the clinic's newest stored backup now; returns that backup.

    Refused (:class:`DrillRefused`) for an offboarded clinic, one without a stored backup, or one
    with a drill asked for in the last day that has not run yet (the dispatcher's own rule). The
    drill writes its audit entry when it runs, as the dispatcher's drills do.
    """
    now = timezone.now()
    if clinic.offboarded_at is not None:
        raise DrillRefused("drill_refused", "drill_offboarded", clinic=clinic.name)
    with transaction.atomic():
        backup = newest_restorable(clinic.pk).select_for_update().first()
        if backup is None:
            raise DrillRefused("drill_refused", "drill_no_backup", clinic=clinic.name)
        waiting = Backup.objects.filter(clinic_id=clinic.pk, drill_requested_at__gte=now - timedelta(days=1))
        waiting = waiting.filter(Q(drilled_at__isnull=True) | Q(drilled_at__lt=F("drill_requested_at")))
        if waiting.exists():
            raise DrillRefused("drill_refused", "drill_waiting", clinic=clinic.name)
        Backup.objects.filter(pk=backup.pk).update(drill_requested_at=now)
        if enqueue:
            transaction.on_commit(lambda: _enqueue_drill(backup.pk))
    return backup
