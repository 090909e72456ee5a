"""A clinic's archive key: public metadata only (the wrapped key lives in storage, ``backups.keys.clinic``)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ClinicKey(models.Model):
    """A clinic's own archive key (crypto-erasure): its backups are encrypted to it alone.

    The row holds public metadata only: the age identity itself lives wrapped (age-encrypted to
    the deployment's archive key) in one place, the backup storage object
    ``keys/<schema>/<clinic id>-<key id>.age`` (see ``backups.keys.clinic``). Never here: what
    a row once held survives in PostgreSQL's dead tuples, WAL, replicas and database backups.
    Erasing the key deletes that object in every version: every archive encrypted to it,
    wherever a copy of it is, can no longer be opened. The row stays (public key, when and why
    it was erased) for the record.
    """

    clinic = models.ForeignKey(
        "clinics.Clinic", on_delete=models.CASCADE, related_name="archive_keys", verbose_name=_("clinic")
    )
    public_key = models.CharField(_("public key"), max_length=100, unique=True)
    wrapped_with = models.CharField(_("wrapped with"), max_length=16, blank=True, help_text=_("deployment key id"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    erased_at = models.DateTimeField(_("erased at"), null=True, blank=True)
    erased_by = models.CharField(_("erased by"), max_length=254, blank=True)
    erase_reason = models.CharField(_("reason"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("clinic archive key")
        verbose_name_plural = _("clinic archive keys")
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], condition=Q(erased_at__isnull=True), name="one_live_archive_key_per_clinic"
            )
        ]

    def __str__(self) -> str:
        return f"{self.clinic_id}: {self.public_key[:16]}…"
