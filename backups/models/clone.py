"""The catalog row of a clone: a NEW clinic made from a backup (``backups.services.clone``).

Imported at the end of ``backups.models`` so that Django finds the model in the app.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from backups.models.backup import Backup
from backups.models.jobs import Job


class CloneJob(Job):
    """One clone: the backup ``source_backup`` (of any clinic) restored into a new clinic.

    ``clinic`` is set in the same transaction that creates the clinic's row, schema and data, so
    after a crash the row says truthfully whether the clinic was created. A failed clone leaves
    no clinic (the column is then empty).
    """

    class Phase(models.TextChoices):
        """What a running clone is doing (``progress_phase``), in order."""

        VERIFYING = "verifying", pgettext_lazy("clone phase", "verifying the backup")
        RESTORING = "restoring", pgettext_lazy("clone phase", "creating the clinic and its data")
        MIGRATING = "migrating", pgettext_lazy("clone phase", "migrating forward")
        FILES = "files", pgettext_lazy("clone phase", "putting its files in place")

    source_backup = models.ForeignKey(
        Backup, on_delete=models.PROTECT, related_name="clones", verbose_name=_("source backup")
    )
    target_schema = models.CharField(_("new schema"), max_length=63)
    target_name = models.CharField(_("new clinic name"), max_length=200)
    target_domain = models.CharField(_("new domain"), max_length=253)
    clinic = models.ForeignKey(
        "clinics.Clinic",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created clinic"),
    )
    migrated = models.BooleanField(_("migrated forward"), default=False)

    class Meta:
        app_label = "backups"
        verbose_name = _("clone")
        verbose_name_plural = _("clones")
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["target_schema"],
                condition=Q(status__in=["pending", "running"]),
                name="one_active_clone_per_schema",
            ),
            models.UniqueConstraint(
                fields=["target_domain"],
                condition=Q(status__in=["pending", "running"]),
                name="one_active_clone_per_domain",
            ),
        ]

    def __str__(self) -> str:
        return f"Clone #{self.pk} of backup #{self.source_backup_id} into {self.target_schema}"
