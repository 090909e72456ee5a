"""URLs served on the platform's own domain (``localhost``)."""

from django.urls import path
from django.views.generic import RedirectView

from backups.views import healthz
from clinic_site.admin_sites import platform_site

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", platform_site.urls),
    path("healthz", healthz, name="healthz"),
]
