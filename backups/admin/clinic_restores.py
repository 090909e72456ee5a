"""The clinic console's restore history and a restore's progress page (with the way back)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.admin import display
from backups.admin.clinic_backups import job_status_json
from backups.admin.readonly import CatalogAdmin
from backups.admin.selective_display import readable_undo
from backups.exceptions import RespaldoError
from backups.humanize import human_actor
from backups.models import JobStatus, Restore
from backups.services.selective_undo import UndoPreview, selective_undo, undo_preview
from backups.web.http import client_address
from clinic_site.admin_sites import clinic_site


def restore_list(clinic_id: int) -> QuerySet[Restore]:
    """One clinic's restores, newest first, with their backups."""
    return Restore.objects.filter(clinic_id=clinic_id).select_related("backup", "safety_backup", "clinic")


@admin.register(Restore, site=clinic_site)
class ClinicRestoreAdmin(CatalogAdmin):
    """Every restore of this clinic: who, when, from which backup, how it ended, and the way back."""

    list_display = [
        "when",
        "status_badge",
        "requested_by_display",
        "duration_display",
        "source",
        "safety",
        "outcome_display",
    ]
    list_display_links = None
    list_filter = ["status", "outcome"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Restore]:
        return restore_list(request.tenant.pk)

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{name}", args=args)

    @admin.display(description=gettext_lazy("when"), ordering="requested_at")
    def when(self, restore: Restore) -> str:
        stamp = timezone.localtime(restore.requested_at).strftime("%Y-%m-%d %H:%M")
        return format_html('<a href="{}">{}</a>', self._url("backups_restore_progress", restore.pk), stamp)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, restore: Restore) -> str:
        return display.status_badge(restore, status_url=self._url("backups_restore_status", restore.pk))

    @admin.display(description=gettext_lazy("requested by"), ordering="requested_by")
    def requested_by_display(self, restore: Restore) -> str:
        return human_actor(restore.requested_by)

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, restore: Restore) -> str:
        return display.human_duration(restore.duration)

    @admin.display(description=gettext_lazy("source backup"))
    def source(self, restore: Restore) -> str:
        if restore.is_selective:
            return format_html(
                '{}<br><span class="respaldo-what">{}</span>', self._backup_link(restore.backup), self.what(restore)
            )
        return self._backup_link(restore.backup)

    def what(self, restore: Restore) -> str:
        """What a selective restore put back: "one patient: <name> (<national id>)"."""
        return _("one patient: %(name)s (%(national_id)s)") % {
            "name": restore.before_images.get("patient_name", ""),
            "national_id": restore.selective_patient,
        }

    @admin.display(description=gettext_lazy("safety backup"))
    def safety(self, restore: Restore) -> str:
        return self._backup_link(restore.safety_backup) if restore.safety_backup_id else "—"

    @admin.display(description=gettext_lazy("outcome"))
    def outcome_display(self, restore: Restore) -> str:
        if restore.status == JobStatus.FAILED:
            return restore.error_message()
        return restore.get_outcome_display() if restore.outcome else "—"

    def _backup_link(self, backup) -> str:
        stamp = timezone.localtime(backup.requested_at).strftime("%Y-%m-%d %H:%M")
        return format_html('<a href="{}">#{} · {}</a>', self._url("backups_backup_change", backup.pk), backup.pk, stamp)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:restore_id>/progress/", view(self.progress_view), name="backups_restore_progress"),
            path("<int:restore_id>/status/", view(self.status_view), name="backups_restore_status"),
            path("<int:restore_id>/undo/", view(self.undo_view), name="backups_restore_undo"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, restore_id: int) -> HttpResponse:
        restore = get_object_or_404(self.get_queryset(request), pk=restore_id)
        if not self.has_view_permission(request, restore):
            raise PermissionDenied
        if request.GET.get("ended") and restore.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            level = messages.SUCCESS if restore.status == JobStatus.SUCCEEDED else messages.ERROR
            self.message_user(request, self.ended_message(restore), level)
        phases = [] if restore.is_selective else display.restore_phase_strip(restore)  # one transaction: no phases
        undo = None
        if restore.status == JobStatus.SUCCEEDED and request.user.has_perm("backups.restore_backup"):
            if restore.is_selective:  # its own undo: exactly the rows it wrote
                undo = None if restore.undone_at else self._url("backups_restore_undo", restore.pk)
            elif restore.safety_backup_id:
                undo = self._url("backups_backup_restore", restore.safety_backup_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Restore #%(id)s") % {"id": restore.pk},
            "restore": restore,
            "requested_by": human_actor(restore.requested_by),
            "phases": phases,
            "current_phase": next((step for step in phases if step.state == "current"), None),
            "badge": self.status_badge(restore),
            "duration": display.human_duration(restore.duration),
            "undo_url": undo,
            "source_link": self._backup_link(restore.backup),
            "safety_link": self._backup_link(restore.safety_backup) if restore.safety_backup_id else None,
            "what": self.what(restore) if restore.is_selective else "",
        }
        return TemplateResponse(request, "admin/backups/restore/progress.html", context)

    def undo_view(self, request: HttpRequest, restore_id: int) -> HttpResponse:
        """A selective restore's undo: what it removes and puts back (GET), then the undo (POST)."""
        restore = get_object_or_404(self.get_queryset(request), pk=restore_id)
        if not request.user.has_perm("backups.restore_backup"):
            raise PermissionDenied
        progress = HttpResponseRedirect(self._url("backups_restore_progress", restore.pk))
        if request.method == "POST":
            try:
                done = selective_undo(
                    restore, requested_by=request.user.get_username(), address=client_address(request)
                )
            except RespaldoError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return HttpResponseRedirect(request.path)
            self.message_user(request, _undone(done), messages.SUCCESS)
            return progress
        try:
            shown = undo_preview(restore)
        except RespaldoError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return progress
        zone = request.tenant.time_zone
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Undo restore #%(id)s") % {"id": restore.pk},
            "restore": restore,
            "undo": shown,
            "what": self.what(restore),
            "readable": readable_undo(shown, zone),
            "time_zone": zone,
            "source_link": self._backup_link(restore.backup),
        }
        return TemplateResponse(request, "admin/backups/restore/selective_undo.html", context)

    def status_view(self, request: HttpRequest, restore_id: int) -> JsonResponse:
        restore = get_object_or_404(self.get_queryset(request), pk=restore_id)
        if not self.has_view_permission(request, restore):
            raise PermissionDenied
        return job_status_json(restore, message=self.ended_message(restore))

    def ended_message(self, restore: Restore) -> str:
        """How the restore ended, in the reader's language ("" while it runs)."""
        if restore.status == JobStatus.SUCCEEDED and restore.is_selective:
            return _("Restore #%(id)s finished: %(what)s put back from backup #%(backup)s.") % {
                "id": restore.pk,
                "what": self.what(restore),
                "backup": restore.backup_id,
            }
        if restore.status == JobStatus.SUCCEEDED:
            return _("Restore #%(id)s finished: the clinic now holds the data of backup #%(backup)s.") % {
                "id": restore.pk,
                "backup": restore.backup_id,
            }
        if restore.status == JobStatus.FAILED:
            return _("Restore #%(id)s failed: %(reason)s") % {"id": restore.pk, "reason": restore.error_message()}
        return ""


def _undone(done: UndoPreview) -> str:
    counts = done.counts.values()
    return _(
        "Restore #%(id)s undone: %(removed)s rows removed, %(put_back)s rows put back as they were. "
        "Every other change to the clinic stays."
    ) % {
        "id": done.restore.pk,
        "removed": sum(table["removed"] for table in counts),
        "put_back": sum(table["put_back"] for table in counts),
    }
