"""Reading the audit trail."""

from __future__ import annotations

from django.db.models import QuerySet

from backups.models import AuditEntry


def audit_trail(*, clinic_id: int) -> QuerySet[AuditEntry]:
    """One clinic's entries, newest first."""
    return AuditEntry.objects.filter(clinic_id=clinic_id)
