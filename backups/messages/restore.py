"""The sentences of restore refusals and failures (backups/services/restore.py), by message id."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
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
}
