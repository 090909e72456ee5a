"""The platform's catalog: every clinic's backups and restores, filtered by clinic, exported as
CSV or XLSX through django-import-export (export only: the catalog is written by jobs)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy
from import_export import fields, resources
from import_export.admin import ExportMixin
from import_export.formats.base_formats import CSV, XLSX

from backups.admin.display import BackupStatusFilter, status_badge
from backups.admin.readonly import CatalogAdmin
from backups.humanize import human_actor, human_bytes, human_duration, human_time
from backups.models import Backup, Restore
from clinic_site.admin_sites import platform_site


class _ClinicColumns(resources.ModelResource):
    """The clinic as two plain columns (schema and name) instead of its id."""

    clinic_schema = fields.Field(attribute="clinic__schema_name", column_name="clinic_schema")
    clinic_name = fields.Field(attribute="clinic__name", column_name="clinic_name")


class BackupResource(_ClinicColumns):
    """One row per backup, as the catalog holds it (sizes in bytes, times in UTC ISO 8601)."""

    class Meta:
        model = Backup
        fields = (
            "id",
            "clinic_schema",
            "clinic_name",
            "kind",
            "payload_format",
            "status",
            "requested_by",
            "requested_at",
            "started_at",
            "succeeded_at",
            "failed_at",
            "size",
            "sha256",
            "storage_name",
            "verified_at",
            "drill_status",
            "expired_at",
            "error_code",
            "note",
        )
        export_order = fields

    def get_queryset(self):
        return super().get_queryset().select_related("clinic")


class RestoreResource(_ClinicColumns):
    """One row per restore."""

    class Meta:
        model = Restore
        fields = (
            "id",
            "clinic_schema",
            "clinic_name",
            "backup",
            "safety_backup",
            "outcome",
            "status",
            "requested_by",
            "requested_at",
            "started_at",
            "succeeded_at",
            "failed_at",
            "error_code",
        )
        export_order = fields


class _PlatformCatalogAdmin(ExportMixin, CatalogAdmin):
    """Read-only, every clinic, 50 per page, exported as CSV or XLSX (what the filters select)."""

    formats = [CSV, XLSX]
    list_per_page = 50
    list_select_related = ["clinic"]
    list_filter_clinic = ("clinic", admin.RelatedOnlyFieldListFilter)
    search_fields = ["clinic__schema_name", "clinic__name", "requested_by"]
    date_hierarchy = "requested_at"

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_display(self, job) -> str:
        return status_badge(job)

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, job) -> str:
        return human_duration(job.duration) if job.duration else "—"

    @admin.display(description=gettext_lazy("clinic"), ordering="clinic__name")
    def clinic_display(self, job) -> str:
        return str(job.clinic)

    @admin.display(description=gettext_lazy("requested at"), ordering="requested_at")
    def when(self, job) -> str:
        return human_time(job.requested_at, zone=True)

    @admin.display(description=gettext_lazy("requested by"), ordering="requested_by")
    def requested_by_display(self, job) -> str:
        return human_actor(job.requested_by)


@admin.register(Backup, site=platform_site)
class PlatformBackupAdmin(_PlatformCatalogAdmin):
    """Every clinic's backups, newest first."""

    resource_classes = [BackupResource]
    list_display = [
        "when",
        "clinic_display",
        "kind",
        "payload_format",
        "status_display",
        "size_display",
        "duration_display",
        "verified_display",
        "requested_by_display",
    ]
    list_filter = [
        ("status", BackupStatusFilter),
        "kind",
        "payload_format",
        _PlatformCatalogAdmin.list_filter_clinic,
        ("expired_at", admin.EmptyFieldListFilter),
    ]

    @admin.display(description=gettext_lazy("verified at"), ordering="verified_at")
    def verified_display(self, backup: Backup) -> str:
        return human_time(backup.verified_at, zone=True)

    @admin.display(description=gettext_lazy("size"), ordering="size")
    def size_display(self, backup: Backup) -> str:
        return human_bytes(backup.size) if backup.size else "—"


@admin.register(Restore, site=platform_site)
class PlatformRestoreAdmin(_PlatformCatalogAdmin):
    """Every clinic's restores, newest first."""

    resource_classes = [RestoreResource]
    list_display = [
        "when",
        "clinic_display",
        "backup_display",
        "outcome",
        "status_display",
        "duration_display",
        "requested_by_display",
    ]
    list_filter = ["status", "outcome", _PlatformCatalogAdmin.list_filter_clinic]

    @admin.display(description=gettext_lazy("backup"), ordering="backup_id")
    def backup_display(self, restore: Restore) -> str:
        return f"#{restore.backup_id}"
