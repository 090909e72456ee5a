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

    def each_context(self, request):
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        context["site_header"] = f"{tenant.name} · Respaldo" if tenant is not None else "Respaldo"
        return context


platform_site = PlatformAdminSite(name="admin")
clinic_site = ClinicAdminSite(name="admin")
