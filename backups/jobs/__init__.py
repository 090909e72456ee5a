"""What every job (backup, restore, clone, comparison) shares: its states, its runner, its locks.

* the state machine: ``transition``, ``claim``, ``succeed``, ``fail`` (``backups.jobs.states``);
* the runner: ``run`` and ``announce`` (``backups.jobs.runner``);
* advisory locks (``backups.jobs.locks``), and here the clinic's job lock: one backup or restore
  per clinic, enforced in PostgreSQL.

While a job runs, its worker holds a session-level advisory lock keyed on the clinic.
PostgreSQL releases it when the worker's connection ends, crash or SIGKILL included, so
a job marked running whose lock is free has lost its worker: that is how crashes are
told apart from long jobs, without clocks or heartbeats.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection

from backups.exceptions import ClinicBusy
from backups.jobs.locks import CLINIC_JOBS, advisory_lock, advisory_lock_held
from backups.jobs.runner import announce, run
from backups.jobs.states import (
    FINAL_STATUSES,
    claim,
    error_fields,
    fail,
    succeed,
    transition,
    worker_name,
)

__all__ = [
    "FINAL_STATUSES",
    "LOCK_NAMESPACE",
    "ClinicBusy",
    "announce",
    "claim",
    "clinic_job_lock",
    "clinic_lock",
    "clinic_lock_is_held",
    "error_fields",
    "fail",
    "reset_schema",
    "run",
    "succeed",
    "transition",
    "worker_name",
]

LOCK_NAMESPACE = CLINIC_JOBS  # the clinic's job lock is (LOCK_NAMESPACE, clinic id)
CLINIC_LOCK_WAIT = 5.0  # seconds a job waits for the clinic's lock before it is refused as busy


def clinic_lock(clinic_id: int, *, wait_seconds: float = CLINIC_LOCK_WAIT) -> contextlib.AbstractContextManager[bool]:
    """The clinic's job lock for the block; yields whether it was obtained within ``wait_seconds``."""
    return advisory_lock(CLINIC_JOBS, clinic_id, wait_seconds=wait_seconds)


@contextlib.contextmanager
def clinic_job_lock(clinic_id: int, *, wait_seconds: float = CLINIC_LOCK_WAIT) -> Iterator[None]:
    """Hold the clinic's job lock for the duration of the block, or raise ClinicBusy."""
    with clinic_lock(clinic_id, wait_seconds=wait_seconds) as held:
        if not held:
            raise ClinicBusy("clinic_busy", "clinic_locked")
        yield


def clinic_lock_is_held(clinic_id: int) -> bool:
    """True while some worker holds the clinic's job lock."""
    return advisory_lock_held(CLINIC_JOBS, clinic_id)


def reset_schema(sender=None, **kwargs) -> None:
    """Before every task (django-q2's ``pre_execute``): back to the public schema.

    A task that switched schema without switching back would otherwise leak that schema
    into the next task run by the same worker.
    """
    connection.set_schema_to_public()
