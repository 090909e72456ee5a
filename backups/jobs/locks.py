"""PostgreSQL advisory locks, the one way Respaldo's processes keep out of each other's way.

Every lock takes two int4 keys: a namespace (below: which kind of thing is locked) and a key
(usually a row's id). Session locks (``advisory_lock``) last until released or until the
connection ends, crash or SIGKILL included, so a job row marked running whose lock is free has
lost its worker. Transaction locks (``advisory_xact_lock``) end with the transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from django.db import connection

# The namespaces. Each keeps its keys apart from the others' (and from anyone else's locks).
CLINIC_JOBS = 0x5245  # "RE": one backup or restore at a time per clinic (key: the clinic's id)
CLONE_JOBS = 0x434C  # "CL": a clone job while it runs (key: the job's id)
WEBHOOK_ENDPOINTS = 0x5748  # "WH": one delivery at a time per endpoint (key: the endpoint's id)
NIGHT = 0x4E49  # "NI": one dispatcher at a time hands out the night's backups (key: 0)


def _try_lock(namespace: int, key: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        return bool(cursor.fetchone()[0])


def _unlock(namespace: int, key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])


@contextlib.contextmanager
def advisory_lock(namespace: int, key: int, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """Hold the session lock ``(namespace, key)`` for the block; yields whether it was obtained.

    Tries again every 0.2 s for up to ``wait_seconds`` (0: tries once). A lock obtained is
    released at the end of the block (a lost connection has already released it with itself).
    """
    deadline = time.monotonic() + wait_seconds
    held = _try_lock(namespace, key)
    while not held and time.monotonic() < deadline:
        time.sleep(0.2)
        held = _try_lock(namespace, key)
    try:
        yield held
    finally:
        if held:
            with contextlib.suppress(Exception):
                _unlock(namespace, key)


def advisory_xact_lock(namespace: int, key: int) -> bool:
    """Take the transaction lock ``(namespace, key)`` if free; whether it was obtained.

    Call it inside ``transaction.atomic()``: the lock is released when that transaction ends.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [namespace, key])
        return bool(cursor.fetchone()[0])


def advisory_xact_lock_wait(namespace: int, key: int) -> None:
    """Wait for the transaction lock ``(namespace, key)`` (inside ``transaction.atomic()``)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [namespace, key])


def advisory_lock_held(namespace: int, key: int) -> bool:
    """True while some session (any process) holds the lock ``(namespace, key)`` in this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 2 AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()))",
            [namespace, key],
        )
        return bool(cursor.fetchone()[0])
