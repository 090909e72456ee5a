"""Downloading a backup: a proper file name, a stream or a short-lived link, and a record of who took it."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from django.db import transaction
from django.utils import timezone

from backups import storage
from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.models import AuditEntry, Backup, Download, JobStatus
from backups.operations.audit import audit
from backups.services.backup import ARCHIVE_EXTENSION

LINK_SECONDS = 300  # a pre-signed S3 link is valid five minutes


@dataclass
class BackupDownload:
    """What the console hands the browser: ``link`` (S3) or ``stream`` + ``size`` (local)."""

    filename: str
    size: int
    link: str | None = None
    stream: BinaryIO | None = None


def download_filename(backup: Backup) -> str:
    """``<clinic>-<yyyy-mm-dd-hhmm>-<id>.respaldo``, the time in the clinic's own time zone."""
    zone = zoneinfo.ZoneInfo(backup.clinic.time_zone)
    when = timezone.localtime(backup.requested_at, zone).strftime("%Y-%m-%d-%H%M")
    return f"{backup.clinic.schema_name}-{when}-{backup.pk}.{ARCHIVE_EXTENSION}"


def backup_download(*, backup: Backup, downloaded_by: str, address: str | None = None) -> BackupDownload:
    """Open ``backup`` for download and record who downloaded it (before any byte leaves).

    The caller has already checked that the backup is the requesting clinic's and that the
    user may download. Raises RespaldoError for a backup with nothing stored (failed,
    running, expired) and StorageError when the storage cannot be reached.
    """
    if backup.status != JobStatus.SUCCEEDED or not backup.storage_name or backup.expired_at is not None:
        status = "expired" if backup.expired_at else backup.status
        raise RespaldoError("backup_not_downloadable", backup=backup.pk, status=status)
    limit = conf.max_downloads_per_day
    since = timezone.now() - timedelta(days=1)
    if Download.objects.filter(clinic_id=backup.clinic_id, downloaded_at__gte=since).count() >= limit:
        raise RespaldoError("fair_use_downloads", limit=limit)
    filename = download_filename(backup)
    link = storage.download_link(backup.storage_name, filename=filename, seconds=LINK_SECONDS)
    result = BackupDownload(filename=filename, size=int(backup.size or 0), link=link)
    if link is None:
        result.stream = storage.open_stored(backup.storage_name)
    via = "link" if link else "stream"
    with transaction.atomic():
        Download.objects.create(clinic_id=backup.clinic_id, backup=backup, downloaded_by=downloaded_by, via=via)
        audit(
            AuditEntry.Action.DOWNLOADED,
            clinic_id=backup.clinic_id,
            actor=downloaded_by,
            address=address,
            backup_id=backup.pk,
            via=via,
        )
    return result
