"""Reading the backup catalog."""

from __future__ import annotations

from django.db.models import QuerySet
from django.template.defaultfilters import filesizeformat

from backups.models import Backup


def backup_list(*, clinic_id: int | None = None) -> QuerySet[Backup]:
    """Backups newest first, of one clinic or of all."""
    backups = Backup.objects.select_related("clinic").order_by("-requested_at", "-id")
    return backups.filter(clinic_id=clinic_id) if clinic_id is not None else backups


def backup_line(backup: Backup) -> str:
    """One line describing a backup, for the command line."""
    size = filesizeformat(backup.size) if backup.size is not None else "-"
    duration = f"{backup.duration.total_seconds():.1f}s" if backup.duration else "-"
    line = (
        f"#{backup.pk} {backup.clinic.schema_name} {backup.kind} {backup.payload_format} {backup.status} "
        f"size={size} duration={duration} sha256={backup.sha256 or '-'}"
    )
    if backup.error:
        line += f" error={backup.error}"
    return line
