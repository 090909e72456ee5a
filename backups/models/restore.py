"""A restore of one clinic from one of its backups (whole, or one patient's records)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from backups.models.backup import NOTIFY_PENDING, Backup
from backups.models.exact_json import ExactJSONDecoder, ExactJSONEncoder
from backups.models.jobs import Job


class Restore(Job):
    """One restore of one clinic from one of its backups."""

    class Phase(models.TextChoices):
        """What a running restore is doing (``progress_phase``), in order (the console's phase strip)."""

        VERIFYING = "verifying", pgettext_lazy("restore phase", "verifying")
        SAFETY_BACKUP = "safety backup", pgettext_lazy("restore phase", "safety backup")
        RESTORING = "restoring", pgettext_lazy("restore phase", "restoring")
        CHECKING = "checking", pgettext_lazy("restore phase", "checking")  # row counts against the manifest
        SWAPPING = "swapping", pgettext_lazy("restore phase", "switching to the restored data")  # pg: renames
        MIGRATING = "migrating", pgettext_lazy("restore phase", "migrating")

    class Outcome(models.TextChoices):
        UNKNOWN = "", _("Not yet known")
        UNCHANGED = "unchanged", _("Clinic unchanged")
        RESTORED = "restored", _("Data restored")
        UNDONE = "undone", _("Undone")

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.PROTECT, related_name="restores")
    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="restores", verbose_name=_("backup"))
    safety_backup = models.ForeignKey(
        Backup,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("safety backup (the way back)"),
    )
    # Written inside the restore's own transaction, so it commits (or not) with the data.
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices, blank=True)
    migrated = models.BooleanField(_("migrated forward"), default=False)
    # A selective restore ("Restore one patient…", backups/services/selective.py): the patient's
    # national id, and what its undo needs (backups/services/selective_undo.py): per table, the
    # rows added and the rows changed, each with its values as restored and, for a changed row,
    # the columns' previous values. Empty for a full restore.
    selective_patient = models.CharField(_("patient (national id)"), max_length=30, blank=True)
    before_images = models.JSONField(
        _("rows written"), default=dict, blank=True, encoder=ExactJSONEncoder, decoder=ExactJSONDecoder
    )
    undone_at = models.DateTimeField(_("undone at"), null=True, blank=True)
    undone_by = models.CharField(_("undone by"), max_length=254, blank=True)

    @property
    def is_selective(self) -> bool:
        return bool(self.selective_patient)

    class Meta:
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["clinic", "-requested_at"], name="restore_clinic_newest"),
            models.Index(fields=["id"], name="restore_notify_pending", condition=NOTIFY_PENDING),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], condition=Q(status__in=["pending", "running"]), name="one_active_restore_per_clinic"
            ),
        ]

    def __str__(self) -> str:
        return f"Restore #{self.pk} of {self.clinic.schema_name} from backup #{self.backup_id}"
