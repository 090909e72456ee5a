"""The console's admin pages. The clinic console (``clinic_*``) is registered on each clinic's
admin site; ``platform_*`` on the platform's."""

from backups.admin import (  # noqa: F401 - registers the ModelAdmins
    clinic_backups,
    clinic_operations,
    clinic_restores,
    clinic_tokens,
    clinic_webhooks,
    platform_catalog,
    platform_clinics,
    platform_clones,
    platform_operations,
    platform_webhooks,
    site_pages,
)

site_pages.install()
