"""The sentences of clinics and jobs (busy, offboarded, legal hold, interrupted) and of backups, by message id."""

from django.utils.translation import gettext_noop as _

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
    "unknown_backup_format": _("Unknown backup format %(format)s: use %(known)s."),
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
}
