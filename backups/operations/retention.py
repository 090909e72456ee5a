"""Retention: which backups of a clinic are kept (grandfather-father-son), and pruning the rest.

:func:`decide` is pure: plain records, the policy's numbers, ``now`` and the clinic's time
zone in; one :class:`Decision` per row out, with every reason that applies. The rules, as
implemented:

* **Pending and running rows** are never touched; **expired rows** (object already removed)
  stay as they are, for the record.
* **Failed rows** have no object: the row is deleted once ``requested_at`` is
  ``keep_failed_days`` or more ago (a leftover object, if one is named, is deleted first).
* **Successful, not expired backups of every kind** (scheduled, manual, uploaded and
  pre-restore alike) form one history, each placed at its ``requested_at`` (an uploaded file
  at its upload time) in the clinic's time zone. One is kept when at least one of these holds:

  - it is the **newest** (never pruned, whatever the policy says, even with every count 0);
  - it is **in use**: a pending or running restore reads it, or the caller names it (a drill);
  - it is the newest of one of the newest ``keep_daily`` local calendar days that have a
    backup ("daily 3/7"), of one of the newest ``keep_weekly`` ISO weeks that have one
    ("weekly 2026-W47"), or of one of the newest ``keep_monthly`` months ("monthly 2026-10");
    each rule picks its own slots, so one backup may hold several;
  - it is younger than ``keep_min_days`` (elapsed time: ``now - requested_at`` below that
    many 24-hour days);
  - it is a **pre-restore (safety) backup** younger than ``keep_pre_restore_days``. After
    that, it is an ordinary backup: it may hold a day, week or month slot like any other
    (it is a full copy of the clinic as it was), and goes when no rule keeps it.

  Everything else is pruned: the stored object is deleted, then ``expired_at`` is set.

Days, weeks and months are the clinic's local ones, so a backup at 00:30 on the day clocks
change, or at 23:30 on a month's last day, lands where the clinic's calendar says. Pruning is
stable: run twice at the same moment, the second run prunes nothing (a bucket's newest
backup is never pruned, so the buckets stay the same).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.audit import audit
from backups.models import ACTIVE_STATUSES, AuditEntry, Backup, BackupPolicy, JobStatus, Restore
from backups.services.policy import policy_for
from backups.storage import StorageError, delete_stored
from clinics.models import Clinic

logger = logging.getLogger(__name__)

DRILL = "a drill"  # what a backup named by the caller (``in_use_ids``) is in use by


class Action(StrEnum):
    KEEP = "keep"
    PRUNE = "prune"  # delete the stored object, then mark the row expired
    DELETE_ROW = "delete_row"  # a failed row past its age limit
    LEAVE = "leave"  # not retention's business: a pending or running job, or an expired row


@dataclass(frozen=True)
class Record:
    """What retention needs to know of one catalog row."""

    id: int
    kind: str
    status: str
    requested_at: datetime  # aware
    expired: bool = False
    held: bool = False  # on legal hold: never pruned


@dataclass(frozen=True)
class Rules:
    """The retention numbers of a policy (``BackupPolicy``'s defaults)."""

    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    keep_min_days: int = 30
    keep_pre_restore_days: int = 7
    keep_failed_days: int = 30

    @classmethod
    def of(cls, policy: BackupPolicy) -> Rules:
        return cls(**{name: getattr(policy, name) for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        return (
            f"daily {self.keep_daily}, weekly {self.keep_weekly}, monthly {self.keep_monthly}, "
            f"everything younger than {self.keep_min_days} days, safety backups {self.keep_pre_restore_days} days, "
            f"failed rows {self.keep_failed_days} days"
        )


@dataclass(frozen=True)
class Decision:
    """What retention decided for one row, why, and (after :func:`prune_clinic`) what it did."""

    backup_id: int
    action: Action
    reasons: tuple[str, ...]
    kind: str = ""
    status: str = ""
    requested_at: datetime | None = None
    done: str = ""  # what was done ("pruned", "row deleted", ...); empty in a dry run
    error: str = ""  # why it could not be done: the row is unchanged

    @property
    def reason(self) -> str:
        return ", ".join(self.reasons)


# --- the pure decision -------------------------------------------------------------------------


def _day(local: datetime) -> Hashable:
    return local.date()


def _week(local: datetime) -> Hashable:
    return tuple(local.isocalendar())[:2]  # (ISO year, ISO week)


def _month(local: datetime) -> Hashable:
    return (local.year, local.month)


# The GFS rules: the policy's count, a local time's bucket, the reason its newest backup gets (rank of count).
_SLOTS: list[tuple[str, Callable[[datetime], Hashable], Callable[[int, int, Any], str]]] = [
    ("keep_daily", _day, lambda rank, count, day: f"daily {rank}/{count}"),
    ("keep_weekly", _week, lambda rank, count, week: f"weekly {week[0]}-W{week[1]:02d}"),
    ("keep_monthly", _month, lambda rank, count, month: f"monthly {month[0]}-{month[1]:02d}"),
]


def decide(
    records: Iterable[Record],
    rules: Rules,
    *,
    now: datetime,
    tz: ZoneInfo,
    in_use: Mapping[int, str] | None = None,
) -> list[Decision]:
    """Decide, for every row of one clinic, keep / prune / delete row / leave, newest first.

    ``in_use`` maps a backup id to what reads it ("restore #12", "a drill").
    """
    in_use = in_use or {}
    ordered = sorted(records, key=lambda r: (r.requested_at, r.id), reverse=True)
    live = [r for r in ordered if r.status == JobStatus.SUCCEEDED and not r.expired]
    slots = _gfs_reasons(live, rules, tz)
    return [
        _decide_one(record, slots.get(record.id, []), rules, now=now, use=in_use.get(record.id)) for record in ordered
    ]


def _gfs_reasons(live: list[Record], rules: Rules, tz: ZoneInfo) -> dict[int, list[str]]:
    """The reasons of the newest backup and of each day/week/month slot holder (``live`` newest first)."""
    reasons: dict[int, list[str]] = {record.id: [] for record in live}
    if live:
        reasons[live[0].id].append("newest")
    for field, bucket_of, label in _SLOTS:
        count = getattr(rules, field)
        holders = _newest_per_bucket(live, lambda record, of=bucket_of: of(record.requested_at.astimezone(tz)))
        for rank, (bucket, record) in enumerate(holders[:count], start=1):
            reasons[record.id].append(label(rank, count, bucket))
    return reasons


def _newest_per_bucket(newest_first: list[Record], bucket: Callable[[Record], Hashable]) -> list[tuple]:
    """(bucket, its newest record) for each bucket that has a record, newest bucket first."""
    seen: dict[Hashable, Record] = {}
    for record in newest_first:
        seen.setdefault(bucket(record), record)
    return list(seen.items())  # dicts keep insertion order: newest bucket first


def _decide_one(record: Record, slot_reasons: list[str], rules: Rules, *, now: datetime, use: str | None) -> Decision:
    age = now - record.requested_at
    in_use = [f"in use by {use}"] if use else []

    def decision(action: Action, *reasons: str) -> Decision:
        return Decision(record.id, action, reasons, record.kind, record.status, record.requested_at)

    if record.status in ACTIVE_STATUSES:
        return decision(Action.LEAVE, f"{record.status}: not touched")
    if record.expired:
        return decision(Action.LEAVE, "already expired")
    if record.status != JobStatus.SUCCEEDED:
        if age < timedelta(days=rules.keep_failed_days):
            return decision(Action.KEEP, f"failed, younger than {rules.keep_failed_days} days", *in_use)
        if in_use:
            return decision(Action.KEEP, *in_use)
        return decision(Action.DELETE_ROW, f"failed, older than {rules.keep_failed_days} days → delete row")
    reasons = [*slot_reasons]
    if age < timedelta(days=rules.keep_min_days):
        reasons.append(f"younger than {rules.keep_min_days} days")
    if record.kind == Backup.Kind.PRE_RESTORE and age < timedelta(days=rules.keep_pre_restore_days):
        reasons.append(f"safety backup younger than {rules.keep_pre_restore_days} days")
    reasons += in_use
    if record.held:
        reasons.append("on legal hold")
    if reasons:
        return decision(Action.KEEP, *reasons)
    older = f"older than {rules.keep_min_days} days, " if rules.keep_min_days else ""
    return decision(Action.PRUNE, f"{older}holds no day, week or month slot")


# --- applying it -------------------------------------------------------------------------------


def clinic_zone(clinic: Clinic) -> ZoneInfo:
    return ZoneInfo(clinic.time_zone)


def backups_in_use(
    clinic_id: int, in_use_ids: Collection[int] = (), restores: Iterable | None = None
) -> dict[int, str]:
    """The clinic's backups that something reads now: pending/running restores (``restores``, as
    (restore id, backup id), when the caller read them already), and ``in_use_ids``."""
    uses = dict.fromkeys(in_use_ids, DRILL)
    if restores is None:
        restores = Restore.objects.filter(clinic_id=clinic_id, status__in=ACTIVE_STATUSES).values_list(
            "pk", "backup_id"
        )
    for restore_id, backup_id in restores:
        uses[backup_id] = f"restore #{restore_id}"
    return uses


_ROW = ("pk", "kind", "status", "requested_at", "expired_at", "held_at")


def _policy(clinic: Clinic) -> BackupPolicy:
    """The clinic's policy (read with it by ``select_related`` in ``prune_all``), made by ``policy_for`` if missing."""
    return getattr(clinic, "backup_policy", None) or policy_for(clinic)


def plan_clinic(
    clinic: Clinic,
    *,
    now: datetime,
    in_use_ids: Collection[int] = (),
    rows: Iterable[tuple] | None = None,
    restores: Iterable[tuple[int, int]] | None = None,
) -> list[Decision]:
    """The decisions for one clinic's rows under its policy, at ``now``; changes nothing.
    ``rows`` (``_ROW``'s fields) and ``restores``: the clinic's, when the caller read them already."""
    if rows is None:
        rows = Backup.objects.filter(clinic=clinic).values_list(*_ROW)
    records = [
        Record(pk, kind, status, at, expired is not None, held is not None)
        for pk, kind, status, at, expired, held in rows
    ]
    rules = Rules.of(_policy(clinic))
    in_use = backups_in_use(clinic.pk, in_use_ids, restores)
    return decide(records, rules, now=now, tz=clinic_zone(clinic), in_use=in_use)


def _now() -> datetime:
    """The clock (tests set it to a fixed moment)."""
    return timezone.now()


def prune_clinic(
    clinic: Clinic, *, dry_run: bool, now: datetime | None = None, in_use_ids: Collection[int] = ()
) -> list[Decision]:
    """Apply the clinic's retention (``dry_run``: only say what would be done). One backup at a
    time, each in its own transaction; a storage failure is reported on its decision and the
    others go on. ``in_use_ids``: backups the caller is reading (a drill)."""
    now = now or _now()
    decisions = plan_clinic(clinic, now=now, in_use_ids=in_use_ids)
    if dry_run:
        return decisions
    return _apply(clinic, decisions, now=now, in_use_ids=in_use_ids)


def _apply(clinic: Clinic, decisions: list[Decision], *, now: datetime, in_use_ids: Collection[int]) -> list[Decision]:
    applied = []
    for decision in decisions:
        if decision.action == Action.PRUNE:
            decision = _prune_one(clinic, decision, now=now, in_use_ids=in_use_ids)
        elif decision.action == Action.DELETE_ROW:
            decision = _delete_failed_row(clinic, decision)
        applied.append(decision)
    return applied


def _prune_one(clinic: Clinic, decision: Decision, *, now: datetime, in_use_ids: Collection[int]) -> Decision:
    """Delete one backup's stored object, then mark its row expired and audit it, in one transaction.

    The clinic's row lock serialises this with ``restore_request`` (which creates a restore
    under it), so "in use" is checked again here, just before the object goes.
    """
    try:
        with transaction.atomic():
            Clinic.objects.select_for_update().get(pk=clinic.pk)
            backup = (
                Backup.objects.select_for_update()
                .filter(pk=decision.backup_id, clinic=clinic, status=JobStatus.SUCCEEDED, expired_at__isnull=True)
                .first()
            )
            if backup is None:
                return replace(decision, action=Action.LEAVE, done="left alone: changed since the plan")
            if backup.held_at is not None:
                return replace(decision, action=Action.KEEP, reasons=("on legal hold",), done="kept: on legal hold")
            use = backups_in_use(clinic.pk, in_use_ids).get(backup.pk)
            if use:
                return replace(decision, action=Action.KEEP, reasons=(f"in use by {use}",), done="kept: now in use")
            existed = delete_stored(backup.storage_name) if backup.storage_name else False
            backup.expired_at = now
            backup.save(update_fields=["expired_at"])
            audit(
                AuditEntry.Action.PRUNED,
                clinic_id=clinic.pk,
                backup_id=backup.pk,
                reasons=list(decision.reasons),
                storage_name=backup.storage_name,
                object_deleted=existed,
            )
    except StorageError as exc:
        logger.warning("Retention could not delete backup #%s of %s: %s", decision.backup_id, clinic.schema_name, exc)
        return replace(decision, error=str(exc))
    return replace(decision, done="pruned" if existed else "pruned (its object was already gone)")


def _delete_failed_row(clinic: Clinic, decision: Decision) -> Decision:
    """Delete one failed row past its age limit (and an object it may name), with an audit entry."""
    try:
        with transaction.atomic():
            backup = (
                Backup.objects.select_for_update()
                .filter(pk=decision.backup_id, clinic=clinic, status=JobStatus.FAILED)
                .first()
            )
            if backup is None or backup.restores.exists() or backup.downloads.exists():
                return replace(decision, action=Action.LEAVE, done="left alone: changed or referenced")
            if backup.storage_name:
                delete_stored(backup.storage_name)
            audit(
                AuditEntry.Action.PRUNED,
                clinic_id=clinic.pk,
                backup_id=backup.pk,
                reasons=list(decision.reasons),
                row_deleted=True,
                failed_at=backup.failed_at.isoformat() if backup.failed_at else None,
                error_code=backup.error_code,
            )
            backup.delete()
    except StorageError as exc:
        logger.warning("Retention could not delete failed backup #%s of %s: %s", decision.backup_id, clinic, exc)
        return replace(decision, error=str(exc))
    return replace(decision, done="row deleted")


class RetentionFailed(RuntimeError):
    """Some clinics could not be pruned at all (the others were)."""


def prune_all(
    now: datetime | None = None, *, in_use_ids: Collection[int] = (), part: tuple[int, int] | None = None
) -> dict[str, list[Decision]]:
    """Prune every clinic, or with ``part=(k, n)`` those whose id is ``k`` modulo ``n`` (the
    dispatcher prunes a sixtieth of the clinics each minute: each clinic once an hour, and no
    minute holds the whole platform's retention); decisions by schema name.

    A clinic that fails as a whole is logged and the others go on; then RetentionFailed names it.
    """
    now = now or _now()
    clinics = Clinic.objects.exclude(schema_name=get_public_schema_name()).filter(offboarded_at__isnull=True)
    if part is not None:
        index, parts = part
        clinics = clinics.alias(slot=F("id") % parts).filter(slot=index % parts)
    clinics = list(clinics.select_related("backup_policy").order_by("schema_name"))
    # every clinic's rows and running restores in two queries; a clinic is written to only
    # when its plan prunes or deletes something (each change is checked again as it is made)
    ids = [clinic.pk for clinic in clinics]
    rows: dict[int, list[tuple]] = {pk: [] for pk in ids}
    for clinic_id, *row in Backup.objects.filter(clinic_id__in=ids).order_by().values_list("clinic_id", *_ROW):
        rows[clinic_id].append(tuple(row))
    restores: dict[int, list[tuple[int, int]]] = {pk: [] for pk in ids}
    active = Restore.objects.filter(clinic_id__in=ids, status__in=ACTIVE_STATUSES)
    for clinic_id, restore_id, backup_id in active.values_list("clinic_id", "pk", "backup_id"):
        restores[clinic_id].append((restore_id, backup_id))
    results: dict[str, list[Decision]] = {}
    failed: list[str] = []
    for clinic in clinics:
        try:
            plan = plan_clinic(
                clinic, now=now, in_use_ids=in_use_ids, rows=rows[clinic.pk], restores=restores[clinic.pk]
            )
            results[clinic.schema_name] = _apply(clinic, plan, now=now, in_use_ids=in_use_ids)
        except Exception:
            logger.exception("Retention failed for clinic %s", clinic.schema_name)
            failed.append(clinic.schema_name)
    if failed:
        raise RetentionFailed(f"retention failed for {', '.join(failed)} (see the log); other clinics were pruned")
    return results
