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


def run_restore(restore_id: int) -> str:
    """Run one requested restore (never twice); returns its final status."""
    from backups.services import restore as restores

    reset_schema()
    return restores.restore_run(restore_id=restore_id).status


def sweep_stale_jobs() -> int:
    """Settle jobs whose worker died: backups fail and are retried, restores are settled.

    Returns how many jobs were found dead.
    """
    from backups.services import restore as restores

    reset_schema()
    return len(services.backup_sweep_stale()) + len(restores.restore_sweep_stale())
