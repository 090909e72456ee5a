"""The platform console's numbers (reads only): every clinic's backup health, in a bounded number of queries.

* :func:`clinics_with_health` annotates a queryset of clinics with what the clinics list
  shows and filters on (last usable backup, last status, last verification, stored size and
  count, policy on or off, past the staleness threshold, drill overdue, failures in the last
  24 hours). Each annotation is a correlated subquery on the catalog's per-clinic indexes, or
  the clinic's row of ``ClinicStorage`` (stored bytes and backups, kept by a trigger): one
  query for a page of clinics, however many there are.
* :func:`platform_overview` is the index page's summary: five small queries, none of which
  reads the catalog's rows clinic by clinic except the staleness and drill flags (one index
  probe each per clinic: ≈ 40 ms at 10,000 clinics).

"Past the threshold" is the missed-backup alert's rule (``stale_limit``, which the alerts use too): daily
backups on, and no usable backup (succeeded, not failed its drill, not uploaded) within the
policy's ``stale_after_hours`` — counted from the clinic's creation when it has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.models import Backup, ClinicStorage, JobStatus, Restore
from backups.models.backup import DRILL_EVERY
from backups.models.backup import DRILL_FAILED as FAILED
from clinics.models import Clinic

RECENT = timedelta(hours=24)
BIGGEST = 10


def usable_backups() -> QuerySet[Backup]:
    """Backups that count as a recent backup for staleness (the missed-backup alert's rule)."""
    usable = Backup.objects.filter(status=JobStatus.SUCCEEDED).exclude(drill_status=FAILED)
    return usable.exclude(kind=Backup.Kind.UPLOADED)


def _per_clinic(rows: QuerySet, value, output_field) -> Subquery:
    """One aggregated value of ``rows`` for the outer clinic (a correlated subquery)."""
    grouped = rows.filter(clinic_id=OuterRef("pk")).order_by().values("clinic_id")
    return Subquery(grouped.annotate(value=value).values("value")[:1], output_field=output_field)


def _newest(rows: QuerySet, column: str, order: str = "-requested_at", clinic: str = "pk") -> Subquery:
    """``column`` of the outer clinic's newest row of ``rows`` (the outer row's clinic is its ``clinic`` field)."""
    return Subquery(rows.filter(clinic_id=OuterRef(clinic)).order_by(order, "-id").values(column)[:1])


def last_success_of(clinic: str = "pk") -> Subquery:
    """When the outer row's clinic's newest usable backup ended (``None`` without one): one probe
    of the per-clinic index, however many backups the catalog holds. Newest by request is newest
    by end: a clinic runs one backup at a time (a unique index)."""
    return _newest(usable_backups(), "succeeded_at", clinic=clinic)


def stale_limit(now: datetime) -> ExpressionWrapper:
    """``now`` less the row's ``stale_after_hours``: a clinic whose newest usable backup (or, without
    one, its creation) is older than this is past its threshold (the missed-backup alert's rule)."""
    threshold = ExpressionWrapper(F("stale_after_hours") * Value(timedelta(hours=1)), output_field=DurationField())
    return ExpressionWrapper(Value(now) - threshold, output_field=DateTimeField())


def _failed_since(since: datetime) -> Q:
    """The clinic has a backup or a restore that failed since ``since``."""
    backups = Backup.objects.filter(clinic_id=OuterRef("pk"), status=JobStatus.FAILED, failed_at__gte=since)
    restores = Restore.objects.filter(clinic_id=OuterRef("pk"), status=JobStatus.FAILED, failed_at__gte=since)
    return Q(Exists(backups)) | Q(Exists(restores))


def _flag(condition: Q) -> Case:
    """True or False, never NULL (so that "no" filters find every other clinic)."""
    return Case(When(condition, then=Value(True)), default=Value(False), output_field=BooleanField())


def clinics_with_health(queryset: QuerySet[Clinic], now: datetime | None = None) -> QuerySet[Clinic]:
    """``queryset`` with each clinic's backup health, for listing, sorting and filtering.

    Annotations: ``last_success_at`` (newest usable backup's end), ``last_status`` (newest
    backup's status, ``None`` without backups), ``last_verified_at``, ``stored_size`` and
    ``stored_count`` (backups still in storage), ``policy_enabled``, ``stale_after_hours``,
    ``is_stale``, ``last_drilled_at``, ``last_drill_status``, ``drill_overdue``, ``failed_recently``.
    """
    now = now or timezone.now()
    # the NULL-free rows only (what Max reads anyway), so that the partial indexes serve them
    drilled = Backup.objects.filter(drilled_at__isnull=False)
    verified = Backup.objects.filter(verified_at__isnull=False)
    annotated = queryset.annotate(
        last_success_at=last_success_of(),
        last_status=_newest(Backup.objects.all(), "status"),
        last_verified_at=_per_clinic(verified, Max("verified_at"), DateTimeField()),
        stored_size=Coalesce(F("stored_totals__bytes"), Value(0), output_field=BigIntegerField()),
        stored_count=Coalesce(F("stored_totals__backups"), Value(0), output_field=IntegerField()),
        policy_enabled=Coalesce(F("backup_policy__enabled"), Value(False)),
        stale_after_hours=F("backup_policy__stale_after_hours"),
        stale_since=stale_limit(now),
        last_drilled_at=_per_clinic(drilled, Max("drilled_at"), DateTimeField()),
        last_drill_status=_newest(drilled, "drill_status", order="-drilled_at"),
        failed_recently=_flag(_failed_since(now - RECENT)),
    )
    annotated = annotated.annotate(drill_reference=Coalesce("last_drilled_at", "created_at"))
    return annotated.annotate(
        is_stale=_flag(Q(policy_enabled=True) & Q(stale_since__gt=Coalesce("last_success_at", "created_at"))),
        drill_overdue=_flag(
            Q(offboarded_at__isnull=True) & (Q(last_drill_status=FAILED) | Q(drill_reference__lt=now - DRILL_EVERY))
        ),
    )


@dataclass(frozen=True)
class BigClinic:
    """One of the clinics that take the most storage."""

    pk: int
    name: str
    schema_name: str
    stored_size: int
    stored_count: int


@dataclass(frozen=True)
class Overview:
    """What the platform's index page shows at the top."""

    now: datetime
    failed_backups: int
    failed_restores: int
    failing_clinics: int
    stale_clinics: int
    drill_overdue_clinics: int
    stored_size: int
    stored_count: int
    held_count: int = 0
    held_size: int = 0
    biggest: list[BigClinic] = field(default_factory=list)

    @property
    def failures(self) -> int:
        """Backups and restores that failed in the last 24 hours."""
        return self.failed_backups + self.failed_restores

    @property
    def held(self) -> dict[str, int]:
        """Stored backups on legal hold across all clinics, and the bytes they take."""
        return {"count": self.held_count, "bytes": self.held_size}


def platform_clinics() -> QuerySet[Clinic]:
    """Every clinic (offboarded ones too), not the platform's own tenant."""
    return Clinic.objects.exclude(schema_name=get_public_schema_name())


def biggest_clinics(limit: int = BIGGEST) -> list[BigClinic]:
    """The clinics with the most bytes in storage, biggest first (ties by name)."""
    rows = (
        ClinicStorage.objects.filter(backups__gt=0)
        .order_by("-bytes", "clinic__name")
        .values_list("clinic_id", "clinic__name", "clinic__schema_name", "bytes", "backups")[:limit]
    )
    return [BigClinic(*row) for row in rows]


def platform_overview(now: datetime | None = None) -> Overview:
    """Failures of the last 24 hours, stale clinics, overdue drills, storage used (held too) and its biggest clinics.

    Five small queries: the failures and holds on partial indexes, the storage from ``ClinicStorage``
    (one row per clinic; two queries), the stale and overdue counts by one index probe per clinic and flag.
    """
    now = now or timezone.now()
    since = now - RECENT
    failed = Q(status=JobStatus.FAILED, failed_at__gte=since)
    held = Q(held_at__isnull=False, expired_at__isnull=True) & ~Q(storage_name="")
    totals = Backup.objects.filter(failed | held).aggregate(
        failed=Count("pk", filter=failed),
        failing=Count("clinic_id", filter=failed, distinct=True),
        held=Count("pk", filter=held),
        held_size=Sum("size", filter=held),
    )
    # a clinic whose restore failed counts once, with or without a failed backup as well
    backup_failed = Backup.objects.filter(failed, clinic_id=OuterRef("clinic_id"))
    restores = Restore.objects.filter(failed).aggregate(
        failed=Count("pk"), more_clinics=Count("clinic_id", filter=~Q(Exists(backup_failed)), distinct=True)
    )
    counts = clinics_with_health(platform_clinics(), now).aggregate(
        stale=Count("pk", filter=Q(is_stale=True)),
        drills=Count("pk", filter=Q(drill_overdue=True)),
    )
    stored = ClinicStorage.objects.aggregate(size=Sum("bytes"), count=Sum("backups"))
    return Overview(
        now=now,
        failed_backups=totals["failed"],
        failed_restores=restores["failed"],
        failing_clinics=totals["failing"] + restores["more_clinics"],
        stale_clinics=counts["stale"],
        drill_overdue_clinics=counts["drills"],
        stored_size=stored["size"] or 0,
        stored_count=stored["count"] or 0,
        held_count=totals["held"],
        held_size=totals["held_size"] or 0,
        biggest=biggest_clinics(),
    )
