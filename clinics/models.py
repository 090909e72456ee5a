"""Clinics are the tenants: each one has its own PostgreSQL schema."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import connection, models
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.postgresql_backend.base import _check_schema_name
from django_tenants.utils import schema_exists


def default_time_zone() -> str:
    """New clinics start in the deployment's time zone (``TIME_ZONE``)."""
    return settings.TIME_ZONE


def default_language() -> str:
    """New clinics start in the deployment's language (``LANGUAGE_CODE``)."""
    return settings.LANGUAGE_CODE


def validate_time_zone(value: str) -> None:
    """Refuse a name the IANA time zone database does not know."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(_("Unknown time zone: %(zone)s."), params={"zone": value}) from exc


class Clinic(TenantMixin):
    """A dental clinic, served at its own domain, with its data in its own schema."""

    name = models.CharField(_("name"), max_length=200)
    contact_email = models.EmailField(_("contact email"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text=_("The clinic's own time zone (for example Europe/Madrid): its pages show times in it."),
    )
    language = models.CharField(
        _("language"),
        max_length=10,
        choices=settings.LANGUAGES,
        default=default_language,
        help_text=_("The language of the clinic's emails (its pages follow each browser's language)."),
    )
    offboarded_at = models.DateTimeField(
        _("offboarded at"),
        null=True,
        blank=True,
        help_text=_("Set when the clinic left: its schema and domains are gone, its backups kept for a while."),
    )
    backup_recipient = models.CharField(
        _("escrow key for backups"),
        max_length=100,
        blank=True,
        validators=[
            RegexValidator(r"^age1[02-9ac-hj-np-z]{58}$", _("Enter an age public key (age1…).")),
        ],
        help_text=_(
            "Optional age public key of the clinic: its backups are also encrypted to it, "
            "so the clinic can open them without the platform."
        ),
    )

    media_generation = models.CharField(
        _("media generation"),
        max_length=32,
        blank=True,
        default="",
        editable=False,
        help_text=_(
            "Which generation of the clinic's files is current when they are kept on S3 "
            "(a restore writes a new one and switches to it with the data); empty for none."
        ),
    )

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        verbose_name = _("clinic")
        verbose_name_plural = _("clinics")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def _refuse_the_templates_name(self) -> None:
        if self.schema_name and self.schema_name == getattr(settings, "CLINICS_TEMPLATE_SCHEMA", None):
            message = _("The schema name '%(schema)s' is reserved for the template new clinics are made from.")
            raise ValidationError({"schema_name": message % {"schema": self.schema_name}})

    def clean(self) -> None:
        super().clean()
        self._refuse_the_templates_name()

    def save(self, *args, **kwargs) -> None:
        # before django-tenants' save, which drops the schema of a clinic it failed to create
        if self._state.adding:
            self._refuse_the_templates_name()
        super().save(*args, **kwargs)

    def create_schema(self, check_if_exists: bool = False, sync_schema: bool = True, verbosity: int = 1) -> bool:
        """Create the clinic's schema: by ``CLINICS_SCHEMA_MAKER`` (a function given the schema name
        that makes it and returns True, or declines with False having made nothing) when the
        deployment names one, else, or when it declines, by django-tenants: every migration run.

        Respaldo's maker copies a migrated template (``backups.services.clinic_template``)."""
        maker = getattr(settings, "CLINICS_SCHEMA_MAKER", "")
        if maker and sync_schema and not self.is_public and not schema_exists(self.schema_name):
            _check_schema_name(self.schema_name)
            if import_string(maker)(self.schema_name):
                connection.set_schema_to_public()
                return True
        return super().create_schema(check_if_exists=check_if_exists, sync_schema=sync_schema, verbosity=verbosity)

    @property
    def is_public(self) -> bool:
        """True for the platform's own tenant (the public schema)."""
        from django_tenants.utils import get_public_schema_name

        return self.schema_name == get_public_schema_name()


class Domain(DomainMixin):
    """A host name that routes requests to a clinic."""

    class Meta:
        verbose_name = _("domain")
        verbose_name_plural = _("domains")

    def __str__(self) -> str:
        return self.domain
