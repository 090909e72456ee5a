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
