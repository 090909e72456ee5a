"""django-q2 entry points. Thin: each loads by id and calls one service.

Tasks take ids, never objects, and start from the public schema (see ``reset_schema``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.utils import timezone

from backups import services
from backups.jobs import reset_schema

logger = logging.getLogger(__name__)


def run_backup(backup_id: int) -> str:
    """Run one requested backup (its end is announced by the service); returns its final status."""
    reset_schema()
    return services.backup_run(backup_id=backup_id).status


def run_restore(restore_id: int) -> str:
    """Run one requested restore (never twice; its end is announced by the service); returns its final status."""
    from backups.services import restore as restores

    reset_schema()
    return restores.restore_run(restore_id=restore_id).status


def compare_backup(comparison_id: int) -> str:
    """Compare a backup with its clinic now (what a restore would remove, bring back, change)."""
    from backups.services.differences import run_comparison

    reset_schema()
    comparison = run_comparison(comparison_id)
    return comparison.status if comparison is not None else "gone"


def run_drill(backup_id: int, verify_only: bool = False) -> str:
    """Drill (or only verify) one backup; returns its drill status."""
    from backups.operations import drills

    reset_schema()
    backup = drills.verify(backup_id) if verify_only else drills.drill(backup_id)
    return backup.drill_status or "verified"


def clone(clone_id: int) -> str:
    """Run one requested clone (a new clinic from a backup, never twice); returns its final status."""
    from backups.services import clone as clones

    reset_schema()
    return clones.clone_run(clone_id=clone_id).status


def deliver_webhook(delivery_id: int) -> str:
    """Attempt one webhook delivery (if still pending and not held by another worker); returns its status."""
    from backups.operations import webhooks

    reset_schema()
    delivery = webhooks.deliver(delivery_id)
    return delivery.status if delivery is not None else "skipped"


def sweep_stale_jobs() -> int:
    """Settle jobs whose worker died: backups fail and are retried, restores, clones and comparisons are settled.

    Returns how many jobs were found dead.
    """
    from backups.services import clone as clones
    from backups.services import differences
    from backups.services import restore as restores

    reset_schema()
    dead = services.backup_sweep_stale() + restores.restore_sweep_stale() + clones.clone_sweep_stale()
    return len(dead) + len(differences.comparison_sweep_stale())


# --- The dispatcher: ONE django-q2 schedule runs this every minute (migration 0008) ------


def _step(name: str, func: Callable[[], object]) -> bool:
    """Run one step; log (never raise) its failure, so that the other steps still run."""
    try:
        reset_schema()
        func()
        return True
    except Exception:
        logger.exception("Dispatcher step %s failed", name)
        return False
    finally:
        reset_schema()


def dispatch() -> int:
    """Every minute: request due scheduled backups, queue due drills, prune (hourly), then email
    retries of refused notifications, webhook deliveries due (retries with backoff), missed-backup
    alerts, the platform's daily summary.

    Returns how many steps failed (each is logged; one failing step never stops the others).
    """
    from backups.operations import alerts, drills, notify, retention, schedule, webhooks
    from backups.services import offboard

    now = timezone.now()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("schedule", lambda: schedule.dispatch(now)),
        ("drills", lambda: drills.dispatch_drills(now)),
        ("notify retries", lambda: notify.notify_retry_pending(now)),
        ("webhooks", lambda: webhooks.deliver_due(now)),
        ("missed-backup alerts", lambda: alerts.check_stale(now)),
        ("daily summary", lambda: alerts.daily_summary(now)),
    ]
    if now.minute == 0:
        steps.insert(2, ("retention", lambda: retention.prune_all(now)))
        steps.insert(3, ("offboarded clinics", lambda: offboard.erase_offboarded(now)))
    return sum(not _step(name, func) for name, func in steps)
