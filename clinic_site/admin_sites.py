"""The two admin sites: the platform's (public schema) and each clinic's.

Each site registers only the models that belong to its side, so a clinic admin never
sees shared apps (clinics, domains, job queues) and a platform URL for a clinic-only model
is simply not routed (404).
"""

from collections.abc import Callable

from django.contrib.admin import AdminSite
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _


class PlatformAdminSite(AdminSite):
    """Served at ``localhost/admin/``: clinics, their domains, jobs, platform users."""

    site_header = _("Respaldo · platform")
    site_title = _("Respaldo platform")
    index_title = _("Platform administration")
    index_template = "admin/platform_index.html"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # What the apps add to the index page: callables (request, site) -> context. The backup
        # product adds every clinic's backup health (``backups.admin.site_pages``).
        self.index_sections: list[Callable[[HttpRequest, AdminSite], dict]] = []

    def index(self, request, extra_context=None):
        """The app list, with what the apps add above it (``index_sections``)."""
        context = {}
        for section in self.index_sections:
            context.update(section(request, self))
        return super().index(request, {**context, **(extra_context or {})})


class ClinicAdminSite(AdminSite):
    """Served at ``<clinic>.localhost/admin/``: that clinic's own records and users."""

    site_title = _("Respaldo clinic")
    index_title = _("Clinic administration")
    enable_nav_sidebar = False  # the backups' tables need the whole width at 1280 px
    login_template = "admin/backups/clinic_login.html"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # What the apps add to the login page: objects with ``context(request, site) -> dict`` and
        # ``signed_in(request)``, called after a successful sign-in. The backup product says when
        # a restore signed this browser out (``backups.admin.site_pages``).
        self.login_notes: list = []

    def login(self, request, extra_context=None):
        """The login form, with what the apps add to it (``login_notes``)."""
        context = dict(extra_context or {})
        for note in self.login_notes:
            context.update(note.context(request, self))
        response = super().login(request, context)
        if request.method == "POST" and request.user.is_authenticated:
            for note in self.login_notes:
                note.signed_in(request)
        return response

    def each_context(self, request):
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        context["site_header"] = f"{tenant.name} · Respaldo" if tenant is not None else "Respaldo"
        return context


platform_site = PlatformAdminSite(name="admin")
clinic_site = ClinicAdminSite(name="admin")
