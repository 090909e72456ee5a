"""The clinic console's backups: list, back up now, download, restore (confirm first), upload to restore.

A thin adapter over ``backups.services`` (see ``../shared/STYLE.md``). Each custom view is
a straight line like ``UserAdmin.user_change_password``: the object through a queryset
filtered by ``request.tenant`` (another clinic's id is a 404) -> permission check -> bound
form -> one service call -> ``message_user`` -> redirect. Rows are read-only here: backups
are made by the workers and removed by retention.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt

from backups import selectors
from backups.admin import display
from backups.admin.clinic_holds import hold_text, hold_view
from backups.admin.clinic_selective import selective_view
from backups.admin.guards import require
from backups.admin.readonly import CatalogAdmin
from backups.admin.trends import trend_context
from backups.admin.uploads import upload_view
from backups.exceptions import RespaldoError
from backups.formats import format_for
from backups.humanize import human_actor, human_note, human_time
from backups.models import ACTIVE_STATUSES, Backup, JobStatus, Restore
from backups.operations.schedule import next_scheduled_run
from backups.selectors.catalog import active_job
from backups.selectors.upload_origin import upload_origin
from backups.services.backup import backup_request, fair_use_status
from backups.services.differences import latest_comparison, request_comparison
from backups.services.download import backup_download
from backups.services.preview import restore_preview
from backups.services.restore import restore_request
from backups.web.forms import BackupNowForm, RestoreConfirmForm, posted
from backups.web.http import client_address
from clinic_site.admin_sites import clinic_site


def job_status_json(job, *, message: str = "", actions_html: str = "") -> JsonResponse:
    """A job's state for the page's polling script."""
    return JsonResponse(
        {
            "id": job.pk,
            "status": display.status_key(job),
            "status_label": display.status_label(job),
            "phase": job.progress_phase,
            "phase_label": display.phase_label(job) if job.progress_phase else "",
            "bytes": getattr(job, "progress_bytes", None),
            "bytes_label": display.human_bytes(getattr(job, "progress_bytes", None)),
            "size_label": display.human_bytes(getattr(job, "size", None)),
            "duration_label": display.human_duration(job.duration),
            "finished": job.status not in ACTIVE_STATUSES,
            "error": job.error_message() if job.status == JobStatus.FAILED else "",
            "message": message,
            "actions_html": actions_html,
        },
        headers={"Cache-Control": "no-store"},
    )


@admin.register(Backup, site=clinic_site)
class ClinicBackupAdmin(CatalogAdmin):
    """One clinic's backups ("Respaldos"), newest first."""

    list_display = [
        "when",
        "status_badge",
        "row_actions",
        "verified",
        "kind_display",
        "format_short",
        "size_display",
        "duration_display",
        "requested_by_display",
        "note_display",
    ]
    list_display_links = ["when"]
    list_filter = [
        ("status", display.BackupStatusFilter),
        "kind",
        "payload_format",
        ("requested_at", admin.DateFieldListFilter),
    ]
    search_fields = ["note", "requested_by"]
    change_list_template = "admin/backups/backup/change_list.html"
    change_form_template = "admin/backups/backup/change_form.html"
    fields = [
        "when",
        "kind",
        "origin_display",
        "payload_format",
        "status_badge",
        "verified",
        "size_display",
        "duration_display",
        "requested_by_display",
        "note_text",
        "hold_display",
        "error_display",
        "sha256",
        "tables_display",
        "downloads_display",
    ]
    readonly_fields = fields

    # --- the rows: this clinic's only (read-only: CatalogAdmin) ------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Backup]:
        return selectors.backup_list(clinic_id=request.tenant.pk)

    # --- columns ------------------------------------------------------------------------

    @admin.display(description=gettext_lazy("when"), ordering="requested_at")
    def when(self, backup: Backup) -> str:
        return timezone.localtime(backup.requested_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description=gettext_lazy("kind"), ordering="kind")
    def kind_display(self, backup: Backup) -> str:
        """The kind; for an uploaded file, also when its data was backed up (from its manifest)."""
        origin = upload_origin(backup)
        if origin is None or not origin.summary():
            return backup.get_kind_display()
        return format_html('{}<div class="respaldo-origin">{}</div>', backup.get_kind_display(), origin.summary())

    @admin.display(description=gettext_lazy("origin"))
    def origin_display(self, backup: Backup) -> str:
        """For an uploaded file: when it was uploaded, when its data was backed up, for which clinic."""
        origin = upload_origin(backup)
        return origin.sentence() if origin is not None else "—"

    @admin.display(description=gettext_lazy("format"), ordering="payload_format")
    def format_short(self, backup: Backup) -> str:
        return format_for(backup.payload_format).label

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, backup: Backup) -> str:
        return display.status_badge(backup, status_url=self._url("status", backup.pk), live=True)

    @admin.display(description=gettext_lazy("note"))
    def note_display(self, backup: Backup) -> str:
        """The note, after a lock and "kept" when the backup is on legal hold."""
        if backup.held_at is None:
            return human_note(backup.note)
        return format_html('<span class="respaldo-held">⚑ {}</span> {}', _("kept"), human_note(backup.note))

    @admin.display(description=gettext_lazy("note"))
    def note_text(self, backup: Backup) -> str:
        return human_note(backup.note) or "—"

    @admin.display(description=gettext_lazy("requested by"), ordering="requested_by")
    def requested_by_display(self, backup: Backup) -> str:
        return human_actor(backup.requested_by)

    @admin.display(description=gettext_lazy("legal hold"))
    def hold_display(self, backup: Backup) -> str:
        return hold_text(backup)

    @admin.display(description=gettext_lazy("verified"), ordering="verified_at")
    def verified(self, backup: Backup) -> str:
        if backup.drill_status == "failed":
            return format_html('<span class="respaldo-failed-text">✗ {}</span>', _("drill failed"))
        if backup.verified_at:
            return "✓ " + timezone.localtime(backup.verified_at).strftime("%Y-%m-%d")
        return "—"

    @admin.display(description=gettext_lazy("size"), ordering="size")
    def size_display(self, backup: Backup) -> str:
        if backup.status in ACTIVE_STATUSES and backup.progress_bytes:
            return format_html('<span class="respaldo-bytes">{}</span>', display.human_bytes(backup.progress_bytes))
        return format_html('<span class="respaldo-bytes">{}</span>', display.human_bytes(backup.size))

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, backup: Backup) -> str:
        return display.human_duration(backup.duration)

    @admin.display(description=gettext_lazy("error"))
    def error_display(self, backup: Backup) -> str:
        return backup.error_message() or "—"

    @admin.display(description=gettext_lazy("rows per table"))
    def tables_display(self, backup: Backup) -> str:
        rows = display.table_rows((backup.manifest or {}).get("tables") or {})
        if not rows:
            return "—"
        return format_html(
            '<ul class="respaldo-table-rows">{}</ul>',
            format_html_join(
                "", "<li>{}: {}</li>", ((name, number_format(count, force_grouping=True)) for name, count in rows)
            ),
        )

    @admin.display(description=gettext_lazy("downloads"))
    def downloads_display(self, backup: Backup) -> str:
        rows = list(backup.downloads.all()[:10])
        if not rows:
            return "—"
        return "; ".join(
            f"{row.downloaded_by} {timezone.localtime(row.downloaded_at).strftime('%Y-%m-%d %H:%M')}" for row in rows
        )

    def get_fields(self, request: HttpRequest, obj: Backup | None = None) -> list[str]:
        """The page's fields; "origin" only for an uploaded file."""
        fields = list(super().get_fields(request, obj))
        if obj is None or obj.kind != Backup.Kind.UPLOADED:
            fields.remove("origin_display")
        return fields

    def get_list_display(self, request: HttpRequest) -> list:
        """The columns, with the row actions this user may take (checked once per page)."""
        allowed = {name for name in ("download", "restore") if request.user.has_perm(f"backups.{name}_backup")}

        @admin.display(description=gettext_lazy("actions"))
        def row_actions(backup: Backup) -> str:
            return self.row_actions(backup, allowed)

        return [row_actions if column == "row_actions" else column for column in self.list_display]

    def row_actions(self, backup: Backup, allowed: set[str]) -> str:
        """Links to download, restore and restore one patient of a backup with a stored file, as ``allowed``."""
        if not backup.has_stored_file:
            return ""
        choices = (
            ("download", "download", _("Download")),
            ("restore", "restore", _("Restore…")),
            ("pick", "restore", _("Restore one patient…")),
        )
        links = [
            format_html('<a href="{}">{}</a>', self._url(name, backup.pk), label)
            for name, needs, label in choices
            if needs in allowed
        ]
        separator = '<span class="respaldo-sep" aria-hidden="true"> · </span>'  # a narrow list stacks the links
        return format_html(separator.join(["{}"] * len(links)), *links) if links else ""

    # --- pages --------------------------------------------------------------------------

    def _url_restore_progress(self, restore_id: int) -> str:
        return reverse(f"{self.admin_site.name}:backups_restore_progress", args=[restore_id])

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:backups_backup_{name}", args=args)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("now/", view(self.backup_now_view), name="backups_backup_now"),
            path("upload/", csrf_exempt(view(upload_view(self))), name="backups_backup_upload"),
            path("<int:backup_id>/status/", view(self.status_view), name="backups_backup_status"),
            path("<int:backup_id>/download/", view(self.download_view), name="backups_backup_download"),
            path("<int:backup_id>/restore/", view(self.restore_view), name="backups_backup_restore"),
            path(
                "<int:backup_id>/differences/<int:comparison_id>/",
                view(self.differences_view),
                name="backups_backup_differences",
            ),
            path("<int:backup_id>/pick/", view(selective_view(self)), name="backups_backup_pick"),
            path("<int:backup_id>/hold/", view(hold_view(self, release=False)), name="backups_backup_hold"),
            path("<int:backup_id>/release/", view(hold_view(self, release=True)), name="backups_backup_release"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        running = active_job(request.tenant.pk)
        extra = {
            **trend_context(Backup.objects.filter(clinic_id=request.tenant.pk)),  # in the active (clinic's) time zone
            "can_back_up": request.user.has_perm("backups.add_backup"),
            "can_upload": request.user.has_perm("backups.upload_backup"),
            "job_running": running is not None,
            **(extra_context or {}),
        }
        if not Backup.objects.filter(clinic_id=request.tenant.pk).exists():  # a new clinic: when its first runs
            first = next_scheduled_run(request.tenant)
            extra["first_backup"] = {
                "off": first is None,
                "soon": first is not None and first <= timezone.now(),
                "at": human_time(first),
                "zone": request.tenant.time_zone,
            }
        return super().changelist_view(request, extra_context=extra)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        backup = self.get_queryset(request).filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {"backup": backup, "can_download": False, "can_restore": False, **(extra_context or {})}
        extra["can_hold"] = backup is not None and request.user.has_perm("backups.hold_backup")
        if backup is not None:
            extra.setdefault("title", display.backup_title(backup))
            extra.setdefault("subtitle", None)
        if backup is not None and backup.has_stored_file:
            extra["can_download"] = request.user.has_perm("backups.download_backup")
            extra["can_restore"] = request.user.has_perm("backups.restore_backup")
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def page(self, request: HttpRequest, template: str, title: str, **context) -> TemplateResponse:
        """An admin page of this model with the site's context."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "clinic": request.tenant,
            **context,
        }
        return TemplateResponse(request, f"admin/backups/backup/{template}", context)

    def backup_now_view(self, request: HttpRequest) -> HttpResponse:
        require(request, "add_backup")
        form = BackupNowForm(*posted(request)[:1])
        if request.method == "POST" and form.is_valid():
            try:
                backup = backup_request(
                    clinic=request.tenant.pk,
                    payload_format=form.cleaned_data["payload_format"],
                    note=form.cleaned_data["note"],
                    requested_by=request.user.get_username(),
                    address=client_address(request),
                )
            except RespaldoError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    _("Backup #%(id)s requested: it runs in the background; its row shows its progress.")
                    % {"id": backup.pk},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse(f"{self.admin_site.name}:backups_backup_changelist"))
        fair_use = fair_use_status(request.tenant)
        return self.page(
            request,
            "backup_now.html",
            _("Back up now"),
            form=form,
            running=active_job(request.tenant.pk),
            fair_use=fair_use,
            fair_use_frees=human_time(fair_use.frees_at),
        )

    def status_view(self, request: HttpRequest, backup_id: int) -> JsonResponse:
        backup = get_object_or_404(self.get_queryset(request), pk=backup_id)
        if not self.has_view_permission(request, backup):
            raise PermissionDenied
        message = ""
        if backup.status == JobStatus.SUCCEEDED:
            message = _("Backup #%(id)s finished: %(size)s.") % {
                "id": backup.pk,
                "size": display.human_bytes(backup.size),
            }
        elif backup.status == JobStatus.FAILED:
            message = _("Backup #%(id)s failed: %(reason)s") % {"id": backup.pk, "reason": backup.error_message()}
        allowed = {name for name in ("download", "restore") if request.user.has_perm(f"backups.{name}_backup")}
        return job_status_json(backup, message=message, actions_html=self.row_actions(backup, allowed))

    def download_view(self, request: HttpRequest, backup_id: int) -> HttpResponse:
        if request.method != "GET":  # a download is recorded: a HEAD (a link preview, a prefetch) is not one
            return HttpResponseNotAllowed(["GET"])
        backup = get_object_or_404(self.get_queryset(request), pk=backup_id)
        require(request, "download_backup")
        try:
            download = backup_download(
                backup=backup, downloaded_by=request.user.get_username(), address=client_address(request)
            )
        except RespaldoError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse(f"{self.admin_site.name}:backups_backup_changelist"))
        if download.link:
            return HttpResponseRedirect(download.link)
        response = FileResponse(
            download.stream, as_attachment=True, filename=download.filename, content_type="application/octet-stream"
        )
        response["Content-Length"] = str(download.size)
        response["Cache-Control"] = "no-store, private"
        return response

    def restore_view(self, request: HttpRequest, backup_id: int) -> HttpResponse:
        backup = get_object_or_404(self.get_queryset(request), pk=backup_id)
        require(request, "restore_backup")
        if not backup.has_stored_file:
            self.message_user(request, _("Backup #%(id)s cannot be restored.") % {"id": backup.pk}, messages.ERROR)
            return HttpResponseRedirect(reverse(f"{self.admin_site.name}:backups_backup_changelist"))
        asked = self._comparison_asked(request, backup)
        preview = restore_preview(
            backup=backup,
            comparison=latest_comparison(backup),
            pending=asked if asked is not None and asked.status in ACTIVE_STATUSES else None,
        )
        form = RestoreConfirmForm(
            *posted(request)[:1], schema=request.tenant.schema_name, name=request.tenant.name, preview=preview
        )
        if request.method == "POST" and form.is_valid():
            try:
                restore = restore_request(
                    clinic=request.tenant.pk,
                    backup_id=backup.pk,
                    requested_by=request.user.get_username(),
                    address=client_address(request),
                )
            except RespaldoError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    _("Restore #%(id)s started from backup #%(backup)s.") % {"id": restore.pk, "backup": backup.pk},
                )
                return HttpResponseRedirect(
                    reverse(f"{self.admin_site.name}:backups_restore_progress", args=[restore.pk])
                )
        undoes = Restore.objects.filter(clinic=request.tenant.pk, safety_backup=backup).order_by("-pk").first()
        if undoes is not None:  # the "Undo this restore" link of that restore's page leads here
            title = _("Undo restore #%(id)s?") % {"id": undoes.pk}
        else:
            title = _("Restore backup #%(id)s?") % {"id": backup.pk}
        return self.page(
            request,
            "restore_confirm.html",
            title,
            backup=backup,
            note=human_note(backup.note),
            origin=upload_origin(backup),
            preview=preview,
            form=form,
            running=active_job(request.tenant.pk),
            holds_accounts=format_for(backup.payload_format).holds_accounts,
            **self._differences_context(backup, preview, asked),
        )

    def _comparison_asked(self, request: HttpRequest, backup: Backup):
        """The comparison this visit shows: ``?comparison=<id>`` (a reload when it ended), or a new one
        for a plain GET (the clinic as it is now); none for a POST."""
        if request.method != "GET":
            return None
        shown = request.GET.get("comparison", "")
        if shown.isdigit():
            return backup.comparisons.filter(pk=int(shown)).first()
        return request_comparison(backup, requested_by=request.user.get_username())

    def _differences_context(self, backup: Backup, preview, asked) -> dict:
        pending = preview.pending
        return {
            "differences_url": self._url("differences", backup.pk, pending.pk) if pending else "",
            "failed": asked if asked is not None and asked.status == JobStatus.FAILED else None,
            "pick_url": self._url("pick", backup.pk),
        }

    def differences_view(self, request: HttpRequest, backup_id: int, comparison_id: int) -> JsonResponse:
        """For the confirmation page's script: whether the comparison ended, and the figures' section."""
        backup = get_object_or_404(self.get_queryset(request), pk=backup_id)
        require(request, "restore_backup")
        asked = get_object_or_404(backup.comparisons, pk=comparison_id)
        finished = asked.status not in ACTIVE_STATUSES
        html = ""
        if finished:
            preview = restore_preview(backup=backup, comparison=latest_comparison(backup))
            context = {"backup": backup, "preview": preview, **self._differences_context(backup, preview, asked)}
            html = render_to_string("admin/backups/backup/restore_differences.html", context, request=request)
        return JsonResponse({"finished": finished, "html": html}, headers={"Cache-Control": "no-store"})
