"""What every job row shares: its status (with a backup's own wording of it) and the abstract ``Job``."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class JobStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


ACTIVE_STATUSES = [JobStatus.PENDING, JobStatus.RUNNING]
# The statuses as said of a backup: Spanish agrees them with "respaldo" (masculine), the jobs'
# own labels with "restauración" or "copia" (feminine).
BACKUP_STATUS_LABELS = {
    JobStatus.PENDING: pgettext_lazy("backup status", "Pending"),
    JobStatus.RUNNING: pgettext_lazy("backup status", "Running"),
    JobStatus.SUCCEEDED: pgettext_lazy("backup status", "Succeeded"),
    JobStatus.FAILED: pgettext_lazy("backup status", "Failed"),
}


class Job(models.Model):
    """What every job row has: who asked, its state with a timestamp per state, progress."""

    Status = JobStatus

    status = models.CharField(_("status"), max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    requested_by = models.CharField(_("requested by"), max_length=254, blank=True)
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    succeeded_at = models.DateTimeField(_("succeeded at"), null=True, blank=True)
    failed_at = models.DateTimeField(_("failed at"), null=True, blank=True)
    progress_phase = models.CharField(_("phase"), max_length=40, blank=True)
    # Why it failed (or a note on how it ended): a stable code and the message's parameters,
    # rendered in the reader's language by error_message(); ``error`` is the English text, for logs.
    error = models.TextField(_("error"), blank=True)
    error_code = models.CharField(_("error code"), max_length=60, blank=True)
    error_params = models.JSONField(_("error parameters"), default=dict, blank=True)
    worker = models.CharField(_("worker"), max_length=100, blank=True, help_text=_("host:pid that ran the job"))
    # Email about the job's end (backups/operations/notify.py): when it went out, or why it did not.
    notified_at = models.DateTimeField(_("notified at"), null=True, blank=True)
    notify_error = models.TextField(_("notification error"), blank=True)

    class Meta:
        abstract = True

    def error_message(self) -> str:
        """Why the job failed (or how it ended), in the active language."""
        if self.error_code:
            from backups.exceptions import render

            return render(self.error_params.get("message_id") or self.error_code, self.error_params.get("params"))
        return self.error

    @property
    def finished_at(self):
        """When the job ended, whichever way."""
        return self.succeeded_at or self.failed_at

    def phase_label(self) -> str:
        """The current phase in words, translated: the label of the job type's ``Phase`` choice
        (the key itself for a phase its type does not declare)."""
        phases = getattr(type(self), "Phase", None)
        if phases is None or self.progress_phase not in phases.values:
            return self.progress_phase
        return str(phases(self.progress_phase).label)

    @property
    def duration(self) -> timedelta | None:
        """Time from start to end of the job, once it has ended."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
