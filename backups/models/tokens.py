"""API tokens: a clinic user's key to ``/api/v1/`` on the clinic's host (``backups.services.api_tokens``).

A token is shown once, when it is made; only its SHA-256 is kept, with a short prefix that
names it in lists. It acts as its user, with that user's permissions in the clinic at the
time of each request; a read-only token can only read, whatever its user may do. Tokens
live in the platform's catalog, not in the clinic's schema, so that restoring an old backup
of the clinic never brings a revoked token back. Imported at the end of ``backups.models``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ApiToken(models.Model):
    """One API token of one user of one clinic."""

    clinic = models.ForeignKey(
        "clinics.Clinic", on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("clinic")
    )
    user_id = models.IntegerField(_("user id"), help_text=_("the user's id in the clinic's own schema"))
    username = models.CharField(_("user"), max_length=150)
    name = models.CharField(_("name"), max_length=100, help_text=_("what the token is for, e.g. 'front desk app'"))
    read_only = models.BooleanField(
        _("read only"), default=False, help_text=_("a read-only token can list and read, never act")
    )
    prefix = models.CharField(_("prefix"), max_length=16, unique=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    created_by = models.CharField(_("created by"), max_length=150, blank=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    last_used_address = models.GenericIPAddressField(_("last used from"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    revoked_by = models.CharField(_("revoked by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["clinic", "user_id"], name="apitoken_clinic_user", condition=Q(revoked_at=None))
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiUsage(models.Model):
    """Fair use of the API: one clinic's requests in the current one-minute window, per user and in all.

    ``username`` is the user's (whatever the credential: session or any of their tokens); the
    row with an empty ``username`` counts the whole clinic (``backups.services.api_usage``).
    """

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.CASCADE, related_name="+")
    username = models.CharField(max_length=150, blank=True)
    window_started_at = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("API usage")
        verbose_name_plural = _("API usage")
        constraints = [models.UniqueConstraint(fields=["clinic", "username"], name="apiusage_clinic_user")]

    def __str__(self) -> str:
        return f"{self.username or '*'}: {self.requests} since {self.window_started_at}"
