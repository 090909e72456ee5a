"""The backup catalog. It lives in the public schema (``backups`` is a shared app).

A restore replaces a clinic's schema; a catalog kept inside it would be rolled back with
the data and forget the backups made after. Every row names its clinic, and users are
named by text because a public row cannot reference a user of a clinic's schema.
"""

from __future__ import annotations

from datetime import time, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from backups.exact_json import ExactJSONDecoder, ExactJSONEncoder


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

    @property
    def duration(self) -> timedelta | None:
        """Time from start to end of the job, once it has ended."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Backup(Job):
    """One backup of one clinic: a job while it runs, then an archive in storage."""

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
    # Verification (checksum + authentication re-read) and restore drills (backups/operations/drills.py).
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    drilled_at = models.DateTimeField(_("drilled at"), null=True, blank=True)
    drill_requested_at = models.DateTimeField(_("drill requested at"), null=True, blank=True)
    drill_status = models.CharField(
        _("drill"), max_length=20, blank=True, choices=[("succeeded", _("Succeeded")), ("failed", _("Failed"))]
    )
    drill_error = models.JSONField(_("drill error"), default=dict, blank=True)
    # Legal hold (backups/operations/legal_hold.py): retention and erasure never remove a held backup.
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
            # the platform's pages (backups/operations/overview.py, trends.py): the newest successes
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


class Restore(Job):
    """One restore of one clinic from one of its backups."""

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
    # a link of our own (local storage) works once: when it was used
    link_used_at = models.DateTimeField(_("link used"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("download")
        verbose_name_plural = _("downloads")
        ordering = ["-downloaded_at", "-id"]
        indexes = [models.Index(fields=["clinic", "-downloaded_at"], name="download_clinic_newest")]

    def __str__(self) -> str:
        return f"Backup #{self.backup_id} downloaded by {self.downloaded_by}"


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


from backups.models_api import ApiToken, ApiUsage  # noqa: E402, F401 - in its own module
from backups.models_clone import CloneJob  # noqa: E402, F401 - the model lives in its own module
from backups.models_compare import RestoreComparison  # noqa: E402, F401 - in its own module
from backups.models_webhooks import WebhookDelivery, WebhookEndpoint  # noqa: E402, F401 - in their own module
