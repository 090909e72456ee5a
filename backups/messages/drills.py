"""The sentences of a drill the platform asks for (backups/operations/drills.py request_drill), by message id."""

from django.utils.translation import gettext_noop as _

MESSAGES: dict[str, str] = {
    "drill_offboarded": _("%(clinic)s is offboarded: there is nothing to drill."),
    "drill_no_backup": _("%(clinic)s has no stored backup to drill yet: back it up first."),
    "drill_waiting": _("A drill of %(clinic)s is already waiting for a worker."),
}
