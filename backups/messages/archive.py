"""The sentences of archive errors (backups/archive/), by their code, and the details said of them."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
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
    # what the age library says of a damaged archive (exceptions.as_respaldo_error), in the reader's language
    "detail_encrypted_data": _(" (the encrypted data does not decrypt)"),
    "detail_encryption_header": _(" (the encryption header cannot be read)"),
}
