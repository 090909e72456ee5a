"""Downloading a backup: a proper file name, a stream or a short-lived link, and a record of who took it.

A link of our own (local storage) is a signed value naming its download row: it works once,
within ``LINK_SECONDS``, and not after the API token that made it is revoked.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from django.core import signing
from django.db import transaction
from django.utils import timezone

from backups import storage
from backups.audit import audit
from backups.conf import conf
from backups.exceptions import RespaldoError, translated
from backups.models import ApiToken, AuditEntry, Backup, Download
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


@translated()
def backup_download(
    *,
    backup: Backup,
    downloaded_by: str,
    address: str | None = None,
    as_link: bool = False,
    token: str | None = None,
) -> BackupDownload:
    """Open ``backup`` for download and record who downloaded it (before any byte leaves).

    With ``as_link`` nothing is opened: the result holds a pre-signed storage link (S3) or,
    for local storage, ``signed``, the value of a link of our own that
    :func:`open_signed_download` accepts once, for ``LINK_SECONDS``, while ``token`` (the prefix of
    the API token that asked, audited) is not revoked.

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
    own_link = link is None and as_link
    if link is None and not as_link:
        result.stream = storage.open_stored(backup.storage_name)
    via = "link" if (link or own_link) else "stream"
    with transaction.atomic():
        row = Download.objects.create(clinic_id=backup.clinic_id, backup=backup, downloaded_by=downloaded_by, via=via)
        audit(
            AuditEntry.Action.DOWNLOADED,
            clinic_id=backup.clinic_id,
            actor=downloaded_by,
            address=address,
            via_token=token,
            backup_id=backup.pk,
            via=via,
        )
    if own_link:
        value = {"b": backup.pk, "c": backup.clinic_id, "d": row.pk}
        made_by = ApiToken.objects.filter(prefix=token).values_list("pk", flat=True).first() if token else None
        if made_by is not None:
            value["t"] = made_by  # the link dies with the token
        result.signed = signing.dumps(value, salt=LINK_SALT, compress=True)
    return result


@translated()
def open_signed_download(signed: str, *, clinic_id: int, backup_id: int) -> BackupDownload:
    """The download behind one of our own signed links for ``backup_id`` (recorded when the link was made).

    The link is used up by this call. Raises RespaldoError ``api_link_expired`` for a link that
    is older than ``LINK_SECONDS``, altered, or another clinic's, ``api_link_used`` for one used
    before, ``api_link_revoked`` when the token that made it was revoked, and
    ``backup_not_downloadable`` when retention removed the backup since.
    """
    try:
        value = signing.loads(signed, salt=LINK_SALT, max_age=LINK_SECONDS)
    except signing.BadSignature:  # SignatureExpired is one
        raise RespaldoError("api_link_expired") from None
    if not isinstance(value, dict) or value.get("c") != clinic_id or value.get("b") != backup_id:
        raise RespaldoError("api_link_expired")
    backup = Backup.objects.select_related("clinic").filter(pk=value.get("b"), clinic_id=clinic_id).first()
    row = Download.objects.filter(pk=value.get("d"), backup_id=backup_id, clinic_id=clinic_id, via="link").first()
    if backup is None or row is None:
        raise RespaldoError("api_link_expired")
    if "t" in value and not ApiToken.objects.filter(pk=value["t"], revoked_at=None).exists():
        raise RespaldoError("api_link_revoked")
    if row.link_used_at is not None:
        raise RespaldoError("api_link_used")
    if not backup.has_stored_file:
        raise RespaldoError(
            "backup_not_downloadable", backup=backup.pk, status="expired" if backup.expired_at else backup.status
        )
    stream = storage.open_stored(backup.storage_name)  # a storage failure leaves the link unused
    if not Download.objects.filter(pk=row.pk, link_used_at=None).update(link_used_at=timezone.now()):
        stream.close()  # another request took it between the two reads
        raise RespaldoError("api_link_used")
    return BackupDownload(filename=download_filename(backup), size=int(backup.size or 0), stream=stream)
