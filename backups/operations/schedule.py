"""The daily schedule: one dispatcher, run every minute, requests each clinic's scheduled backup.

The rule. A clinic is due when its policy is enabled, the wall-clock time in the clinic's
own zone (``Clinic.time_zone``) has reached the policy's ``run_at`` on the clinic's local
day, and no scheduled backup exists for that local day (``Backup.scheduled_for``). A
missed minute (dispatcher down, clinic busy) is made up later the same local day.

Why wall-clock time, not an instant: on the spring-forward day in Europe/Madrid 02:30 does
not exist; comparing the local clock with ``run_at`` makes 03:00 (the first minute past it)
the due time, so the day is not skipped. In autumn 02:30 happens twice; the first is due,
and the second finds that day's row already there. The day is never doubled.

Who decides: the database. ``Backup`` has a unique constraint on (clinic, scheduled_for)
for first attempts, so several workers or whole clusters running the dispatcher at the same
minute create one row per clinic and day; the losers get IntegrityError and skip. A clinic
with a backup or restore waiting or running is skipped (ClinicBusy) and tried again at the
next minute while it is still that local day. Queries do not grow with the clinics: one for
clinics and policies, one for the rows of the local days concerned, then one request per
clinic actually due.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import IntegrityError
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.exceptions import ClinicBusy, RespaldoError
from backups.models import Backup, BackupPolicy
from backups.services.backup import backup_request
from backups.services.policy import policy_for
from clinics.models import Clinic

logger = logging.getLogger(__name__)

REQUESTED_BY = "schedule"


@dataclass(frozen=True)
class Due:
    """A clinic whose scheduled backup for ``local_date`` should be requested now."""

    clinic: Clinic
    policy: BackupPolicy
    local_date: date


def local_now(now: datetime, time_zone: str) -> datetime:
    """``now`` on the clinic's wall clock (UTC if the zone is unknown to this system)."""
    try:
        zone = ZoneInfo(time_zone)
    except (ValueError, KeyError, OSError):
        logger.warning("Unknown time zone %r: using UTC", time_zone)
        zone = ZoneInfo("UTC")
    return now.astimezone(zone)


def is_due(policy: BackupPolicy, local: datetime) -> bool:
    """True once the clinic's wall clock has reached ``run_at`` on its local day.

    Comparing wall-clock times (not instants) makes a ``run_at`` inside a spring-forward gap
    due at the first minute after the gap.
    """
    return policy.enabled and local.time() >= policy.run_at


def next_scheduled_run(clinic: Clinic, now: datetime | None = None) -> datetime | None:
    """When the clinic's next daily backup is requested: its ``run_at`` today on its own clock, or
    tomorrow's once today's is asked for; ``now`` when it is due and not yet asked for (the
    dispatcher runs every minute). None while its daily backups are off."""
    now = now or timezone.now()
    policy = policy_for(clinic)
    if not policy.enabled:
        return None
    local = local_now(now, clinic.time_zone)
    today = local.replace(hour=policy.run_at.hour, minute=policy.run_at.minute, second=0, microsecond=0)
    if local < today:
        return today
    if not Backup.objects.filter(clinic_id=clinic.pk, scheduled_for=local.date()).exists():
        return now
    tomorrow = datetime.combine(local.date() + timedelta(days=1), policy.run_at, tzinfo=local.tzinfo)
    return tomorrow.replace(second=0, microsecond=0)


def _clinics_with_policies() -> list[tuple[Clinic, BackupPolicy]]:
    """Every clinic with its policy, in one query (a clinic without a policy row gets one)."""
    clinics = list(
        Clinic.objects.exclude(schema_name=get_public_schema_name()).select_related("backup_policy").order_by("pk")
    )
    pairs = []
    for clinic in clinics:
        try:
            policy = clinic.backup_policy
        except BackupPolicy.DoesNotExist:
            policy = policy_for(clinic)  # once per clinic ever (a clinic made before policies existed)
        pairs.append((clinic, policy))
    return pairs


def due_clinics(now: datetime) -> list[Due]:
    """The clinics whose scheduled backup for their local day is due at ``now`` and not yet requested."""
    candidates = []
    for clinic, policy in _clinics_with_policies():
        local = local_now(now, clinic.time_zone)
        if is_due(policy, local):
            candidates.append(Due(clinic, policy, local.date()))
    if not candidates:
        return []
    days = {due.local_date for due in candidates}
    taken = set(
        Backup.objects.filter(scheduled_for__in=days, clinic_id__in=[due.clinic.pk for due in candidates])
        .order_by()
        .values_list("clinic_id", "scheduled_for")
        .distinct()
    )
    return [due for due in candidates if (due.clinic.pk, due.local_date) not in taken]


def request_scheduled(due: Due, *, enqueue: bool = True) -> Backup | None:
    """Request one clinic's scheduled backup for its local day; None when someone else did, or it is busy."""
    try:
        return backup_request(
            clinic=due.clinic,
            kind=Backup.Kind.SCHEDULED,
            payload_format=due.policy.payload_format,
            requested_by=REQUESTED_BY,
            scheduled_for=due.local_date,
            enqueue=enqueue,
        )
    except IntegrityError:
        # Another dispatcher (worker, cluster) requested it first, or a job started meanwhile:
        # the unique constraints decided.
        logger.info("Scheduled backup of %s for %s already requested", due.clinic.schema_name, due.local_date)
    except ClinicBusy:
        logger.info("Clinic %s busy: its scheduled backup waits for the next minute", due.clinic.schema_name)
    except RespaldoError as exc:
        logger.warning("Scheduled backup of %s not requested: %s", due.clinic.schema_name, exc)
    return None


def dispatch(now: datetime | None = None, *, enqueue: bool = True) -> list[Backup]:
    """Request every due scheduled backup (see the module's docstring); return the backups created.

    ``now`` defaults to the current time (tests pass their own); ``enqueue=False`` creates the
    rows without handing them to a worker.
    """
    now = now or timezone.now()
    created = []
    for due in due_clinics(now):
        backup = request_scheduled(due, enqueue=enqueue)
        if backup is not None:
            created.append(backup)
    if created:
        logger.info("Scheduled backups requested: %s", ", ".join(b.clinic.schema_name for b in created))
    return created
