"""The clinic console's operations pages: the clinic's backup policy and its audit trail."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.admin import display
from backups.admin.readonly import CatalogAdmin, ClinicScopedAdmin
from backups.audit import audit
from backups.humanize import human_actor, human_time
from backups.models import AuditEntry, BackupPolicy
from backups.selectors.audit import audit_trail
from backups.services.policy import POLICY_FIELDS, policy_for
from backups.web.http import client_address
from backups.web.time_zones import time_zone_choices
from clinic_site.admin_sites import clinic_site


class PolicyForm(forms.ModelForm):
    """The policy's fields, plus the clinic's time zone (the policy's times are in it)."""

    time_zone = forms.ChoiceField(label=gettext_lazy("Time zone"))

    class Meta:
        model = BackupPolicy
        fields = POLICY_FIELDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].initial = self.instance.clinic.time_zone
        self.fields["time_zone"].choices = time_zone_choices(self.instance.clinic.time_zone)
        # a plain "02:00" (24-hour, whatever the browser's locale): not the admin's clock widget,
        # whose "Now" is the browser's time and whose note compares the browser's zone with the
        # server's, neither of them the clinic's
        self.fields["run_at"].widget = forms.TimeInput(
            format="%H:%M",
            attrs={
                "size": 5,
                "maxlength": 5,
                "placeholder": "02:00",
                "inputmode": "numeric",
                "pattern": "([01][0-9]|2[0-3]):[0-5][0-9]",
                "autocomplete": "off",
            },
        )
        self.fields["keep_failed_days"].label = gettext_lazy("failed attempts listed for (days)")
        self.fields["keep_failed_days"].help_text = gettext_lazy(
            "A backup or restore that failed stays in the lists, with its error, for this many days; "
            "then its line is removed. It holds no data."
        )
        self.fields["notify_emails"].widget = forms.TextInput(attrs={"size": 80})
        self.fields[next(iter(self.fields))].widget.attrs["autofocus"] = True  # the page opens at its first field

    def clean_notify_emails(self) -> str:
        addresses = [part.strip() for part in self.cleaned_data["notify_emails"].replace(";", ",").split(",")]
        addresses = [address for address in addresses if address]
        for address in addresses:
            try:
                validate_email(address)
            except forms.ValidationError:
                raise forms.ValidationError(_("%(address)s is not an email address.") % {"address": address}) from None
        return ", ".join(addresses)


@admin.register(BackupPolicy, site=clinic_site)
class ClinicPolicyAdmin(ClinicScopedAdmin):
    """One page: this clinic's policy (the list goes straight to it; nothing to add or delete)."""

    form = PolicyForm

    class Media:
        css = {"all": ["backups/policy.css"]}

    fieldsets = [
        (gettext_lazy("Daily backup"), {"fields": ["enabled", "run_at", "time_zone", "payload_format"]}),
        (
            gettext_lazy("What is kept"),
            {
                "fields": [
                    "keep_daily",
                    "keep_weekly",
                    "keep_monthly",
                    "keep_min_days",
                    "keep_pre_restore_days",
                    "keep_failed_days",
                ],
                "description": gettext_lazy("The newest successful backup is always kept, whatever these say."),
            },
        ),
        (
            gettext_lazy("Who hears about it"),
            {"fields": ["notify_emails", "notify_daily_success", "stale_after_hours"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[BackupPolicy]:
        return BackupPolicy.objects.filter(clinic_id=request.tenant.pk).select_related("clinic")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            return super().changelist_view(request, extra_context)  # Django's own 403
        policy = policy_for(request.tenant)
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:backups_backuppolicy_change", args=[policy.pk]))

    def save_model(self, request: HttpRequest, obj: BackupPolicy, form: PolicyForm, change: bool) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            clinic = obj.clinic
            if form.cleaned_data["time_zone"] != clinic.time_zone:
                clinic.time_zone = form.cleaned_data["time_zone"]
                clinic.save(update_fields=["time_zone"])
            audit(
                AuditEntry.Action.POLICY_CHANGED,
                clinic_id=clinic.pk,
                actor=request.user.get_username(),
                address=client_address(request),
                changed=sorted(form.changed_data),
            )

    def response_change(self, request: HttpRequest, obj: BackupPolicy) -> HttpResponse:
        self.message_user(request, _("The backup policy was saved."))
        return HttpResponseRedirect(request.path)


@admin.register(AuditEntry, site=clinic_site)
class ClinicAuditAdmin(CatalogAdmin):
    """Who did what to this clinic's backups, newest first (read-only)."""

    list_display = ["when", "actor_display", "action", "backup_ref", "restore_ref", "address", "details_display"]
    list_display_links = None
    list_filter = ["action", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEntry]:
        return audit_trail(clinic_id=request.tenant.pk)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": _("Audit trail"), **(extra_context or {})})

    @admin.display(description=gettext_lazy("details"))
    def details_display(self, entry: AuditEntry) -> str:
        return display.audit_details(entry.details)

    @admin.display(description=gettext_lazy("when"), ordering="at")
    def when(self, entry: AuditEntry) -> str:
        return human_time(entry.at, seconds=True)

    @admin.display(description=gettext_lazy("who"), ordering="actor")
    def actor_display(self, entry: AuditEntry) -> str:
        return human_actor(entry.actor)

    @admin.display(description=gettext_lazy("backup"))
    def backup_ref(self, entry: AuditEntry) -> str:
        return f"#{entry.backup_id_ref}" if entry.backup_id_ref else "—"

    @admin.display(description=gettext_lazy("restore"))
    def restore_ref(self, entry: AuditEntry) -> str:
        return f"#{entry.restore_id_ref}" if entry.restore_id_ref else "—"
