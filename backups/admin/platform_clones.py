"""The platform's clones: a new clinic from a backup (a training copy, a clinic moved, support,
an offboarded clinic brought back under a new name). The page asks; a worker does it
(``backups.services.clone``); the job's page follows its phases."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.admin.display import status_badge
from backups.admin.readonly import CatalogAdmin
from backups.exceptions import RespaldoError
from backups.formats import FORMATS
from backups.models import Backup, CloneJob, JobStatus
from backups.services import clone as clones
from clinic_site.admin_sites import platform_site
from clinics.models import Clinic


class CloneForm(forms.Form):
    """Which clinic (and backup) to copy, and the new clinic's schema, name and domain."""

    source = forms.ModelChoiceField(
        label=gettext_lazy("Copy the clinic"),
        queryset=Clinic.objects.exclude(schema_name="public").order_by("name"),
        help_text=gettext_lazy("Offboarded clinics too: this brings one back under a new name."),
    )
    backup = forms.IntegerField(
        label=gettext_lazy("From backup #"),
        required=False,
        min_value=1,
        help_text=gettext_lazy(
            "Leave empty for the clinic's newest successful pg backup (it carries the clinic's users too)."
        ),
    )
    schema_name = forms.CharField(
        label=gettext_lazy("New schema name"),
        max_length=40,
        help_text=gettext_lazy("Lowercase letters, digits and single underscores, for example clinica_formacion."),
    )
    name = forms.CharField(label=gettext_lazy("New clinic's name"), max_length=200, required=False)
    domain = forms.CharField(
        label=gettext_lazy("Domain"),
        max_length=253,
        required=False,
        help_text=gettext_lazy("Leave empty for <schema with - for _>.<platform domain>."),
    )

    def clean(self) -> dict:
        """Every problem at once: the source's backup, the new schema name and the domain."""
        data = super().clean()
        source = data.get("source")
        if source is not None:
            restorable = Backup.objects.stored().filter(clinic=source)
            if data.get("backup"):
                backup = restorable.filter(pk=data["backup"]).first()
            else:  # the newest backup whose format carries the clinic's users (pg), else the newest of any
                with_accounts = [name for name, fmt in FORMATS.items() if fmt.holds_accounts]
                backup = restorable.filter(payload_format__in=with_accounts).first() or restorable.first()
            if backup is None:
                field = "backup" if data.get("backup") else "source"
                self.add_error(field, _("This clinic has no such backup to copy."))
            else:
                data["backup_row"] = backup
        schema = (data.get("schema_name") or "").strip()
        if schema:
            domain = (data.get("domain") or "").strip() or None
            for field, problem in clones.target_problems(schema, domain).items():
                self.add_error(field, str(problem))
        return data


@admin.register(CloneJob, site=platform_site)
class PlatformCloneAdmin(CatalogAdmin):
    """Every clone, newest first; "Clone a clinic" asks for a new one."""

    list_display = ["id", "requested_at", "source", "target_schema", "target_domain", "status_display", "phase"]
    list_filter = ["status"]
    list_select_related = ["source_backup__clinic"]
    search_fields = ["target_schema", "target_domain", "source_backup__clinic__schema_name"]
    readonly_fields = [
        "status_display",
        "phase",
        "source",
        "target_schema",
        "target_name",
        "target_domain",
        "clinic_link",
        "requested_by",
        "requested_at",
        "started_at",
        "succeeded_at",
        "failed_at",
        "outcome",
    ]
    fields = readonly_fields
    change_form_template = "admin/backups/clonejob/change_form.html"
    change_list_template = "admin/backups/clonejob/change_list.html"

    def get_urls(self):
        new = path("new/", self.admin_site.admin_view(self.clone_view), name="backups_clonejob_new")
        return [new, *super().get_urls()]

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def clone_view(self, request: HttpRequest) -> HttpResponse:
        """The form; on a valid one the clone is requested and the job's page shown."""
        if not request.user.is_superuser:
            raise PermissionDenied
        form = CloneForm(request.POST or None, initial={"source": request.GET.get("clinic")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                job = clones.clone_request(
                    source_backup_id=data["backup_row"].pk,
                    schema_name=data["schema_name"].strip(),
                    name=data["name"].strip(),
                    domain=data["domain"].strip() or None,
                    requested_by=request.user.get_username(),
                )
            except RespaldoError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, _("Clone #%(clone)s asked: a worker creates the clinic.") % {"clone": job.pk})
                return HttpResponseRedirect(reverse("admin:backups_clonejob_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Clone a clinic from a backup"),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/backups/clonejob/new.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        job = CloneJob.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        active = job is not None and job.status in (JobStatus.PENDING, JobStatus.RUNNING)
        return super().change_view(request, object_id, form_url, {"refresh": active, **(extra_context or {})})

    @admin.display(description=gettext_lazy("status"))
    def status_display(self, job: CloneJob) -> str:
        return status_badge(job)

    @admin.display(description=gettext_lazy("phase"))
    def phase(self, job: CloneJob) -> str:
        if job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
            return "—"
        return job.phase_label() if job.progress_phase else str(_("waiting for a worker"))

    @admin.display(description=gettext_lazy("copied from"))
    def source(self, job: CloneJob) -> str:
        backup = job.source_backup
        return f"{backup.clinic.name} ({backup.clinic.schema_name}), #{backup.pk} {backup.requested_at:%Y-%m-%d %H:%M}"

    @admin.display(description=gettext_lazy("new clinic"))
    def clinic_link(self, job: CloneJob) -> str:
        if job.status != JobStatus.SUCCEEDED or not job.clinic_id:
            return "—"
        return f"{job.target_name} ({job.target_schema})"

    @admin.display(description=gettext_lazy("outcome"))
    def outcome(self, job: CloneJob) -> str:
        return job.error_message() or "—"
