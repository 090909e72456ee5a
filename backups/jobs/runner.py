"""The one way a job row is run: lock, claim, execute, settle, and announce the end after commit.

Each service's ``*_run`` checks what it alone knows (a row found running after a crash, a row
already final) and hands a pending row to :func:`run` with the work itself (``execute``) and
what a failure must undo or record (``on_failure``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

from django.db import models, transaction
from django.dispatch import Signal

from backups.exceptions import RespaldoError, as_respaldo_error, failure_reason
from backups.jobs.states import FINAL_STATUSES, claim, fail

logger = logging.getLogger(__name__)

Job = TypeVar("Job", bound=models.Model)


def run(
    model: type[Job],
    pk: int,
    *,
    lock: AbstractContextManager[bool],
    phase: str,
    execute: Callable[[], object],
    on_failure: Callable[[RespaldoError], object] | None = None,
    busy: RespaldoError | None = None,
    label: str,
    log: logging.Logger,
    finished: Callable[[Job], object] | None = None,
) -> Job:
    """Run the pending job ``model`` #``pk`` under ``lock`` and return its row as it ends.

    * ``lock`` (yields whether it was obtained) is entered first. Not obtained: the job fails
      with ``busy``, or is left as it is when ``busy`` is None (another worker has it).
    * The row is claimed (pending -> running, at ``phase``); a row no longer pending is left alone.
    * ``execute`` does the work and records the success itself (``jobs.succeed``).
    * An exception is logged with its traceback unless it is one of ours (``"<label> #<pk> failed
      unexpectedly"`` on ``log``), then ``on_failure`` gets its reason (default: ``jobs.fail``).
    * ``finished`` gets the final row, once this transaction commits, when this call is what
      settled it (a job claimed by someone else, or left pending, is announced by them).
    """
    settled = False
    with lock as held:
        if not held:
            settled = busy is not None and fail(model, pk, busy)
        elif claim(model, pk, phase=phase):
            settled = True
            try:
                execute()
            except Exception as exc:
                if as_respaldo_error(exc) is None:
                    log.exception("%s #%s failed unexpectedly", label, pk)
                reason = failure_reason(exc)
                if on_failure is None:
                    fail(model, pk, reason)
                else:
                    on_failure(reason)
    row = model.objects.get(pk=pk)
    if settled and finished is not None and row.status in FINAL_STATUSES:
        finished(row)
    return row


def announce(signal: Signal, sender: type, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one).

    A failing receiver (a mail server down) is logged, never fails the job.
    """
    transaction.on_commit(partial(_send, signal, sender, kwargs))


def _send(signal: Signal, sender: type, kwargs: dict[str, Any]) -> None:
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("%r failed: %r", receiver, result, exc_info=result)
