"""One entry of the audit trail: who did what to which backup, when and from where."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AuditEntry(models.Model):
    """Who did what to which backup, when and from where. Written by the services, in the action's transaction."""

    class Action(models.TextChoices):
        BACKUP_REQUESTED = "backup_requested", _("Backup requested")
        DOWNLOADED = "downloaded", _("Downloaded")
        RESTORE_REQUESTED = "restore_requested", _("Restore requested")
        RESTORE_UNDONE = "restore_undone", _("Restore undone")
        UPLOADED = "uploaded", _("Uploaded")
        UPLOAD_REFUSED = "upload_refused", _("Upload refused")
        PRUNED = "pruned", _("Pruned by retention")
        VERIFIED = "verified", _("Verified")
        DRILLED = "drilled", _("Restore drill")
        POLICY_CHANGED = "policy_changed", _("Policy changed")
        OFFBOARDED = "offboarded", _("Clinic offboarded")
        BROUGHT_BACK = "brought_back", _("Clinic brought back")
        KEY_ERASED = "key_erased", _("Backups erased (key destroyed)")
        CLONED = "cloned", _("Clinic cloned from a backup")
        HELD = "held", _("Backup put on legal hold")
        RELEASED = "released", _("Legal hold released")
        TOKEN_CREATED = "token_created", _("API token created")
        TOKEN_REVOKED = "token_revoked", _("API token revoked")
        WEBHOOK_ADDED = "webhook_added", _("Webhook endpoint added")
        WEBHOOK_REMOVED = "webhook_removed", _("Webhook endpoint removed")

    clinic = models.ForeignKey(
        "clinics.Clinic",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="audit_entries",
        verbose_name=_("clinic"),
    )
    at = models.DateTimeField(_("when"), default=timezone.now, db_index=True)
    actor = models.CharField(_("who"), max_length=254, blank=True, help_text=_("a user, or the system"))
    address = models.GenericIPAddressField(_("from address"), null=True, blank=True)
    action = models.CharField(_("action"), max_length=30, choices=Action.choices)
    backup_id_ref = models.BigIntegerField(_("backup"), null=True, blank=True)
    restore_id_ref = models.BigIntegerField(_("restore"), null=True, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit entries")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["clinic", "-at"], name="audit_clinic_newest")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action}"
