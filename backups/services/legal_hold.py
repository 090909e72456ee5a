"""Legal hold: a backup a clinic must keep (clinical records kept for years, a dispute).

A held backup is never pruned by retention, never erased at the end of an offboarding, and a
clinic's backups cannot be erased (crypto-erasure) while one of them is held: its key must
survive. The erasure locks the clinic's backup rows while it checks for holds and destroys the
key, so a hold placed meanwhile waits for it; a hold that lands while the erasure is deleting
the objects keeps that backup (the erasure skips it and reports it). Holding and releasing take
the ``hold_backup`` permission, a reason, and leave an audit entry each; the platform sees how
much storage held backups take (``overview.platform_overview``).
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from backups.audit import audit
from backups.exceptions import RespaldoError, translated
from backups.models import AuditEntry, Backup


@translated()
def hold_backup(backup: Backup, *, actor: str, reason: str, address: str | None = None) -> Backup:
    """Put a stored backup on legal hold; refused for one that is not stored, already held, or without a reason."""
    reason = reason.strip()[:200]
    if not reason:
        raise RespaldoError("hold_needs_reason")
    with transaction.atomic():
        row = Backup.objects.select_for_update().get(pk=backup.pk)
        if not row.has_stored_file:
            raise RespaldoError("hold_not_stored", backup=row.pk)
        if row.held_at is not None:
            raise RespaldoError("hold_already", backup=row.pk)
        row.held_at, row.held_by, row.hold_reason = timezone.now(), actor[:254], reason
        row.save(update_fields=["held_at", "held_by", "hold_reason"])
        audit(
            AuditEntry.Action.HELD,
            clinic_id=row.clinic_id,
            actor=actor,
            address=address,
            backup_id=row.pk,
            reason=reason,
        )
    return row


@translated()
def release_backup(backup: Backup, *, actor: str, reason: str, address: str | None = None) -> Backup:
    """Release a backup from legal hold (retention applies to it again); the release is audited with its reason."""
    reason = reason.strip()[:200]
    if not reason:
        raise RespaldoError("hold_needs_reason")
    with transaction.atomic():
        row = Backup.objects.select_for_update().get(pk=backup.pk)
        if row.held_at is None:
            raise RespaldoError("hold_not_held", backup=row.pk)
        held = {"held_since": row.held_at.isoformat(), "held_by": row.held_by, "hold_reason": row.hold_reason}
        row.held_at, row.held_by, row.hold_reason = None, "", ""
        row.save(update_fields=["held_at", "held_by", "hold_reason"])
        audit(
            AuditEntry.Action.RELEASED,
            clinic_id=row.clinic_id,
            actor=actor,
            address=address,
            backup_id=row.pk,
            reason=reason,
            **held,
        )
    return row
