"""The sentences about the clinic's files (media) in backups and restores, by message id."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
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
}
