"""The two admin sites: the platform's (public schema) and each clinic's.

Each site registers only the models that belong to its side, so a clinic admin never
sees shared apps (clinics, domains, job queues) and a platform URL for a clinic-only model
is simply not routed (404).
"""

from django.contrib.admin import AdminSite
from django.utils.translation import gettext_lazy as _


class PlatformAdminSite(AdminSite):
    """Served at ``localhost/admin/``: clinics, their domains, jobs, platform users."""

    site_header = _("Respaldo · platform")
    site_title = _("Respaldo platform")
    index_title = _("Platform administration")
    index_template = "admin/platform_index.html"

    def index(self, request, extra_context=None):
        """The app list, with every clinic's backup health summed up above it (backups.operations.overview)."""
        from backups.models import Backup
        from backups.operations.overview import platform_overview
        from backups.operations.trends import trend_context
        from clinics.models import Clinic

        clinics = self._registry.get(Clinic)
        context = {}
        if clinics is not None and clinics.has_view_permission(request):  # its links lead to the clinics list
            overview = platform_overview()
            context = {
                "overview": overview,
                "held": overview.held,
                "by_size_query": clinics.sort_query("stored_size_display"),
                **trend_context(Backup.objects.all()),  # the last 60 backups of every clinic
            }
        return super().index(request, {**context, **(extra_context or {})})


class ClinicAdminSite(AdminSite):
    """Served at ``<clinic>.localhost/admin/``: that clinic's own records and users."""

    site_title = _("Respaldo clinic")
    index_title = _("Clinic administration")
    enable_nav_sidebar = False  # the backups' tables need the whole width at 1280 px
    login_template = "admin/backups/clinic_login.html"

    def login(self, request, extra_context=None):
        """The login form; when a restore signed this browser out, it says so and leads back to that restore.

        A restore keeps everyone the restored data still knows signed in
        (``backups.services.sessions``); a session it had to sign out names the restore.
        """
        from django.contrib.auth import REDIRECT_FIELD_NAME
        from django.urls import reverse

        from backups.models import Restore
        from backups.services.sessions import forget_signed_out, signed_out_by_restore

        context = dict(extra_context or {})
        note = signed_out_by_restore(request)
        tenant = getattr(request, "tenant", None)
        restore = None
        if note is not None and tenant is not None:
            restore = Restore.objects.filter(pk=note["restore"], clinic_id=tenant.pk).first()
        if restore is not None:
            context["restored_note"] = _(
                "The clinic was restored from backup #%(backup)s, and your account or its password is not "
                "the same in the restored data, so you were signed out. Sign in again with an account of "
                "the restored data: you will be taken back to the restore's result, where it can be undone."
            ) % {"backup": restore.backup_id}
            context[REDIRECT_FIELD_NAME] = reverse(f"{self.name}:backups_restore_progress", args=[restore.pk])
        response = super().login(request, context)
        if note is not None and request.method == "POST" and request.user.is_authenticated:
            forget_signed_out(request)
        return response

    def each_context(self, request):
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        context["site_header"] = f"{tenant.name} · Respaldo" if tenant is not None else "Respaldo"
        return context


platform_site = PlatformAdminSite(name="admin")
clinic_site = ClinicAdminSite(name="admin")
