"""The console's permissions reach the clinic's "Clinic administrators" as releases add them.

Permissions live in each clinic's schema. When a release adds one (``upload_backup``, the
policy's, the audit trail's), migrating a clinic's schema creates it; this receiver then
grants every permission of the backups app to that clinic's "Clinic administrators" group,
if the clinic has one, so existing clinics get the new pages without a hand-made grant.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import connections
from django_tenants.utils import get_public_schema_name

from clinics.roles import CLINIC_ADMINS_GROUP


def grant_backup_permissions(sender, app_config, using: str = "default", verbosity: int = 0, **kwargs) -> None:
    """post_migrate of the backups app in a clinic's schema: its admins hold every backups permission."""
    if app_config.label != "backups" or connections[using].schema_name == get_public_schema_name():
        return
    from django.contrib.auth.models import Group, Permission

    create_permissions(app_config, verbosity=0, using=using)  # before auth's own receiver may have run
    group = Group.objects.using(using).filter(name=CLINIC_ADMINS_GROUP).first()
    if group is not None:
        group.permissions.add(*Permission.objects.using(using).filter(content_type__app_label="backups"))
