"""What every job (backup or restore) shares: one job per clinic, enforced in PostgreSQL.

While a job runs, its worker holds a session-level advisory lock keyed on the clinic.
PostgreSQL releases it when the worker's connection ends, crash or SIGKILL included, so
a job marked running whose lock is free has lost its worker: that is how crashes are
told apart from long jobs, without clocks or heartbeats.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

from django.db import connection, models
from django.utils import timezone, translation

from backups.exceptions import ClinicBusy, RespaldoError

LOCK_NAMESPACE = 0x5245  # "RE": keeps our advisory locks apart from anyone else's


def _try_lock(clinic_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, clinic_id])
        return bool(cursor.fetchone()[0])


def _unlock(clinic_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, clinic_id])


@contextlib.contextmanager
def clinic_job_lock(clinic_id: int, *, wait_seconds: float = 5.0) -> Iterator[None]:
    """Hold the clinic's job lock for the duration of the block, or raise ClinicBusy."""
    deadline = time.monotonic() + wait_seconds
    while not _try_lock(clinic_id):
        if time.monotonic() >= deadline:
            raise ClinicBusy("clinic_busy", "clinic_locked")
        time.sleep(0.2)
    try:
        yield
    finally:
        # A lost connection has already released the lock along with itself.
        with contextlib.suppress(Exception):
            _unlock(clinic_id)


def clinic_lock_is_held(clinic_id: int) -> bool:
    """True while some worker holds the clinic's job lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 2 AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()))",
            [LOCK_NAMESPACE, clinic_id],
        )
        return bool(cursor.fetchone()[0])


def reset_schema(sender=None, **kwargs) -> None:
    """Before every task (django-q2's ``pre_execute``): back to the public schema.

    A task that switched schema without switching back would otherwise leak that schema
    into the next task run by the same worker.
    """
    connection.set_schema_to_public()


def worker_name() -> str:
    """host:pid of this process, recorded on the jobs it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def transition(model: type[models.Model], pk: int, *, expected: list[str], **changes) -> bool:
    """Apply ``changes`` to a job if its status is one of ``expected``; return whether it did.

    Every state change of a job goes through here, so a job never leaves a final state.
    """
    return bool(model.objects.filter(pk=pk, status__in=expected).update(**changes))


def claim(model: type[models.Model], pk: int, *, phase: str) -> bool:
    """Move a job from pending to running, stamped with the time and this worker.

    Returns False when the row was no longer pending (someone else took or ended it).
    """
    return transition(
        model,
        pk,
        expected=["pending"],
        status="running",
        started_at=timezone.now(),
        progress_phase=phase,
        worker=worker_name(),
    )


def succeed(model: type[models.Model], pk: int, *, note: RespaldoError | None = None, **changes) -> bool:
    """Move a running job to succeeded (with any other ``changes``); False if it was not running.

    ``note`` says how it ended when that needs saying (e.g. completed by crash recovery).
    """
    return transition(
        model,
        pk,
        expected=["running"],
        status="succeeded",
        succeeded_at=timezone.now(),
        progress_phase="",
        **(error_fields(note) if note is not None else {}),
        **changes,
    )


def fail(model: type[models.Model], pk: int, reason: RespaldoError | str, **changes) -> bool:
    """Move a pending or running job to failed, keeping why (a coded error, or a plain text)."""
    return transition(
        model,
        pk,
        expected=["pending", "running"],
        status="failed",
        failed_at=timezone.now(),
        progress_phase="",
        **error_fields(reason),
        **changes,
    )


def error_fields(reason: RespaldoError | str) -> dict:
    """The job columns that keep ``reason``: code and parameters, and the English text for logs."""
    if isinstance(reason, RespaldoError):
        with translation.override("en"):
            text = str(reason)
        return {"error": text[:10_000], "error_code": reason.code, "error_params": reason.record}
    return {"error": str(reason)[:10_000], "error_code": "", "error_params": {}}
