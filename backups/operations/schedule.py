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
with a backup or restore waiting or running is skipped and tried again later while it is
still that local day.

The night's pace (issue 28). Thousands of clinics share a ``run_at``: they are not all
handed to the broker at once. At most ``BACKUPS_NIGHT_CONCURRENCY`` scheduled backups are
handed out or running at any time, over every worker cluster sharing the broker; the
dispatcher (every minute) and every worker finishing a scheduled backup hand out the next
clinics due, those due longest first. So the broker never holds more than a few of the
night's tasks: a person's backup or restore, handed out at once, waits behind at most those
(the priority), and the clinics' start times spread over the night at the pace the workers
and the database server take. A handed-out task the broker lost (a cluster killed) is handed
again after ``BACKUPS_LOST_AFTER_SECONDS``; a backup whose worker died is failed and retried
by the sweeper: every clinic gets its one backup of the night whatever dies.

Queries do not grow with the clinics: the time zones in use, the clinics without a policy,
the outstanding scheduled backups, then the due clinics in one query (at most the room
left), then one request per clinic handed out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.conf import conf
from backups.exceptions import ClinicBusy, RespaldoError
from backups.jobs.locks import NIGHT, advisory_xact_lock_wait
from backups.models import ACTIVE_STATUSES, Backup, BackupPolicy, Restore
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


def _add_missing_policies() -> None:
    """A policy row for every clinic without one (clinics made before policies existed: once each)."""
    for clinic in Clinic.objects.exclude(schema_name=get_public_schema_name()).filter(backup_policy__isnull=True):
        policy_for(clinic)


# The due clinics, given each zone in use with its local day and wall-clock time (arrays, one
# row per zone): written in SQL, not with the ORM, because the dispatcher runs it every minute and
# after every daily backup, and composing the ORM's query cost more than running it.
_DUE = """
    SELECT c.id, z.day
    FROM {clinic} c
    JOIN {policy} p ON p.clinic_id = c.id
    JOIN unnest(%(zones)s::text[], %(days)s::date[], %(times)s::time[]) AS z(zone, day, at) ON z.zone = c.time_zone
    WHERE c.schema_name <> %(public)s AND c.offboarded_at IS NULL AND p.enabled AND p.run_at <= z.at
      AND NOT EXISTS (SELECT 1 FROM {backup} b
                      WHERE b.clinic_id = c.id AND b.scheduled_for = z.day AND b.retry_of_id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM {backup} b WHERE b.clinic_id = c.id AND b.status IN ('pending', 'running'))
      AND NOT EXISTS (SELECT 1 FROM {restore} r WHERE r.clinic_id = c.id AND r.status IN ('pending', 'running'))
    ORDER BY p.run_at, c.id
    LIMIT %(limit)s
"""


# The time zones the clinics are in, and whether a clinic has no policy row yet.
_ZONES = """
    SELECT ARRAY(SELECT DISTINCT c.time_zone FROM {clinic} c WHERE c.schema_name <> %(public)s ORDER BY 1),
           EXISTS (SELECT 1 FROM {clinic} c WHERE c.schema_name <> %(public)s
                   AND NOT EXISTS (SELECT 1 FROM {policy} p WHERE p.clinic_id = c.id))
"""


def due_clinics(now: datetime, *, limit: int | None = None) -> list[Due]:
    """The clinics whose scheduled backup for their local day is due at ``now`` and not yet
    requested, and that have no job waiting or running: those due longest first (``run_at``),
    at most ``limit``.

    Two queries whatever the number of clinics (and a third when some are due): the time
    zones in use (and whether a clinic still lacks a policy row); the due clinics themselves,
    in SQL: each zone's local day and time are worked out here (Python's zone rules, as
    ``is_due`` and the console use), and the database picks the clinics of that zone past
    their ``run_at`` with no row for that day; then those clinics.
    """
    if limit == 0:
        return []
    tables = {
        "clinic": Clinic._meta.db_table,
        "policy": BackupPolicy._meta.db_table,
        "backup": Backup._meta.db_table,
        "restore": Restore._meta.db_table,
    }
    with connection.cursor() as cursor:
        cursor.execute(_ZONES.format(**tables), {"public": get_public_schema_name()})
        zones, policies_missing = cursor.fetchone()
    if not zones:
        return []
    if policies_missing:
        _add_missing_policies()
    locals_ = [local_now(now, zone) for zone in zones]
    query = _DUE.format(**tables)
    params = {
        "zones": zones,
        "days": [local.date() for local in locals_],
        "times": [local.time().replace(tzinfo=None) for local in locals_],
        "public": get_public_schema_name(),
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        found = cursor.fetchall()
    if not found:
        return []
    clinics = Clinic.objects.select_related("backup_policy").in_bulk([pk for pk, _ in found])
    return [Due(clinics[pk], clinics[pk].backup_policy, day) for pk, day in found]


def night_room() -> int:
    """How many more scheduled backups may be handed out now (``BACKUPS_NIGHT_CONCURRENCY`` minus
    those handed out and not finished, over every worker cluster)."""
    out = Backup.objects.filter(kind=Backup.Kind.SCHEDULED, status__in=ACTIVE_STATUSES).count()
    return max(0, conf.night_concurrency - out)


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
    """Request the due scheduled backups there is room for (see the module's docstring); return
    the backups created.

    Called every minute by the dispatcher, and by a worker each time a scheduled backup ends,
    so that the night flows at the pace the workers take it. One dispatcher at a time (a
    transaction lock): two clusters finishing at once do not both fill the same room.
    ``now`` defaults to the current time (tests pass their own); ``enqueue=False`` creates the
    rows without handing them to a worker.
    """
    now = now or timezone.now()
    created = []
    with transaction.atomic():
        advisory_xact_lock_wait(NIGHT, 0)
        room = night_room()
        for due in due_clinics(now, limit=room) if room else []:
            backup = request_scheduled(due, enqueue=enqueue)
            if backup is not None:
                created.append(backup)
    if created:
        logger.info("Scheduled backups requested: %s", ", ".join(b.clinic.schema_name for b in created))
    return created
