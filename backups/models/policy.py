"""A clinic's backup policy: schedule, format, retention, notifications.

The row without a clinic holds the platform's defaults for new clinics.
"""

from __future__ import annotations

from datetime import time

from django.db import models
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from backups.models.backup import Backup


class BackupPolicy(models.Model):
    """How one clinic is backed up by itself: when, in which format, what is kept, who hears.

    One per clinic, created with it from the platform's defaults (the row without a clinic).
    Times are in the clinic's own time zone (``Clinic.time_zone``).
    """

    clinic = models.OneToOneField(
        "clinics.Clinic", on_delete=models.CASCADE, null=True, blank=True, related_name="backup_policy"
    )
    enabled = models.BooleanField(_("daily backups on"), default=True)
    run_at = models.TimeField(_("time of day"), default=time(2, 0), help_text=_("In the clinic's time zone."))
    payload_format = models.CharField(
        _("format"), max_length=10, choices=Backup.Format.choices, default=Backup.Format.PG
    )
    keep_daily = models.PositiveSmallIntegerField(_("daily backups kept"), default=7)
    keep_weekly = models.PositiveSmallIntegerField(_("weekly backups kept"), default=4)
    keep_monthly = models.PositiveSmallIntegerField(_("monthly backups kept"), default=12)
    keep_min_days = models.PositiveSmallIntegerField(_("keep everything younger than (days)"), default=30)
    keep_pre_restore_days = models.PositiveSmallIntegerField(_("safety backups kept at least (days)"), default=7)
    keep_failed_days = models.PositiveSmallIntegerField(_("failed rows cleaned after (days)"), default=30)
    notify_emails = models.TextField(
        _("notification addresses"), blank=True, help_text=_("One or more addresses, separated by commas.")
    )
    notify_daily_success = models.BooleanField(
        _("email when a daily backup succeeds"),
        default=True,
        help_text=_("Failures are always emailed. A manual backup's success goes to the person who asked for it."),
    )
    stale_after_hours = models.PositiveSmallIntegerField(_("alert when no successful backup for (hours)"), default=26)
    stale_alert_sent_at = models.DateTimeField(_("missed-backup alert sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("backup policy")
        verbose_name_plural = _("backup policies")
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], name="one_policy_per_clinic", nulls_distinct=False
            ),  # and exactly one row of defaults (clinic NULL)
        ]

    def __str__(self) -> str:
        if self.clinic_id:
            return gettext("Backup policy of %(clinic)s") % {"clinic": self.clinic.name}
        return gettext("Defaults for new clinics")
