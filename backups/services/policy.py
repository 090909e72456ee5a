"""Backup policies (what a platform or clinic administrator sets): one per clinic, made from
the platform's defaults (the row without a clinic)."""

from __future__ import annotations

from django.db import transaction
from django_tenants.utils import get_public_schema_name

from backups.models import BackupPolicy
from clinics.models import Clinic

# Fields copied from the defaults into a new clinic's policy.
POLICY_FIELDS = [
    "enabled",
    "run_at",
    "payload_format",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_min_days",
    "keep_pre_restore_days",
    "keep_failed_days",
    "notify_emails",
    "notify_daily_success",
    "stale_after_hours",
]


def policy_defaults() -> BackupPolicy:
    """The platform's defaults for new clinics (created with the model's defaults if missing)."""
    defaults, _ = BackupPolicy.objects.get_or_create(clinic=None)
    return defaults


def policy_for(clinic: Clinic) -> BackupPolicy:
    """The clinic's policy, made from the platform's defaults the first time it is asked for."""
    policy = BackupPolicy.objects.filter(clinic=clinic).first()
    if policy is not None:
        return policy
    defaults = policy_defaults()
    with transaction.atomic():
        policy, _ = BackupPolicy.objects.get_or_create(
            clinic=clinic, defaults={field: getattr(defaults, field) for field in POLICY_FIELDS}
        )
    return policy


def create_policy_with_clinic(sender, instance: Clinic, created: bool, **kwargs) -> None:
    """post_save of Clinic: a new clinic gets its policy at once (the platform's tenant none)."""
    if created and instance.schema_name != get_public_schema_name():
        policy_for(instance)
