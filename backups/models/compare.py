"""The catalog row of a comparison: what restoring a backup would remove, bring back and change,
record by record (``backups.services.differences``), computed by a worker.

Imported at the end of ``backups.models`` so that Django finds the model in the app.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from backups.models.backup import Backup
from backups.models.jobs import Job


class RestoreComparison(Job):
    """One comparison of a backup with its clinic as it was when the worker ran it.

    ``result`` (once succeeded): ``{"tables": {table: {"removed": n, "brought_back": n,
    "changed": n}}, "patients": [national ids], "seconds": s}``. Read-only work: the clinic is
    neither changed nor locked beyond the reads of one transaction.
    """

    class Phase(models.TextChoices):
        """What a running comparison is doing (``progress_phase``)."""

        COMPARING = "comparing", _("comparing")

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.CASCADE, related_name="+")
    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="comparisons", verbose_name=_("backup"))
    result = models.JSONField(_("differences"), default=dict, blank=True)

    class Meta:
        verbose_name = _("restore comparison")
        verbose_name_plural = _("restore comparisons")
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["backup", "-requested_at"], name="comparison_backup_newest")]

    def __str__(self) -> str:
        return f"Comparison #{self.pk} of backup #{self.backup_id}"
