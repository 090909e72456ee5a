"""Backups and restores as the API's JSON objects (the shapes ``openapi`` describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from backups.models import ACTIVE_STATUSES, Backup, Job, JobStatus, Restore
from backups.services.preview import RestorePreview
from backups.web import labels


def when(value: datetime | None) -> str | None:
    """An aware datetime in ISO 8601, or None."""
    return value.isoformat() if value else None


def absolute(request: HttpRequest, name: str, *args: Any) -> str:
    """The absolute URL of the API route ``name`` on this clinic's host."""
    return request.build_absolute_uri(reverse(f"api:{name}", args=args))


def job_fields(job: Job) -> dict[str, Any]:
    """What backups and restores share: state, phase, who and when, how long, why it failed."""
    duration = job.duration
    failed = job.status == JobStatus.FAILED
    return {
        "id": job.pk,
        "status": job.status,
        "status_label": labels.status_label(job),
        "finished": job.status not in ACTIVE_STATUSES,
        "phase": job.progress_phase,
        "phase_label": labels.phase_label(job) if job.progress_phase else "",
        "requested_by": job.requested_by,
        "requested_at": when(job.requested_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
        "duration_seconds": round(duration.total_seconds(), 3) if duration else None,
        "error": {"code": job.error_code or "error", "message": job.error_message()} if failed else None,
    }


def is_stored(backup: Backup) -> bool:
    """Whether the backup has a stored file (it can be downloaded and restored)."""
    return backup.has_stored_file


def backup_json(request: HttpRequest, backup: Backup, *, detail: bool = False) -> dict[str, Any]:
    """One backup; ``detail`` adds the per-table row counts and the files of its manifest."""
    stored = is_stored(backup)
    body = {
        **job_fields(backup),
        "url": absolute(request, "backup", backup.pk),
        "kind": backup.kind,
        "format": backup.payload_format,
        "note": backup.note,
        "bytes": backup.progress_bytes,
        "size": backup.size,
        "sha256": backup.sha256 or None,
        "stored": stored,
        "expired_at": when(backup.expired_at),
        "verified_at": when(backup.verified_at),
        "drill": {"status": backup.drill_status, "at": when(backup.drilled_at)} if backup.drill_status else None,
        "legal_hold": (
            {"since": when(backup.held_at), "by": backup.held_by, "reason": backup.hold_reason}
            if backup.held_at
            else None
        ),
        "links": {
            "download": absolute(request, "backup_download", backup.pk) if stored else None,
            "link": absolute(request, "backup_link", backup.pk) if stored else None,
            "restore": absolute(request, "backup_restore", backup.pk) if stored else None,
        },
    }
    if detail:
        manifest = backup.manifest or {}
        body["tables"] = dict(sorted((manifest.get("tables") or {}).items()))
        body["media_files"] = len(manifest.get("media") or [])
        body["media_missing"] = len(manifest.get("media_missing") or [])
    return body


def restore_json(request: HttpRequest, restore: Restore) -> dict[str, Any]:
    """One restore, with its source backup and the safety backup that is its way back."""
    return {
        **job_fields(restore),
        "url": absolute(request, "restore", restore.pk),
        "backup": restore.backup_id,
        "backup_url": absolute(request, "backup", restore.backup_id),
        "safety_backup": restore.safety_backup_id,
        "outcome": restore.outcome or None,
        "migrated": restore.migrated,
        "note": restore.error_message() if restore.status == JobStatus.SUCCEEDED and restore.error_code else "",
    }


def preview_json(preview: RestorePreview, *, schema: str) -> dict[str, Any]:
    """What restoring would change, table by table, and what the confirmation must carry."""

    def changes(items):
        return [
            {
                "table": c.table,
                "label": c.label,
                "now": c.now,
                "in_backup": c.in_backup,
                "emptied": c.emptied,
                "removed": c.removed,
                "brought_back": c.brought_back,
                "changed": c.changed,
            }
            for c in items
        ]

    return {
        "backup": preview.backup.pk,
        "confirm": schema,
        "needs_accept_emptied": bool(preview.emptied),
        "records": changes(preview.records),
        "others": changes(preview.others),
        "differences": {
            "compared_at": when(preview.compared_at),
            "totals": preview.totals,
            "patients": preview.patients if preview.comparison else None,
            "comparing": preview.pending is not None,
        },
    }
