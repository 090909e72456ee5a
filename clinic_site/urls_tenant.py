"""URLs served on a clinic's domain (``<clinic>.localhost``)."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from backups.api.views import not_found as api_not_found
from clinic_site.admin_sites import clinic_site
from dental.views import clinic_media

# The admin modules load with the URLs (clinic_site.admin_apps.LazyAdminConfig), so that a
# worker or a backup command, which serves no page, never imports them.
admin.autodiscover()

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", clinic_site.urls),
    path("api/v1/", include("backups.api.urls")),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("media/<str:schema>/<path:path>", clinic_media, name="clinic_media"),
]

handler403 = "clinic_site.error_pages.permission_denied"
handler404 = "clinic_site.error_pages.page_not_found"
