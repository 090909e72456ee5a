"""django-q2 entry points. Thin: each loads by id and calls one service.

Tasks take ids, never objects, and start from the public schema (see ``reset_schema``).
"""

from __future__ import annotations

from backups import services
from backups.jobs import reset_schema


def run_backup(backup_id: int) -> str:
    """Run one requested backup; returns its final status."""
    reset_schema()
    return services.backup_run(backup_id=backup_id).status


def sweep_stale_jobs() -> int:
    """Fail backups whose worker died and queue their retries; returns how many were retried."""
    reset_schema()
    return len(services.backup_sweep_stale())
