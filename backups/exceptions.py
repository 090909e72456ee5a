"""One root error with a stable code and parameters, rendered in the reader's language when shown.

``RespaldoError(code, message_id=None, **params)``: ``code`` is the stable reason a program
reads ("clinic_busy", "other_clinic", "tampered"...); ``message_id`` picks the sentence
(default: the code itself) from ``MESSAGES``, whose texts are marked for translation but
only translated by ``render()``, i.e. when a person reads them: the console, the command
line, an email. A job row keeps the code and parameters (``Job.error_code``/``error_params``), never a
sentence frozen in one language. Parameters are plain JSON values; a parameter that is
itself an error record (``{"message_id": ..., "params": ...}``) is rendered the same way.

archive.py stays free of Django: its errors carry a ``code`` and are turned into a
RespaldoError at the edge (``from_archive_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_noop as _

from backups.messages_api import API_MESSAGES
from backups.messages_upload import UPLOAD_MESSAGES

# Marked for makemessages, translated by render() in the language of whoever reads it.
MESSAGES: dict[str, str] = {
    # clinics and jobs
    "clinic_not_found": _("There is no clinic '%(clinic)s'."),
    "platform_not_clinic": _("The platform itself is not a clinic: choose a clinic."),
    "clinic_busy_backup": _("Clinic %(clinic)s already has backup #%(backup)s waiting or running; try again later."),
    "clinic_busy_restore": _("Clinic %(clinic)s is being restored (restore #%(restore)s); try again later."),
    "clinic_locked": _("Another backup or restore of this clinic is running."),
    "fair_use_backups": _(
        "This clinic has made %(limit)s manual backups in the last 24 hours, the most allowed; "
        "the daily backup still runs. Try again later."
    ),
    "fair_use_downloads": _(
        "This clinic has downloaded %(limit)s backups in the last 24 hours, the most allowed. Try again later."
    ),
    "clinic_offboarded": _("Clinic %(clinic)s has been offboarded: its data is gone, only its backups remain."),
    "offboard_backup_failed": _(
        "The last backup of %(clinic)s (#%(backup)s) failed, so the clinic was not offboarded: nothing changed."
    ),
    "clinic_not_offboarded": _("Clinic %(clinic)s is not offboarded: restore it from its own console instead."),
    "no_backup_to_bring_back": _("Clinic %(clinic)s has no backup left to bring it back from."),
    "bring_back_failed": _("Clinic %(clinic)s could not be brought back (it stays offboarded): %(reason)s"),
    "hold_needs_reason": _("Give a reason for the legal hold (it is kept in the audit trail)."),
    "hold_not_stored": _("Backup #%(backup)s is not stored (failed, running or already pruned): it cannot be held."),
    "hold_already": _("Backup #%(backup)s is already on legal hold."),
    "hold_not_held": _("Backup #%(backup)s is not on legal hold."),
    "erase_held": _(
        "%(count)s backups of clinic %(clinic)s are on legal hold: nothing was erased. Release them first "
        "(each release is audited)."
    ),
    "clinic_busy_erase": _(
        "Clinic %(clinic)s has a backup or restore waiting or running: its backups were not erased; try again later."
    ),
    "unknown_backup_format": _("Unknown backup format %(format)s: use pg or json."),
    "schema_missing": _("The clinic's schema '%(schema)s' does not exist in the database."),
    "interrupted_backup": _(
        "Interrupted: the worker running this backup stopped (crash, kill or time-out) before it finished. "
        "Nothing was kept from this attempt."
    ),
    "interrupted_restore": _(
        "Interrupted: the worker running this restore stopped (crash, kill or time-out) before the restore "
        "committed. The clinic is unchanged."
    ),
    "recovered_restore": _("The worker stopped after the data was restored; recovery completed it."),
    "interrupted_comparison": _(
        "Interrupted: the worker comparing this backup with the clinic stopped (crash, kill or time-out). "
        "Open the restore page again to compare anew."
    ),
    "recovered_migration_failed": _(
        "The worker stopped after the data was restored, and migrating it failed: %(detail)s"
    ),
    "unexpected": _("Unexpected error: %(detail)s"),
    # backups
    "dump_failed": _("The dump of the clinic failed: %(detail)s"),
    "json_export_mismatch": _("The JSON export does not match the database: wrote %(wrote)s, expected %(expected)s."),
    "storage_failed": _("The backup storage failed: %(detail)s"),
    "pg_tools": _("The PostgreSQL client tools cannot be used: %(detail)s"),
    # restores
    "backup_not_found": _("There is no backup #%(backup)s."),
    "backup_of_other_clinic": _(
        "Backup #%(backup)s belongs to another clinic; a clinic can only be restored from its own backups."
    ),
    "backup_not_restorable": _("Backup #%(backup)s is %(status)s: it cannot be restored."),
    "backup_not_downloadable": _("Backup #%(backup)s has no stored file to download (it is %(status)s)."),
    "restore_not_confirmed": _("Type the clinic's name exactly as shown (%(schema)s) to confirm the restore."),
    "emptied_not_accepted": _(
        "This backup has no rows for %(tables)s: restoring it empties them. Tick the box to accept that."
    ),
    "archive_changed": _(
        "Backup #%(backup)s changed in storage since it was made (its SHA-256 no longer matches the catalog)."
    ),
    "archive_changed_during_restore": _("Backup #%(backup)s changed while it was being restored."),
    "archive_extra_data": _("Backup #%(backup)s holds more data than its payload format used."),
    "newer_release": _(
        "This backup was made by a newer release of the application (it has migrations this one does not "
        "know: %(migrations)s). Upgrade before restoring it."
    ),
    "safety_backup_failed": _("The safety backup #%(backup)s failed, so nothing was restored: %(reason)s"),
    "table_count_mismatch": _(
        "The restored data has %(found)s tables but the backup lists %(listed)s (missing: %(missing)s; "
        "not listed: %(extra)s)."
    ),
    "row_count_mismatch": _("Table %(table)s has %(count)s rows after the restore but the backup says %(expected)s."),
    "restore_rolled_back": _("The restore was rolled back (%(tool)s stopped): %(detail)s."),
    "json_payload": _("The backup's JSON payload cannot be restored: %(detail)s"),
    "restore_into": _("The backup could not be restored into a schema of its own: %(detail)s"),
    "restore_failed_unchanged": _("%(reason)s The clinic is unchanged."),
    "restore_failed_restored": _("%(reason)s The backup's data WAS restored; its safety backup is the way back."),
    # archives (archive.py's errors, by their code)
    "not_recognized": _("This file is not a backup made by Respaldo (it is empty or not an encrypted backup archive)."),
    "wrong_key": _(
        "This backup cannot be opened: it was not produced by this deployment, or it was encrypted "
        "with a key this deployment no longer has (or the start of the file is damaged).%(detail)s"
    ),
    "damaged": _("This backup file is damaged or incomplete.%(detail)s"),
    "tampered": _(
        "This backup failed its authenticity check: it was changed after it was made, "
        "or it was not made by this deployment.%(detail)s"
    ),
    "unpacked_too_large": _("This backup's contents are larger than the allowed size; it was not unpacked.%(detail)s"),
    "key_config": _("Backup encryption is not configured correctly.%(detail)s"),
    "archive_error": _("The backup file could not be processed.%(detail)s"),
    # the clinic's files (media) in backups and restores
    "backup_media_missing": _(
        "%(count)s file(s) named by the clinic's records were not in storage and are not in this backup: %(files)s"
    ),
    "restore_media_not_in_backup": _(
        "The records were restored. This backup was made before files were part of backups: "
        "the clinic's files (X-rays) were left as they were."
    ),
    "restore_media_missing": _(
        "The records and files were restored, but %(count)s file(s) were already missing when "
        "the backup was made: %(files)s"
    ),
    "media_changed": _("A clinic file changed while the backup was being written; try again.%(detail)s"),
    # selective restore (one patient)
    "selective_not_in_backup": _("Backup #%(backup)s has no patient with the national id %(national_id)s."),
    "selective_national_id_taken": _(
        "Patient #%(pk)s: the national id %(value)s now belongs to another patient (#%(other)s)."
    ),
    "selective_unique_taken": _("%(table)s #%(pk)s: its %(column)s %(value)s now belongs to another row (#%(other)s)."),
    "selective_row_taken": _(
        "%(table)s #%(pk)s now belongs to another record (its %(column)s is %(now)s): it cannot be put back."
    ),
    "selective_missing_reference": _("%(table)s #%(pk)s refers to %(target)s #%(value)s, which no longer exists."),
    "selective_conflicts": _(
        "Patient %(national_id)s cannot be restored from backup #%(backup)s without breaking other records "
        "(%(count)s conflicts; the first: %(reason)s) Nothing was changed."
    ),
    "selective_changed_since_preview": _(
        "The records of patient %(national_id)s changed since the preview: look at the preview again. "
        "Nothing was changed."
    ),
    "selective_nothing_to_do": _(
        "Patient %(national_id)s and their records are already as in backup #%(backup)s: nothing to restore."
    ),
    "selective_failed": _("Patient %(national_id)s could not be restored: %(detail)s Nothing was changed."),
    "selective_undo_not_selective": _(
        "Restore #%(restore)s is not a finished restore of one patient: it has no undo of its own. Nothing was changed."
    ),
    "selective_undo_already": _("Restore #%(restore)s was already undone (by %(by)s). Nothing was changed."),
    "selective_undo_changed_since": _(
        "Restore #%(restore)s cannot be undone: %(count)s of the rows it put back for patient %(national_id)s "
        "changed or were deleted since (the first: %(table)s #%(pk)s), and the undo would lose those changes. "
        "Nothing was changed."
    ),
    "selective_undo_referenced": _(
        "Restore #%(restore)s cannot be undone: records created since refer to the rows it put back "
        "(%(detail)s). Nothing was changed."
    ),
    "selective_undo_failed": _("Restore #%(restore)s could not be undone: %(detail)s Nothing was changed."),
}

MESSAGES.update(UPLOAD_MESSAGES)
MESSAGES.update(API_MESSAGES)


def render(message_id: str, params: Mapping[str, Any] | None = None) -> str:
    """The sentence for ``message_id`` in the active language, with its parameters."""
    template = MESSAGES.get(message_id)
    values = {key: _render_param(value) for key, value in (params or {}).items()}
    if template is None:  # a code this release does not know (a row written by a newer one)
        return f"{message_id} {values}" if values else message_id
    text = gettext(template)
    try:
        return text % values if values else text
    except (KeyError, TypeError, ValueError):  # a translation with a broken placeholder
        return template % values


def _render_param(value: Any) -> Any:
    if isinstance(value, Mapping) and "message_id" in value:
        return render(value["message_id"], value.get("params"))
    return value


class RespaldoError(Exception):
    """Something a person asked for cannot be done; ``str()`` says why in the active language."""

    def __init__(self, code: str, message_id: str | None = None, /, **params: Any) -> None:
        self.code = code
        self.message_id = message_id or code
        self.params = {key: _jsonable(value) for key, value in params.items()}
        super().__init__(code)

    def __str__(self) -> str:
        return render(self.message_id, self.params)

    @property
    def record(self) -> dict[str, Any]:
        """What a job row keeps: code, message and parameters (rendered again when shown)."""
        return {"code": self.code, "message_id": self.message_id, "params": self.params}


def _jsonable(value: Any) -> Any:
    if isinstance(value, RespaldoError):
        return {"message_id": value.message_id, "params": value.params}
    if value is None or isinstance(value, bool | int | float | str | dict):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


class ClinicNotFound(RespaldoError):
    """No such clinic (or the platform's own schema was named)."""


class ClinicBusy(RespaldoError):
    """The clinic already has a backup or restore waiting or running."""


class BackupRefused(RespaldoError):
    """A backup cannot be requested or failed for a reason a person can act on."""


class RestoreRefused(RespaldoError):
    """A restore cannot be requested, or was refused or rolled back; the clinic is unchanged."""


class UploadRefused(RespaldoError):
    """An uploaded file cannot become a backup; nothing was kept."""


_ARCHIVE_CODES = {
    "not_recognized",
    "wrong_key",
    "damaged",
    "tampered",
    "unpacked_too_large",
    "key_config",
    "media_changed",
}


# What the age library says of a damaged archive (backups/archive/reader.py), said in the
# reader's language; the other details of an archive error are a tool's words, kept as they are.
_DECRYPTION_DETAILS = {"encrypted data: ": "detail_encrypted_data", "encryption header: ": "detail_encryption_header"}
MESSAGES.update(
    {
        "detail_encrypted_data": _(" (the encrypted data does not decrypt)"),
        "detail_encryption_header": _(" (the encryption header cannot be read)"),
    }
)


def as_respaldo_error(exc: BaseException) -> RespaldoError | None:
    """An error of the pipeline as a RespaldoError, or None for an unexpected one.

    The modules below the services (archive, storage, dumps, client tools, json payload)
    raise their own errors with a ``code`` class attribute and an English ``detail``: the
    code picks the translated sentence, the detail (a tool's own words) goes in as it is.
    """
    if isinstance(exc, RespaldoError):
        return exc
    code = getattr(type(exc), "code", None)
    if not isinstance(code, str):
        return None
    if code in _ARCHIVE_CODES or code == "archive_error":
        detail = getattr(exc, "detail", None)
        for prefix, message_id in _DECRYPTION_DETAILS.items():
            if detail and detail.startswith(prefix):  # the age library's words, in the reader's language
                return RespaldoError(code, detail=RespaldoError("detail", message_id))
        return RespaldoError(code, detail=f" ({detail})" if detail else "")
    return RespaldoError(code, detail=str(exc))


def failure_reason(exc: Exception) -> RespaldoError:
    """Why a job failed, from what it raised: an expected error as it is, anything else "unexpected"."""
    return as_respaldo_error(exc) or RespaldoError("unexpected", detail=f"{type(exc).__name__}: {exc}")


# A new clinic made from a backup (backups/services/clone.py)
MESSAGES.update(
    {
        "clone_without_users": _(
            "The clinic was created with its records but no user accounts: portable (json) backups do not carry "
            "them. Create its administrator with: python manage.py create_tenant_superuser --schema=%(schema)s"
        ),
        "clone_schema_invalid": _(
            "'%(schema)s' cannot be a clinic's schema name: use up to %(max)s lowercase letters, digits and "
            "single underscores, starting with a letter."
        ),
        "clone_schema_taken_clinic": _("The schema name '%(schema)s' is already used by clinic %(clinic)s."),
        "clone_schema_taken_database": _("A schema '%(schema)s' already exists in the database."),
        "clone_schema_taken_clone": _("Clone #%(clone)s is already making a clinic '%(schema)s'."),
        "clone_schema_taken_files": _(
            "A media folder for '%(schema)s' already exists (files of an earlier clinic?): choose another name."
        ),
        "clone_domain_invalid": _(
            "'%(domain)s' is not a valid domain: use lowercase letters, digits and hyphens, labels separated by dots."
        ),
        "clone_domain_taken": _("The domain %(domain)s already belongs to clinic %(clinic)s."),
        "clone_domain_taken_clone": _("Clone #%(clone)s is already making a clinic at the domain %(domain)s."),
        "clone_media_storage": _(
            "This backup holds the clinic's files, and a new clinic's files can only be written to local media "
            "storage: nothing was created."
        ),
        "clone_failed": _("The new clinic %(schema)s was not created (nothing was left behind): %(reason)s"),
        "clone_media_not_in_backup": _(
            "The clinic was created. This backup was made before files were part of backups: it has no files (X-rays)."
        ),
        "clone_media_missing": _(
            "The clinic was created with its records and files, but %(count)s file(s) were already missing when "
            "the backup was made: %(files)s"
        ),
        "interrupted_clone": _(
            "Interrupted: the worker running this clone stopped (crash, kill or time-out) before the new clinic "
            "was committed. Nothing was created."
        ),
        "recovered_clone": _("The worker stopped after the new clinic was committed; recovery put its files in place."),
    }
)
