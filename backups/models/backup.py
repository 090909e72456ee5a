"""A backup of one clinic (``Backup``) and each download of its file (``Download``)."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from backups.models.jobs import BACKUP_STATUS_LABELS, Job, JobStatus

# A backup's drill (``drill_status``): how the last verification or restore drill ended. A clinic
# whose newest backup was not drilled within DRILL_EVERY is due one (the platform shows it overdue).
DRILL_SUCCEEDED, DRILL_FAILED = "succeeded", "failed"
DRILL_EVERY = timedelta(days=7)
# A finished job whose email the mail server refused (``notify.notify_retry_pending`` tries it again).
NOTIFY_PENDING = Q(notified_at__isnull=True) & ~Q(notify_error="")


class BackupQuerySet(models.QuerySet):
    """The catalog's words for which backups have a file (``Backup.objects.stored()``...)."""

    def in_storage(self) -> BackupQuerySet:
        """Backups whose archive is still in storage, whatever their status: what the storage bill is made of."""
        return self.filter(expired_at__isnull=True).exclude(storage_name="")

    def stored(self) -> BackupQuerySet:
        """Backups that succeeded and whose file retention has not removed: they can be downloaded and
        restored (the queryset's :attr:`Backup.has_stored_file`)."""
        return self.in_storage().filter(status=JobStatus.SUCCEEDED)


class Backup(Job):
    """One backup of one clinic: a job while it runs, then an archive in storage."""

    objects = BackupQuerySet.as_manager()

    class Phase(models.TextChoices):
        """What a running backup is doing (``progress_phase``), in order."""

        STARTING = "starting", _("starting")
        SNAPSHOT = "snapshot", _("taking a consistent snapshot")
        DUMPING = "dumping", _("dumping, compressing and encrypting")
        STORING = "storing", _("storing")

    class Kind(models.TextChoices):
        # "a backup" is masculine in Spanish, "an appointment" or "an upload" are not: their own context
        SCHEDULED = "scheduled", pgettext_lazy("backup kind", "Scheduled")
        MANUAL = "manual", _("Manual")
        PRE_RESTORE = "pre_restore", _("Before a restore")
        UPLOADED = "uploaded", pgettext_lazy("backup kind", "Uploaded")

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
    # The clinic's local day a scheduled backup is for: one per clinic and day, the database decides.
    scheduled_for = models.DateField(_("scheduled for"), null=True, blank=True)
    # When it was last handed to the task broker: a pending backup handed long ago was lost by the
    # broker (django-q2's Redis broker drops a dead cluster's tasks) and is handed again.
    handed_at = models.DateTimeField(_("handed to the workers at"), null=True, blank=True, editable=False)
    # Verification (checksum + authentication re-read) and restore drills (backups/operations/drills.py).
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    drilled_at = models.DateTimeField(_("drilled at"), null=True, blank=True)
    drill_requested_at = models.DateTimeField(_("drill requested at"), null=True, blank=True)
    drill_status = models.CharField(
        _("drill"), max_length=20, blank=True, choices=[("succeeded", _("Succeeded")), ("failed", _("Failed"))]
    )
    drill_error = models.JSONField(_("drill error"), default=dict, blank=True)
    # Legal hold (backups/services/legal_hold.py): retention and erasure never remove a held backup.
    held_at = models.DateTimeField(_("on legal hold since"), null=True, blank=True)
    held_by = models.CharField(_("held by"), max_length=254, blank=True)
    hold_reason = models.CharField(_("reason for the hold"), max_length=200, blank=True)
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
            # the platform's pages (backups/selectors/platform.py, selectors/trends.py): the newest successes
            # of all clinics, each clinic's stored bytes, its newest drill
            models.Index(fields=["-succeeded_at"], name="backup_succeeded_newest", condition=Q(status="succeeded")),
            models.Index(
                fields=["clinic"],
                include=["size"],
                name="backup_clinic_stored",
                condition=Q(expired_at__isnull=True) & ~Q(storage_name=""),
            ),
            models.Index(
                fields=["clinic", "-drilled_at"], name="backup_clinic_drilled", condition=Q(drilled_at__isnull=False)
            ),
            models.Index(
                fields=["clinic", "-verified_at"], name="backup_clinic_verified", condition=Q(verified_at__isnull=False)
            ),
            models.Index(fields=["clinic"], name="backup_clinic_held", condition=Q(held_at__isnull=False)),
            models.Index(
                fields=["status", "-requested_at"],
                name="backup_failed_or_running",
                condition=Q(status__in=["failed", "running"]),
            ),
            # the dispatcher's minute (backups/operations: drills, notify): the few rows it looks for
            models.Index(
                fields=["drill_requested_at"],
                name="backup_drill_requested",
                condition=Q(drill_requested_at__isnull=False),
            ),
            models.Index(fields=["id"], name="backup_notify_pending", condition=NOTIFY_PENDING),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["clinic"], condition=Q(status__in=["pending", "running"]), name="one_active_backup_per_clinic"
            ),
            models.UniqueConstraint(
                fields=["clinic", "scheduled_for"],
                condition=Q(retry_of__isnull=True),
                name="one_scheduled_backup_per_clinic_day",
            ),
        ]
        permissions = [
            ("download_backup", _("Can download a backup")),
            ("restore_backup", _("Can restore a backup")),
            ("upload_backup", _("Can upload a backup file to restore")),
            ("hold_backup", _("Can keep a backup on legal hold")),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.clinic.schema_name} {self.get_kind_display()} ({self.get_status_display()})"

    def get_status_display(self) -> str:
        """The status as said of a backup (Spanish: "Completado", a restore is "Completada")."""
        return str(BACKUP_STATUS_LABELS.get(self.status, self.status))

    @property
    def has_stored_file(self) -> bool:
        """It succeeded and retention has not removed its file: it can be downloaded and restored."""
        return self.status == JobStatus.SUCCEEDED and bool(self.storage_name) and self.expired_at is None


class Download(models.Model):
    """One download of a backup: who took a copy of the clinic's data, and when."""

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.PROTECT, related_name="backup_downloads")
    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="downloads", verbose_name=_("backup"))
    downloaded_by = models.CharField(_("downloaded by"), max_length=254)
    downloaded_at = models.DateTimeField(_("downloaded at"), default=timezone.now)
    via = models.CharField(_("via"), max_length=20, help_text=_("stream (local storage) or link (pre-signed URL)"))
    # a link of our own (local storage) works once: when it was used
    link_used_at = models.DateTimeField(_("link used"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("download")
        verbose_name_plural = _("downloads")
        ordering = ["-downloaded_at", "-id"]
        indexes = [models.Index(fields=["clinic", "-downloaded_at"], name="download_clinic_newest")]

    def __str__(self) -> str:
        return f"Backup #{self.backup_id} downloaded by {self.downloaded_by}"
