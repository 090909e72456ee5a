"""The platform's side of the policies: the defaults every new clinic starts from, and each clinic's."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from backups.models import BackupPolicy
from backups.operations.policy import POLICY_FIELDS
from clinic_site.admin_sites import platform_site


@admin.register(BackupPolicy, site=platform_site)
class PlatformPolicyAdmin(admin.ModelAdmin):
    """The row without a clinic holds the defaults for new clinics."""

    list_display = ["scope", "enabled", "run_at", "payload_format", "keep_daily", "keep_weekly", "keep_monthly"]
    list_filter = ["enabled", "payload_format"]
    fields = POLICY_FIELDS

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("clinic").order_by("-clinic__isnull", "clinic__name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made with the clinic (and the defaults row by a migration)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description=gettext_lazy("clinic"))
    def scope(self, policy: BackupPolicy) -> str:
        return policy.clinic.name if policy.clinic_id else str(gettext_lazy("Defaults for new clinics"))
