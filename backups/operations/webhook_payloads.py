"""What a webhook's body says: the envelope (event, id, time, clinic) and each job's public fields.

Never a secret, a storage path or a user's address; errors in English, by their stable code.
Used by ``backups.operations.webhooks``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone, translation

from backups.exceptions import render
from backups.models import Backup, Job, Restore


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def job_error(job: Job) -> dict[str, str] | None:
    """The job's error code and its message in English, or None."""
    if not (job.error_code or job.error):
        return None
    with translation.override("en"):
        return {"code": job.error_code or "error", "message": job.error_message()}


def drill_error(backup: Backup) -> dict[str, str] | None:
    """Why the backup's drill failed (code, English message), or None."""
    record = backup.drill_error or {}
    if not record:
        return None
    code = record.get("code") or "drill_failed"
    with translation.override("en"):
        return {"code": code, "message": render(record.get("message_id") or code, record.get("params"))}


def clinic_fields(clinic: Any) -> dict[str, Any] | None:
    """The clinic an event is about."""
    if clinic is None:
        return None
    return {"id": clinic.pk, "schema": clinic.schema_name, "name": clinic.name}


def backup_fields(backup: Backup) -> dict[str, Any]:
    """A backup's public fields."""
    return {
        "id": backup.pk,
        "status": backup.status,
        "kind": backup.kind,
        "format": backup.payload_format,
        "size": backup.size,
        "sha256": backup.sha256 or None,
        "requested_at": _iso(backup.requested_at),
        "finished_at": _iso(backup.finished_at),
        "error": job_error(backup),
    }


def restore_fields(restore: Restore) -> dict[str, Any]:
    """A restore's public fields."""
    return {
        "id": restore.pk,
        "status": restore.status,
        "outcome": restore.outcome or None,
        "backup_id": restore.backup_id,
        "safety_backup_id": restore.safety_backup_id,
        "requested_at": _iso(restore.requested_at),
        "finished_at": _iso(restore.finished_at),
        "error": job_error(restore),
    }


def drill_fields(backup: Backup) -> dict[str, Any]:
    """How a verification or restore drill of ``backup`` ended."""
    return {
        "status": "failed" if backup.drill_status == "failed" else "succeeded",
        "drilled_at": _iso(backup.drilled_at),
        "verified_at": _iso(backup.verified_at),
        "error": drill_error(backup) if backup.drill_status == "failed" else None,
    }


def envelope(event: str, clinic: Any, occurred_at: datetime | None, **data: Any) -> dict[str, Any]:
    """A body: event, its id, when, the clinic, then the event's own fields."""
    return {
        "event": event,
        "event_id": str(uuid.uuid4()),
        "occurred_at": _iso(occurred_at or timezone.now()),
        "clinic": clinic_fields(clinic),
        **data,
    }
