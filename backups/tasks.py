"""django-q2 entry points. Thin: each loads by id and calls one service.

Tasks take ids, never objects, and start from the public schema (see ``reset_schema``). Their
dotted names (``backups.tasks.run_backup``...) live in queued tasks and in django-q2's schedule
rows (migrations 0002, 0008): they never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.utils import timezone

from backups.jobs import reset_schema
from backups.models import Backup
from backups.operations import alerts, drills, notify, retention, schedule, webhooks
from backups.services.backup import backup_rehand_lost, backup_run, backup_sweep_stale
from backups.services.clone import clone_run, clone_sweep_stale
from backups.services.differences import comparison_sweep_stale, run_comparison
from backups.services.offboard import erase_offboarded
from backups.services.restore import restore_run, restore_sweep_stale

logger = logging.getLogger(__name__)


def run_backup(backup_id: int) -> str:
    """Run one requested backup (its end is announced by the service); returns its final status.

    A scheduled backup's end frees a place in the night: the next clinics due are handed out
    at once (``schedule.dispatch``), not at the dispatcher's next minute.
    """
    reset_schema()
    backup = backup_run(backup_id=backup_id)
    if backup.kind == Backup.Kind.SCHEDULED:
        _step("schedule", lambda: schedule.dispatch())
    return backup.status


def run_restore(restore_id: int) -> str:
    """Run one requested restore (never twice; its end is announced by the service); returns its final status."""
    reset_schema()
    return restore_run(restore_id=restore_id).status


def compare_backup(comparison_id: int) -> str:
    """Compare a backup with its clinic now (what a restore would remove, bring back, change)."""
    reset_schema()
    comparison = run_comparison(comparison_id)
    return comparison.status if comparison is not None else "gone"


def run_drill(backup_id: int, verify_only: bool = False) -> str:
    """Drill (or only verify) one backup; returns its drill status."""
    reset_schema()
    backup = drills.verify(backup_id) if verify_only else drills.drill(backup_id)
    return backup.drill_status or "verified"


def clone(clone_id: int) -> str:
    """Run one requested clone (a new clinic from a backup, never twice); returns its final status."""
    reset_schema()
    return clone_run(clone_id=clone_id).status


def deliver_webhook(delivery_id: int) -> str:
    """Attempt one webhook delivery (if still pending and not held by another worker); returns its status."""
    reset_schema()
    delivery = webhooks.deliver(delivery_id)
    return delivery.status if delivery is not None else "skipped"


def sweep_stale_jobs() -> int:
    """Settle jobs whose worker died: backups fail and are retried, restores, clones and comparisons are
    settled; backups the broker lost before any worker started them are handed again.

    Returns how many jobs were found dead or lost.
    """
    reset_schema()
    dead = backup_sweep_stale() + restore_sweep_stale() + clone_sweep_stale()
    return len(dead) + len(comparison_sweep_stale()) + len(backup_rehand_lost())


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
    """Every minute: request due scheduled backups, queue due drills, prune a sixtieth of the
    clinics (each clinic hourly), erase offboarded clinics' expired data (hourly), then email
    retries of refused notifications, webhook deliveries due (retries with backoff), missed-backup
    alerts, the platform's daily summary.

    Returns how many steps failed (each is logged; one failing step never stops the others).
    """
    now = timezone.now()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("schedule", lambda: schedule.dispatch(now)),
        ("drills", lambda: drills.dispatch_drills(now)),
        ("retention", lambda: retention.prune_all(now, part=(now.minute, 60))),  # each clinic once an hour
        ("notify retries", lambda: notify.notify_retry_pending(now)),
        ("webhooks", lambda: webhooks.deliver_due(now)),
        ("missed-backup alerts", lambda: alerts.check_stale(now)),
        ("daily summary", lambda: alerts.daily_summary(now)),
    ]
    if now.minute == 0:
        steps.insert(3, ("offboarded clinics", lambda: erase_offboarded(now)))
    return sum(not _step(name, func) for name, func in steps)
