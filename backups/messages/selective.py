"""The sentences of the selective restore of one patient and of its undo, by message id."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
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
