"""The job state machine every job row (backup, restore, clone, comparison) goes through.

pending -> running (``claim``) -> succeeded (``succeed``) or failed (``fail``); every change
goes through ``transition``, so a job never leaves a final state.
"""

from __future__ import annotations

import os
import socket

from django.db import models
from django.utils import timezone, translation

from backups.exceptions import RespaldoError

FINAL_STATUSES = ("succeeded", "failed")  # a job in one of these never changes state again


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
