"""Health of the deployment for a load balancer or a monitor: ``GET /healthz`` on the platform's host.

Each check says ok or not and, when not, a short reason with no secret in it (no key, no
password, no connection string). The answer is 200 when every check passes, else 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from backups.operations.alerts import stale_clinics

logger = logging.getLogger(__name__)

WORKER_SEEN_MINUTES = 10  # the sweeper runs every 2 minutes, the dispatcher every minute


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    ok: bool
    detail: str = ""


def _database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return Check(True)


def _storage() -> Check:
    from backups.storage import check_storage

    check_storage()
    return Check(True)


def _archive_key() -> Check:
    from backups.keys.clinic import deployment_identities, keys_needing_rewrap, keys_unopenable

    deployment_identities()
    lost = keys_unopenable()
    if lost:
        return Check(False, f"{lost} clinic keys are wrapped with a deployment key that is not configured")
    stale = keys_needing_rewrap()
    if stale:
        return Check(True, f"{stale} clinic keys wrapped with an old deployment key: run rotate_clinic_keys")
    return Check(True)


def _pg_tools() -> Check:
    from backups.postgres import find_pg_tools

    return Check(True, f"pg_dump {find_pg_tools().version}")


def _worker(now: datetime) -> Check:
    from django_q.models import Task

    last = Task.objects.aggregate(last=Max("stopped"))["last"]
    if last is None:
        return Check(False, "no worker has run a task yet")
    minutes = int((now - last).total_seconds() // 60)
    return Check(minutes < WORKER_SEEN_MINUTES, f"last task finished {minutes} min ago")


def _run(check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a health check reports, it does not raise; the reason's code only
        # (an error's text may name paths, buckets or hosts: the logs have it, not this public page)
        logger.warning("Health check failed: %s", exc)
        return Check(False, str(getattr(type(exc), "code", "") or type(exc).__name__))


def health(now: datetime | None = None) -> tuple[bool, dict]:
    """(all ok, the JSON body) of the deployment's checks."""
    now = now or timezone.now()
    checks = {
        "database": _run(_database),
        "storage": _run(_storage),
        "archive_key": _run(_archive_key),
        "pg_tools": _run(_pg_tools),
        "worker": _run(lambda: _worker(now)),
    }
    stale = _run(lambda: Check(True, ",".join(clinic.clinic.schema_name for clinic in stale_clinics(now))))
    body = {
        "ok": all(check.ok for check in checks.values()),
        "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
        "stale_clinics": len(stale.detail.split(",")) if stale.ok and stale.detail else 0,
        "time": now.isoformat(),
    }
    return body["ok"], body
