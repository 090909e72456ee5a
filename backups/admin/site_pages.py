"""What the backup product adds to the two admin sites' own pages (``clinic_site.admin_sites``).

* The platform's index: every clinic's backup health summed up above the app list
  (``backups.selectors.platform``), with the trend of the last 60 backups.
* A clinic's login page: when a restore signed this browser out, it says so and leads back to
  that restore. A restore keeps everyone the restored data still knows signed in
  (``backups.services.sessions``); a session it had to sign out names the restore.

The sites hold the hooks; :func:`install` (called when ``backups.admin`` is imported) fills them,
so the project's sites, and the tenancy and records apps that register on them, import nothing
of backups.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext as _

from backups.admin.trends import trend_context
from backups.models import Backup, Restore
from backups.selectors.platform import platform_overview
from backups.services.sessions import forget_signed_out, signed_out_by_restore
from clinic_site.admin_sites import clinic_site, platform_site
from clinics.models import Clinic


def platform_health(request: HttpRequest, site: AdminSite) -> dict:
    """The platform index's backup health, for a user who may see the clinics list (its links lead there)."""
    clinics = site._registry.get(Clinic)
    if clinics is None or not clinics.has_view_permission(request):
        return {}
    overview = platform_overview()
    return {
        "overview": overview,
        "held": overview.held,
        "by_size_query": clinics.sort_query("stored_size_display"),
        **trend_context(Backup.objects.all()),  # the last 60 backups of every clinic
    }


class RestoreSignOutNote:
    """The clinic login page's note when a restore signed this browser out."""

    def context(self, request: HttpRequest, site: AdminSite) -> dict:
        """The note and, after signing in, the way back to the restore's result."""
        note = signed_out_by_restore(request)
        tenant = getattr(request, "tenant", None)
        if note is None or tenant is None:
            return {}
        restore = Restore.objects.filter(pk=note["restore"], clinic_id=tenant.pk).first()
        if restore is None:
            return {}
        return {
            "restored_note": _(
                "The clinic was restored from backup #%(backup)s, and your account or its password is not "
                "the same in the restored data, so you were signed out. Sign in again with an account of "
                "the restored data: you will be taken back to the restore's result, where it can be undone."
            )
            % {"backup": restore.backup_id},
            REDIRECT_FIELD_NAME: reverse(f"{site.name}:backups_restore_progress", args=[restore.pk]),
        }

    def signed_in(self, request: HttpRequest) -> None:
        """Once signed in again, the session no longer needs to say why it was signed out."""
        if signed_out_by_restore(request) is not None:
            forget_signed_out(request)


def install() -> None:
    """Fill the sites' hooks (once: importing ``backups.admin`` calls it)."""
    if platform_health not in platform_site.index_sections:
        platform_site.index_sections.append(platform_health)
    if not any(isinstance(note, RestoreSignOutNote) for note in clinic_site.login_notes):
        clinic_site.login_notes.append(RestoreSignOutNote())
