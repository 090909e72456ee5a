"""Reading the backup catalog."""

from __future__ import annotations

from django.db.models import QuerySet
from django.template.defaultfilters import filesizeformat

from backups.models import Backup


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


def backup_line(backup: Backup) -> str:
    """One line describing a backup, for the command line."""
    size = filesizeformat(backup.size) if backup.size is not None else "-"
    duration = f"{backup.duration.total_seconds():.1f}s" if backup.duration else "-"
    line = (
        f"#{backup.pk} {backup.clinic.schema_name} {backup.kind} {backup.payload_format} {backup.status} "
        f"size={size} duration={duration} sha256={backup.sha256 or '-'}"
    )
    if backup.error or backup.error_code:
        line += f" error={backup.error_message()}"
    return line
