"""Downloading a backup: a proper file name, a stream or a short-lived link, and a record of who took it."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from django.core import signing
from django.db import transaction
from django.utils import timezone

from backups import storage
from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.models import AuditEntry, Backup, Download
from backups.operations.audit import audit
from backups.services.backup import ARCHIVE_EXTENSION

LINK_SECONDS = 300  # a pre-signed S3 link (or our own signed link) is valid five minutes
LINK_SALT = "respaldo.download-link"


@dataclass
class BackupDownload:
    """What the console hands the browser: ``link`` (S3) or ``stream`` + ``size`` (local)."""

    filename: str
    size: int
    link: str | None = None
    stream: BinaryIO | None = None
    signed: str | None = None  # local storage, ``as_link``: the signed value of our own short-lived link
    expires_at: datetime | None = None


def download_filename(backup: Backup) -> str:
    """``<clinic>-<yyyy-mm-dd-hhmm>-<id>.respaldo``, the time in the clinic's own time zone."""
    zone = zoneinfo.ZoneInfo(backup.clinic.time_zone)
    when = timezone.localtime(backup.requested_at, zone).strftime("%Y-%m-%d-%H%M")
    return f"{backup.clinic.schema_name}-{when}-{backup.pk}.{ARCHIVE_EXTENSION}"


def backup_download(
    *, backup: Backup, downloaded_by: str, address: str | None = None, as_link: bool = False
) -> BackupDownload:
    """Open ``backup`` for download and record who downloaded it (before any byte leaves).

    With ``as_link`` nothing is opened: the result holds a pre-signed storage link (S3) or,
    for local storage, ``signed``, the value of a link of our own that
    :func:`open_signed_download` accepts for ``LINK_SECONDS``.

    The caller has already checked that the backup is the requesting clinic's and that the
    user may download. Raises RespaldoError for a backup with nothing stored (failed,
    running, expired) and StorageError when the storage cannot be reached.
    """
    if not backup.has_stored_file:
        status = "expired" if backup.expired_at else backup.status
        raise RespaldoError("backup_not_downloadable", backup=backup.pk, status=status)
    limit = conf.max_downloads_per_day
    since = timezone.now() - timedelta(days=1)
    if Download.objects.filter(clinic_id=backup.clinic_id, downloaded_at__gte=since).count() >= limit:
        raise RespaldoError("fair_use_downloads", limit=limit)
    filename = download_filename(backup)
    link = storage.download_link(backup.storage_name, filename=filename, seconds=LINK_SECONDS)
    expires_at = timezone.now() + timedelta(seconds=LINK_SECONDS)
    result = BackupDownload(filename=filename, size=int(backup.size or 0), link=link, expires_at=expires_at)
    if link is None and as_link:
        result.signed = signing.dumps({"b": backup.pk, "c": backup.clinic_id}, salt=LINK_SALT, compress=True)
    elif link is None:
        result.stream = storage.open_stored(backup.storage_name)
    via = "link" if (link or result.signed) else "stream"
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


def open_signed_download(signed: str, *, clinic_id: int, backup_id: int) -> BackupDownload:
    """The download behind one of our own signed links for ``backup_id`` (recorded when the link was made).

    Raises RespaldoError ``api_link_expired`` for a link that is older than ``LINK_SECONDS``,
    altered, or another clinic's, and ``backup_not_downloadable`` when retention removed the
    backup since.
    """
    try:
        value = signing.loads(signed, salt=LINK_SALT, max_age=LINK_SECONDS)
    except signing.BadSignature:  # SignatureExpired is one
        raise RespaldoError("api_link_expired") from None
    if not isinstance(value, dict) or value.get("c") != clinic_id or value.get("b") != backup_id:
        raise RespaldoError("api_link_expired")
    backup = Backup.objects.select_related("clinic").filter(pk=value.get("b"), clinic_id=clinic_id).first()
    if backup is None:
        raise RespaldoError("api_link_expired")
    if not backup.has_stored_file:
        raise RespaldoError(
            "backup_not_downloadable", backup=backup.pk, status="expired" if backup.expired_at else backup.status
        )
    return BackupDownload(
        filename=download_filename(backup), size=int(backup.size or 0), stream=storage.open_stored(backup.storage_name)
    )
