"""The last successful backups as samples (when, stored size, duration), for the trend charts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from backups.humanize import human_bytes, human_duration
from backups.models import Backup, JobStatus

LAST = 60  # backups per chart


@dataclass(frozen=True)
class Sample:
    """One successful backup: when (in the viewer's time zone), its stored size and how long it took."""

    at: datetime
    size: int
    seconds: float

    @property
    def size_text(self) -> str:
        return human_bytes(self.size)

    @property
    def duration_text(self) -> str:
        return human_duration(timedelta(seconds=self.seconds))


def last_samples(backups: QuerySet[Backup], *, count: int = LAST, zone=None) -> list[Sample]:
    """The newest ``count`` successful backups of ``backups``, oldest first (one query)."""
    rows = (
        backups.filter(status=JobStatus.SUCCEEDED, started_at__isnull=False, succeeded_at__isnull=False)
        .order_by("-succeeded_at")
        .values_list("succeeded_at", "size", "started_at")[:count]
    )
    samples = [
        Sample(
            at=timezone.localtime(done, zone) if zone else timezone.localtime(done),
            size=size or 0,
            seconds=(done - started).total_seconds(),
        )
        for done, size, started in rows
    ]
    return samples[::-1]
