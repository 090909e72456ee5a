"""The backup catalog. It lives in the public schema (``backups`` is a shared app).

A restore replaces a clinic's schema; a catalog kept inside it would be rolled back with
the data and forget the backups made after. Every row names its clinic, and users are
named by text because a public row cannot reference a user of a clinic's schema.

One module per family of rows; every model is importable from ``backups.models`` (Django
finds them here, under the same app label: no migration came of the split).
"""

from backups.models.audit import AuditEntry
from backups.models.backup import Backup, Download
from backups.models.clone import CloneJob
from backups.models.compare import RestoreComparison
from backups.models.jobs import ACTIVE_STATUSES, BACKUP_STATUS_LABELS, Job, JobStatus
from backups.models.keys import ClinicKey
from backups.models.policy import BackupPolicy
from backups.models.restore import Restore
from backups.models.storage_totals import ClinicStorage
from backups.models.tokens import ApiToken, ApiUsage
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ACTIVE_STATUSES",
    "BACKUP_STATUS_LABELS",
    "ApiToken",
    "ApiUsage",
    "AuditEntry",
    "Backup",
    "BackupPolicy",
    "ClinicKey",
    "ClinicStorage",
    "CloneJob",
    "Download",
    "Job",
    "JobStatus",
    "Restore",
    "RestoreComparison",
    "WebhookDelivery",
    "WebhookEndpoint",
]
