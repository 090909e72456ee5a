"""The audit trail: who did what to which backup, when and from where (public schema).

Services call :func:`audit` inside the transaction of the action they record, so an entry
exists exactly when the action happened.
"""

from __future__ import annotations

from typing import Any

from backups.models import AuditEntry

SYSTEM = "system"  # the actor of what the schedule, retention and drills do


def audit(
    action: str,
    *,
    clinic_id: int | None,
    actor: str = SYSTEM,
    address: str | None = None,
    backup_id: int | None = None,
    restore_id: int | None = None,
    via_token: str | None = None,
    **details: Any,
) -> AuditEntry:
    """Record one action (``AuditEntry.Action``) with plain-JSON ``details``.

    ``via_token``: the prefix of the API token the actor acted with (kept as ``details["token"]``).
    """
    if via_token:
        details["token"] = via_token
    return AuditEntry.objects.create(
        clinic_id=clinic_id,
        actor=actor or SYSTEM,
        address=address,
        action=action,
        backup_id_ref=backup_id,
        restore_id_ref=restore_id,
        details=details,
    )
