"""What a person or a command asks for: back up, restore, upload a file to restore.

Plain functions that take ids and return catalog rows (HackSoft's services; Zulip's
``actions/``); the admin, the commands and the django-q2 tasks call them and nothing else.
One module per sub-domain: ``backup``, ``restore``, ``upload``. The names below are the
public API, re-exported so callers write ``services.backup_request(...)``.
"""

from backups.manifest import MANIFEST_FORMAT_VERSION, manifest_summary
from backups.services.backup import (
    ARCHIVE_EXTENSION,
    active_job,
    backup_fail,
    backup_recover_crashed,
    backup_request,
    backup_run,
    backup_sweep_stale,
    check_not_busy,
    clinic_get,
)
from backups.services.restore import (
    restore_in_progress,
    restore_recover_crashed,
    restore_request,
    restore_run,
    restore_sweep_stale,
)
from backups.services.upload import backup_from_upload, upload_accept

__all__ = [
    "ARCHIVE_EXTENSION",
    "MANIFEST_FORMAT_VERSION",
    "active_job",
    "backup_fail",
    "backup_from_upload",
    "backup_recover_crashed",
    "backup_request",
    "backup_run",
    "backup_sweep_stale",
    "check_not_busy",
    "clinic_get",
    "manifest_summary",
    "restore_in_progress",
    "restore_recover_crashed",
    "restore_request",
    "restore_run",
    "restore_sweep_stale",
    "upload_accept",
]
