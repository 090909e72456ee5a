"""The backup catalog as the console, the API and the commands list it: one clinic's, or (for the
platform operator only) every clinic's."""

from __future__ import annotations

from django.db.models import QuerySet

from backups.models import ACTIVE_STATUSES, Backup, Restore


def backup_list(*, clinic_id: int) -> QuerySet[Backup]:
    """One clinic's backups, newest first (what a clinic's console and commands show)."""
    if not isinstance(clinic_id, int) or isinstance(clinic_id, bool):
        raise TypeError("backup_list needs the clinic's id; platform_backup_list lists every clinic's")
    return _newest_first().filter(clinic_id=clinic_id)


def platform_backup_list() -> QuerySet[Backup]:
    """Every clinic's backups, newest first: for the platform operator only."""
    return _newest_first()


def _newest_first() -> QuerySet[Backup]:
    return Backup.objects.select_related("clinic").order_by("-requested_at", "-id")


def active_job(clinic_id: int) -> Backup | None:
    """The clinic's pending or running backup, if any."""
    return Backup.objects.filter(clinic_id=clinic_id, status__in=ACTIVE_STATUSES).first()


def restore_list(*, clinic_id: int) -> QuerySet[Restore]:
    """One clinic's restores, newest first."""
    return Restore.objects.filter(clinic_id=clinic_id).order_by("-requested_at", "-id")
