"""The backup catalog. It lives in the public schema (``backups`` is a shared app).

A restore replaces a clinic's schema; a catalog kept inside it would be rolled back with
the data and forget the backups made after. Every row names its clinic, and users are
named by text because a public row cannot reference a user of a clinic's schema.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class JobStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


ACTIVE_STATUSES = [JobStatus.PENDING, JobStatus.RUNNING]


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

    @property
    def duration(self) -> timedelta | None:
        """Time from start to end of the job, once it has ended."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Backup(Job):
    """One backup of one clinic: a job while it runs, then an archive in storage."""

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        MANUAL = "manual", _("Manual")
        PRE_RESTORE = "pre_restore", _("Before a restore")
        UPLOADED = "uploaded", _("Uploaded")

    class Format(models.TextChoices):
        PG = "pg", _("PostgreSQL (pg_dump)")
        JSON = "json", _("Portable JSON")

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.PROTECT, related_name="backups")
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.MANUAL)
    payload_format = models.CharField(_("format"), max_length=10, choices=Format.choices, default=Format.PG)
    # Set when retention removes the stored object; the row stays for the record. Not a job state.
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)
    storage_name = models.CharField(_("stored as"), max_length=500, blank=True)
    size = models.BigIntegerField(_("size (bytes)"), null=True, blank=True)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    manifest = models.JSONField(_("manifest"), default=dict, blank=True)
    progress_bytes = models.BigIntegerField(_("bytes so far"), default=0)
    note = models.CharField(_("note"), max_length=200, blank=True, help_text=_("Why it was taken, for the record."))
    attempt = models.PositiveSmallIntegerField(_("attempt"), default=1)
    retry_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="retries", verbose_name=_("retry of")
    )

    class Meta:
        verbose_name = _("backup")
        verbose_name_plural = _("backups")
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["clinic", "-requested_at"], name="backup_clinic_newest"),
            models.Index(
                fields=["status", "-requested_at"],
                name="backup_failed_or_running",
                condition=Q(status__in=["failed", "running"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], condition=Q(status__in=["pending", "running"]), name="one_active_backup_per_clinic"
            ),
        ]
        permissions = [
            ("download_backup", _("Can download a backup")),
            ("restore_backup", _("Can restore a backup")),
            ("upload_backup", _("Can upload a backup file to restore")),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.clinic.schema_name} {self.get_kind_display()} ({self.get_status_display()})"


class Restore(Job):
    """One restore of one clinic from one of its backups."""

    class Outcome(models.TextChoices):
        UNKNOWN = "", _("Not yet known")
        UNCHANGED = "unchanged", _("Clinic unchanged")
        RESTORED = "restored", _("Data restored")

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

    class Meta:
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["clinic", "-requested_at"], name="restore_clinic_newest")]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], condition=Q(status__in=["pending", "running"]), name="one_active_restore_per_clinic"
            ),
        ]

    def __str__(self) -> str:
        return f"Restore #{self.pk} of {self.clinic.schema_name} from backup #{self.backup_id}"


class Download(models.Model):
    """One download of a backup: who took a copy of the clinic's data, and when."""

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.PROTECT, related_name="backup_downloads")
    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="downloads", verbose_name=_("backup"))
    downloaded_by = models.CharField(_("downloaded by"), max_length=254)
    downloaded_at = models.DateTimeField(_("downloaded at"), default=timezone.now)
    via = models.CharField(_("via"), max_length=20, help_text=_("stream (local storage) or link (pre-signed URL)"))

    class Meta:
        verbose_name = _("download")
        verbose_name_plural = _("downloads")
        ordering = ["-downloaded_at", "-id"]
        indexes = [models.Index(fields=["clinic", "-downloaded_at"], name="download_clinic_newest")]

    def __str__(self) -> str:
        return f"Backup #{self.backup_id} downloaded by {self.downloaded_by}"
