"""URLs served on a clinic's domain (``<clinic>.localhost``)."""

from django.urls import path
from django.views.generic import RedirectView

from clinic_site.admin_sites import clinic_site
from dental.views import clinic_media

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", clinic_site.urls),
    path("media/<str:schema>/<path:path>", clinic_media, name="clinic_media"),
]
