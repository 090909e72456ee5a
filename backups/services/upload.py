"""Turning a file a clinic uploads into a catalog backup of kind "uploaded".

The file is recognised by its content, never by its name. Two kinds are accepted:

* **An archive made by this deployment for this same clinic** (an age file): verified in
  full first (authentication, sizes, the uncompressed-size limit), then its manifest is
  checked against the clinic, and an exact copy is stored.
* **A plain Django JSON fixture of the clinic's records** (``manage.py dumpdata dental``
  with any indentation, or our own one-record-per-line json payload): parsed as a stream,
  every record checked against the current models, converted into the canonical json
  payload of :mod:`backups.formats.json.payload` and wrapped into a new archive.

Everything else (SQL scripts, pg_dump files, compressed files, other clinics' or other
deployments' archives, damaged files, records that are not the clinic's own) is refused
with an :class:`UploadRefused` whose message says, in plain words, what the file is and why
it cannot be used. The upload and the conversion's working files are unnamed private
temporary files (mode 0600, in ``BACKUPS_UPLOAD_TMP_DIR`` or the OS default), which the
operating system removes whatever happens. Nothing is stored and no catalog row is created
until the file has passed every check. A file that is byte for byte (SHA-256) one of the
clinic's stored backups is not kept twice: the upload is answered with that backup. Every
refusal is recorded in the audit trail (who, why, the file's name and size; never the file).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from django.db import connection, transaction
from django.utils import timezone, translation

from backups import archive, jobs, postgres, storage
from backups.audit import audit
from backups.conf import conf
from backups.exceptions import ClinicBusy, RespaldoError, UploadRefused, translated
from backups.formats.json.fixture import FixtureConverter
from backups.formats.json.parser import COPY_BYTES, human_size, not_recognized
from backups.keys.clinic import manifest_of_other_clinic, reading_identities, writing_identity
from backups.manifest import manifest_build, manifest_check, manifest_summary, schema_migrations
from backups.models import AuditEntry, Backup
from backups.services.backup import ARCHIVE_EXTENSION, check_not_busy, clinic_get
from backups.services.upload_spool import (
    _declared_size,
    _Discard,
    _django_temporary_file,
    _private_file,
    _sniff,
    _spool_upload,
    too_large_refusal,
)
from clinics.models import Clinic

__all__ = ["UploadAccepted", "UploadRefused", "backup_from_upload", "upload_accept", "upload_refused"]

logger = logging.getLogger(__name__)


# UploadRefused (backups.exceptions) says why the file cannot become a backup: ``code`` names the
# reason for programs ("sql", "other_clinic", "altered"...), ``message_id`` and ``params`` the
# sentence, rendered in the reader's language by ``str()``. Nothing was changed: no catalog row,
# no stored file, no temporary file left.


# --- Entry point -----------------------------------------------------------------------


@dataclass(frozen=True)
class UploadAccepted:
    """An accepted upload: the backup to restore, and whether it is new (False: the same file was in the catalog)."""

    backup: Backup
    created: bool


def backup_from_upload(
    *,
    clinic: Clinic | int | str,
    source: BinaryIO,
    filename: str = "",
    requested_by: str = "",
    address: str | None = None,
    token: str | None = None,
) -> Backup:
    """Check an uploaded file and turn it into a succeeded backup of kind "uploaded" of ``clinic``.

    The backup is the one the catalog already has when the file is byte for byte one of the
    clinic's stored backups (see :func:`upload_accept`).
    """
    return upload_accept(
        clinic=clinic, source=source, filename=filename, requested_by=requested_by, address=address, token=token
    ).backup


@translated()
def upload_accept(
    *,
    clinic: Clinic | int | str,
    source: BinaryIO,
    filename: str = "",
    requested_by: str = "",
    address: str | None = None,
    token: str | None = None,
) -> UploadAccepted:
    """Check an uploaded file and turn it into a succeeded backup of kind "uploaded" of ``clinic``.

    ``source`` is a Django ``UploadedFile`` or any binary file object, read once from its
    current position. ``filename`` is only recorded (in a converted archive's manifest), never
    trusted. A file whose SHA-256 is that of a stored backup of the clinic is not kept a second
    time: the answer is that backup (``created`` False). Raises :class:`UploadRefused` for a file
    that cannot be used (recorded in the audit trail), ``ClinicNotFound``, ``KeyConfigError``
    when no archive key is configured (checked before reading the file), ``StorageError`` when
    the backup storage fails; in every case nothing is kept.
    """
    target = clinic_get(clinic)
    if not postgres.schema_exists(target.schema_name):
        raise RespaldoError("schema_missing", schema=target.schema_name)
    identities = reading_identities(target)  # fail closed before reading a possibly huge upload
    limit = conf.max_upload_bytes
    started_at = timezone.now()
    seen: dict[str, int | None] = {"bytes": None}
    try:
        declared = _declared_size(source)
        seen["bytes"] = declared
        if declared is not None and declared > limit:
            raise too_large_refusal(limit)  # before copying anything
        with contextlib.ExitStack() as stack:
            in_place = _django_temporary_file(source)
            if in_place is not None:  # read where Django put it: one copy of the upload on disk, not two
                upload = stack.enter_context(in_place)
                size, sha256 = _spool_upload(upload, _Discard(), limit)
            else:
                upload = stack.enter_context(_private_file())
                size, sha256 = _spool_upload(source, upload, limit)
            seen["bytes"] = size
            existing = _same_file(target, sha256, size)
            if existing is not None:  # the catalog has this very file: checked like any upload, not kept twice
                _verified_archive(target, upload, identities=identities)
                backup = existing
            elif _sniff(upload, size) == "archive":
                backup = _accept_archive(
                    target, upload, identities=identities, requested_by=requested_by, started_at=started_at
                )
            else:
                converter = stack.enter_context(FixtureConverter())
                converter.read(upload)
                source_info = {"type": "django-json", "filename": filename[:255], "bytes": size, "sha256": sha256}
                backup = _accept_fixture(
                    target,
                    converter,
                    identities=[writing_identity(target)],
                    source_info=source_info,
                    requested_by=requested_by,
                    started_at=started_at,
                )
    except (UploadRefused, ClinicBusy) as exc:
        logger.info("Upload %r for clinic %s refused (%s): %s", filename, target.schema_name, exc.code, exc)
        upload_refused(
            target.pk,
            exc,
            filename=filename,
            size=seen["bytes"],
            requested_by=requested_by,
            address=address,
            token=token,
        )
        raise
    _record_accepted(
        backup,
        filename=filename,
        size=size,
        same_file=existing is not None,
        requested_by=requested_by,
        address=address,
        token=token,
    )
    return UploadAccepted(backup=backup, created=existing is None)


def _same_file(target: Clinic, sha256: str, size: int) -> Backup | None:
    """The clinic's stored backup holding exactly these bytes, if the catalog has one."""
    return Backup.objects.stored().filter(clinic=target, sha256=sha256, size=size).order_by("pk").first()


def upload_refused(
    clinic_id: int,
    refusal: RespaldoError,
    *,
    filename: str = "",
    size: int | None = None,
    requested_by: str = "",
    address: str | None = None,
    token: str | None = None,
) -> None:
    """Record a refused upload in the audit trail: who, why (code and message) and which file; no file is kept."""
    with translation.override("en"):
        message = str(refusal)
    audit(
        AuditEntry.Action.UPLOAD_REFUSED,
        clinic_id=clinic_id,
        actor=requested_by,
        address=address,
        via_token=token,
        code=refusal.code,
        message=message[:1000],
        reason={"message_id": refusal.message_id, "params": refusal.params},
        filename=filename[:255],
        bytes=size,
    )


def _record_accepted(
    backup: Backup,
    *,
    filename: str,
    size: int,
    same_file: bool,
    requested_by: str,
    address: str | None,
    token: str | None = None,
) -> None:
    """The audit entry (naming the API token, if one acted) and the log line of an accepted upload."""
    extra = {"same_file": True} if same_file else {}
    audit(
        AuditEntry.Action.UPLOADED,
        clinic_id=backup.clinic_id,
        actor=requested_by,
        address=address,
        via_token=token,
        backup_id=backup.pk,
        filename=filename[:255],
        bytes=size,
        **extra,
    )
    logger.info(
        "Upload %r for clinic %s %s backup #%s (%s).",
        filename,
        backup.clinic.schema_name,
        "is the same file as" if same_file else "accepted as",
        backup.pk,
        backup.payload_format,
    )


# --- Kind 1: an archive of ours --------------------------------------------------------


def _refuse_other_clinic(target: Clinic, upload: BinaryIO) -> None:
    """Say "another clinic's backup" when another clinic's key opens the file (its archives
    are encrypted to its own key, so this clinic's keys cannot even read whose it is)."""
    upload.seek(0)
    manifest = manifest_of_other_clinic(upload, exclude=target)
    if manifest is not None:
        manifest_check(manifest, target, error=UploadRefused)


def _accept_archive(
    target: Clinic, upload: BinaryIO, *, identities: list[str], requested_by: str, started_at: datetime
) -> Backup:
    summary = _verified_archive(target, upload, identities=identities)
    manifest = summary.manifest
    name = storage.backup_key(
        schema=target.schema_name, kind=Backup.Kind.UPLOADED, created_at=timezone.now(), ext=ARCHIVE_EXTENSION
    )

    def produce(out: BinaryIO) -> None:
        upload.seek(0)
        shutil.copyfileobj(upload, out, COPY_BYTES)

    stored, _result = storage.store_stream(name, produce)
    _check_stored(stored, summary)
    return _create_backup(
        target,
        stored,
        payload_format=manifest["payload_format"],
        manifest=manifest,
        requested_by=requested_by,
        started_at=started_at,
    )


def _verified_archive(target: Clinic, upload: BinaryIO, *, identities: list[str]) -> archive.ArchiveSummary:
    """Authenticate the uploaded archive with the clinic's keys and check its manifest is this clinic's.

    Every upload goes through this, the same file as a stored backup included: a file is only ever
    used as this deployment's if the keys it holds today open it (a rebuilt platform without
    ``import_backups`` is told so here, not by a failed restore later)."""
    upload.seek(0)
    limit = conf.max_payload_bytes
    try:
        summary = archive.verify_archive(upload, identities=identities, max_payload_bytes=limit)
    except archive.KeyConfigError:
        raise  # our configuration, not the file
    except archive.ArchiveWrongKey:
        _refuse_other_clinic(target, upload)
        raise UploadRefused("wrong_key", "upload.wrong_key") from None
    except archive.ArchiveAuthError:
        raise UploadRefused("altered", "upload.altered") from None
    except archive.ArchiveTooLarge:
        raise UploadRefused("unpacked_too_large", "upload.unpacked_too_large", limit=human_size(limit)) from None
    except archive.ArchiveNotRecognized:
        raise not_recognized() from None
    except archive.ArchiveError as exc:  # ArchiveCorrupt, or anything the reader could not make sense of
        raise UploadRefused("damaged", "upload.damaged", detail=exc.detail or type(exc).__name__) from None
    manifest_check(summary.manifest, target, error=UploadRefused)
    return summary


def _check_stored(stored: storage.StoredObject, summary: archive.ArchiveSummary) -> None:
    """The storage must hold exactly the bytes that were verified or written."""
    if stored.sha256 != summary.archive_sha256 or stored.size != summary.archive_bytes:
        storage.delete_stored(stored.name)
        raise RespaldoError("storage_failed", "upload.stored_copy_differs")


def _create_backup(
    target: Clinic,
    stored: storage.StoredObject,
    *,
    payload_format: str,
    manifest: dict,
    requested_by: str,
    started_at: datetime,
) -> Backup:
    """The catalog row of an accepted file, through the job states like any backup.

    Refused (ClinicBusy) while the clinic has a backup or restore waiting or running, as a
    backup would be; the stored file is removed then.
    """
    try:
        with transaction.atomic():
            Clinic.objects.select_for_update().get(pk=target.pk)
            check_not_busy(target)
            backup = Backup.objects.create(
                clinic=target,
                kind=Backup.Kind.UPLOADED,
                payload_format=payload_format,
                requested_by=requested_by[:254],
                requested_at=started_at,
            )
        jobs.claim(Backup, backup.pk, phase=Backup.Phase.STORING)
        jobs.succeed(
            Backup,
            backup.pk,
            started_at=started_at,
            storage_name=stored.name,
            size=stored.size,
            sha256=stored.sha256,
            manifest=manifest_summary(manifest),
            progress_bytes=stored.size,
        )
        return Backup.objects.get(pk=backup.pk)
    except BaseException:
        with contextlib.suppress(Exception):
            storage.delete_stored(stored.name)
        raise


# --- Kind 2: a Django JSON fixture -------------------------------------------------------


def _accept_fixture(
    target: Clinic,
    converter: FixtureConverter,
    *,
    identities: list[str],
    source_info: dict,
    requested_by: str,
    started_at: datetime,
) -> Backup:
    schema = target.schema_name
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server_version = cursor.fetchone()[0].split()[0]
    created_at = timezone.now()
    manifest = manifest_build(
        clinic=target,
        kind=Backup.Kind.UPLOADED,
        payload_format=Backup.Format.JSON,
        tables=converter.counts(),
        migrations=schema_migrations(schema),
        server_version=server_version,
        dump_tool="json",
        created_at=created_at,
        source=source_info,
    )
    extra = [target.backup_recipient] if target.backup_recipient else []
    level = conf.zstd_level
    name = storage.backup_key(schema=schema, kind=Backup.Kind.UPLOADED, created_at=created_at, ext=ARCHIVE_EXTENSION)

    def produce(out: BinaryIO) -> archive.ArchiveSummary:
        return archive.write_archive(
            converter.payload(),
            out,
            manifest=manifest,
            identities=identities,
            extra_recipients=extra,
            level=level,
            threads=conf.zstd_threads,
        )

    stored, summary = storage.store_stream(name, produce)
    _check_stored(stored, summary)
    return _create_backup(
        target,
        stored,
        payload_format=Backup.Format.JSON,
        manifest=summary.manifest,
        requested_by=requested_by,
        started_at=started_at,
    )
