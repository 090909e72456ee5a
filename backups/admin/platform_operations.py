"""The platform's side of the policies: the defaults every new clinic starts from, and each clinic's."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.admin import display
from backups.admin.readonly import CatalogAdmin
from backups.humanize import human_actor, human_time
from backups.models import AuditEntry, BackupPolicy
from backups.services.policy import POLICY_FIELDS
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


@admin.register(AuditEntry, site=platform_site)
class PlatformAuditAdmin(CatalogAdmin):
    """Every clinic's audit trail (and the platform's own entries), newest first, read-only."""

    list_display = [
        "when",
        "clinic",
        "actor_display",
        "action",
        "backup_id_ref",
        "restore_id_ref",
        "address",
        "details_display",
    ]
    list_display_links = None
    list_filter = ["action", "clinic", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor", "clinic__name", "clinic__schema_name"]
    list_select_related = ["clinic"]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": _("Audit trail"), **(extra_context or {})})

    @admin.display(description=gettext_lazy("when"), ordering="at")
    def when(self, entry: AuditEntry) -> str:
        return human_time(entry.at, seconds=True, zone=True)

    @admin.display(description=gettext_lazy("who"), ordering="actor")
    def actor_display(self, entry: AuditEntry) -> str:
        return human_actor(entry.actor)

    @admin.display(description=gettext_lazy("details"))
    def details_display(self, entry: AuditEntry) -> str:
        return display.audit_details(entry.details)
