"""URLs served on the platform's own domain (``localhost``)."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from backups.views import healthz
from clinic_site.admin_sites import platform_site

# The admin modules load with the URLs (clinic_site.admin_apps.LazyAdminConfig), so that a
# worker or a backup command, which serves no page, never imports them.
admin.autodiscover()

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", platform_site.urls),
    path("healthz", healthz, name="healthz"),
]

handler403 = "clinic_site.error_pages.permission_denied"
handler404 = "clinic_site.error_pages.page_not_found"
