"""The console's admin pages. The clinic console (``clinic_*``) is registered on each clinic's
admin site; the platform console comes with the platform issue."""

from backups.admin import clinic_backups, clinic_restores  # noqa: F401 - registers the ModelAdmins
