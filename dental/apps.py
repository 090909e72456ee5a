from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DentalConfig(AppConfig):
    name = "dental"
    verbose_name = _("Clinic records")
