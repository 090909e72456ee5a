"""Platform admin: clinics and their domains, jobs, platform users."""

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from backups.conf import conf
from backups.exceptions import as_respaldo_error
from backups.operations.audit import client_address
from backups.services.offboard import bring_back, erase_clinic_backups, offboard_clinic
from clinic_site.admin_sites import platform_site

from .models import Clinic, Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 1


@admin.register(Clinic, site=platform_site)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ["name", "schema_name", "primary_domain", "contact_email", "created_at", "offboarded_at"]
    list_filter = [("offboarded_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "schema_name", "domains__domain"]
    inlines = [DomainInline]
    actions = ["offboard_selected", "bring_back_selected", "erase_backups_selected"]

    @admin.action(description=_("Bring the selected offboarded clinics back from their newest backup"))
    def bring_back_selected(self, request, queryset):
        """Each offboarded clinic gets its schema and domain again, filled from its newest backup."""
        for clinic in queryset.filter(offboarded_at__isnull=False):
            try:
                backup = bring_back(clinic=clinic, requested_by=request.user.get_username())
            except Exception as exc:
                error = as_respaldo_error(exc)
                if error is None:
                    raise
                self.message_user(request, str(error), messages.ERROR)
            else:
                done = _("%(clinic)s is back, with the data of backup #%(backup)s.")
                self.message_user(request, done % {"clinic": clinic, "backup": backup.pk}, messages.SUCCESS)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a clinic is offboarded, not deleted: the catalog keeps its backups

    @admin.action(description=_("Offboard the selected clinics (last backup, then their data is dropped)"))
    def offboard_selected(self, request, queryset):
        """Like delete_selected: a confirmation page first, then one service call per clinic."""
        clinics = list(queryset.filter(offboarded_at__isnull=True))
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": _("Offboard these clinics?"),
                "clinics": clinics,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "keep_days": conf.offboard_keep_days,
            }
            return TemplateResponse(request, "admin/clinics/clinic/offboard_confirmation.html", context)
        for clinic in clinics:
            try:
                final = offboard_clinic(
                    clinic=clinic, requested_by=request.user.get_username(), address=client_address(request)
                )
            except Exception as exc:
                error = as_respaldo_error(exc)
                if error is None:
                    raise
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(
                    request,
                    _("%(clinic)s was offboarded; its last backup is #%(backup)s.")
                    % {"clinic": clinic, "backup": final.pk},
                    messages.SUCCESS,
                )
        return None

    @admin.action(description=_("Erase the selected clinics' backups (their archive key is destroyed)"))
    def erase_backups_selected(self, request, queryset):
        """Crypto-erasure (a data-protection request, a clinic that left): a confirmation page with a reason."""
        clinics = list(queryset)
        reason = (request.POST.get("reason") or "").strip()
        confirmed = request.POST.get("post") == "yes" and request.POST.get("understood") == "on"
        if not confirmed or not reason:
            context = {
                **self.admin_site.each_context(request),
                "title": _("Erase these clinics' backups?"),
                "rows": [
                    (clinic, clinic.backups.filter(expired_at__isnull=True).exclude(storage_name="").count())
                    for clinic in clinics
                ],
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "reason": reason,
                "missing": request.POST.get("post") == "yes",
            }
            return TemplateResponse(request, "admin/clinics/clinic/erase_confirmation.html", context)
        for clinic in clinics:
            try:
                erased = erase_clinic_backups(
                    clinic, actor=request.user.get_username(), reason=reason, address=client_address(request)
                )
            except Exception as exc:
                error = as_respaldo_error(exc)
                if error is None:
                    raise
                self.message_user(request, str(error), messages.ERROR)
            else:
                done = _("The archive key of %(clinic)s is destroyed and %(count)s stored backups deleted.")
                self.message_user(request, done % {"clinic": clinic, "count": erased}, messages.SUCCESS)
        return None

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(schema_name="public").prefetch_related("domains")

    def get_readonly_fields(self, request, obj=None):
        # Renaming a schema would orphan its data: it is chosen once, at creation.
        return ["schema_name", "created_at"] if obj else ["created_at"]

    @admin.display(description=_("primary domain"))
    def primary_domain(self, obj: Clinic) -> str:
        primary = next((d for d in obj.domains.all() if d.is_primary), None)
        return primary.domain if primary else "—"


platform_site.register(User, UserAdmin)
platform_site.register(Group, GroupAdmin)
platform_site.register(Schedule, q_admin.ScheduleAdmin)
platform_site.register(Success, q_admin.TaskAdmin)
platform_site.register(Failure, q_admin.FailAdmin)
platform_site.register(OrmQ, q_admin.QueueAdmin)
