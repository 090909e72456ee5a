"""The platform's clinics page: every clinic with its backup health, and what the platform does to a clinic.

The list is annotated with each clinic's health (``backups.selectors.platform.clinics_with_health``)
and filters on it; the clinic's page offers offboarding, crypto-erasure and bringing a clinic
back, and the list's actions back up or drill the selected clinics now. Registered for
``clinics.Clinic`` on the platform's site (the tenancy app itself knows nothing of backups);
its confirmation pages are ``admin/clinics/clinic/*.html``.
"""

from datetime import timedelta

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext

from backups.admin.display import status_badge
from backups.admin.readonly import QuickRowCheckbox
from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.humanize import human_ago, human_bytes, human_time
from backups.models import BACKUP_STATUS_LABELS, Backup, JobStatus
from backups.operations.drills import request_drill
from backups.selectors.platform import clinics_with_health
from backups.services.backup import backup_request
from backups.services.offboard import bring_back, bring_back_source, erase_clinic_backups, offboard_clinic
from backups.services.recover import clinic_domain
from backups.web.http import client_address
from clinic_site.admin_sites import platform_site
from clinics.admin import DomainInline
from clinics.models import Clinic

# --- Filters on the backup health annotations (backups.selectors.platform.clinics_with_health) ---


class _FlagFilter(admin.SimpleListFilter):
    """A filter on one boolean annotation: ``options`` maps each value in the URL to True or False."""

    annotation = ""
    options: list[tuple[str, str, bool]] = []

    def lookups(self, request, model_admin):
        return [(value, label) for value, label, _flag in self.options]

    def queryset(self, request, queryset):
        for value, _label, flag in self.options:
            if self.value() == value:
                return queryset.filter(**{self.annotation: flag})
        return queryset


class StaleFilter(_FlagFilter):
    title = _("past the backup threshold")
    parameter_name = "stale"
    annotation = "is_stale"
    options = [("yes", _("Yes"), True), ("no", _("No"), False)]


class PolicyFilter(_FlagFilter):
    title = _("daily backups")
    parameter_name = "policy"
    annotation = "policy_enabled"
    options = [("on", _("On"), True), ("off", _("Off"), False)]


class FailedFilter(_FlagFilter):
    title = _("failed backup or restore")
    parameter_name = "failed"
    annotation = "failed_recently"
    options = [("24h", _("In the last 24 hours"), True)]


class DrillFilter(_FlagFilter):
    title = _("restore drill")
    parameter_name = "drill"
    annotation = "drill_overdue"
    options = [("overdue", _("Failed, or older than a week"), True)]


class LastStatusFilter(admin.SimpleListFilter):
    title = _("last backup")
    parameter_name = "last_status"

    def lookups(self, request, model_admin):
        return [*BACKUP_STATUS_LABELS.items(), ("none", _("No backup yet"))]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(last_status__isnull=True)
        if self.value() in JobStatus.values:
            return queryset.filter(last_status=self.value())
        return queryset


class StateFilter(admin.SimpleListFilter):
    """Active clinics, or offboarded ones (their data gone, their backups kept for a while)."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", _("Active")), ("offboarded", _("Offboarded"))]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(offboarded_at__isnull=True)
        if self.value() == "offboarded":
            return queryset.filter(offboarded_at__isnull=False)
        return queryset


def _day(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d")


@admin.register(Clinic, site=platform_site)
class ClinicAdmin(QuickRowCheckbox, admin.ModelAdmin):
    list_per_page = 50  # a page an operator scans at once; half of Django's 100 halves its render (bench/ "pages")
    list_display = [  # backup health first: the columns an operator scans, visible at 1280 px
        "name",
        "state_display",
        "last_success_display",
        "last_status_display",
        "last_verified_display",
        "stored_size_display",
        "stored_count_display",
        "policy_display",
        "schema_display",
        "primary_domain",
        "contact_email",
        "created_display",
    ]
    list_filter = [
        StateFilter,
        StaleFilter,
        LastStatusFilter,
        PolicyFilter,
        FailedFilter,
        DrillFilter,
    ]
    search_fields = ["name", "schema_name", "domains__domain"]
    inlines = [DomainInline]
    actions = [
        "backup_selected",
        "drill_selected",
        "offboard_selected",
        "bring_back_selected",
        "erase_backups_selected",
    ]

    @admin.action(description=_("Bring the selected offboarded clinics back from their newest backup"))
    def bring_back_selected(self, request, queryset):
        """A confirmation page saying what happens to each clinic (and which cannot come back, and
        why), then each offboarded clinic gets its schema and domain again, filled from its newest backup."""
        clinics = list(queryset)
        ready = [(clinic, bring_back_source(clinic)) for clinic in clinics if clinic.offboarded_at is not None]
        refused = [
            _("%(clinic)s is not offboarded: it is active, there is nothing to bring back.") % {"clinic": clinic.name}
            for clinic in clinics
            if clinic.offboarded_at is None
        ]
        refused += [
            _("%(clinic)s has no stored backup left: it cannot be brought back.") % {"clinic": clinic.name}
            for clinic, source in ready
            if source is None
        ]
        ready = [(clinic, source) for clinic, source in ready if source is not None]
        if request.POST.get("post") != "yes" or not ready:
            context = {
                **self.admin_site.each_context(request),
                "title": _("Bring these clinics back?"),
                "rows": [(clinic, source, clinic_domain(clinic.schema_name)) for clinic, source in ready],
                "refused": refused,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/clinics/clinic/bring_back_confirmation.html", context)
        for message in refused:
            self.message_user(request, message, messages.WARNING)
        for clinic, _source in ready:
            try:
                backup = bring_back(clinic=clinic, requested_by=request.user.get_username())
            except RespaldoError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                done = _("%(clinic)s is back, with the data of backup #%(backup)s.")
                self.message_user(request, done % {"clinic": clinic, "backup": backup.pk}, messages.SUCCESS)
        return None

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a clinic is offboarded, not deleted: the catalog keeps its backups

    @admin.action(description=_("Offboard the selected clinics (last backup, then their data is dropped)"))
    def offboard_selected(self, request, queryset):
        """A confirmation page where each clinic's schema name is typed (as a restore asks), then
        one service call per clinic. A name missing or mistyped offboards nothing."""
        clinics = list(queryset.filter(offboarded_at__isnull=True))
        already = [clinic.name for clinic in queryset if clinic.offboarded_at is not None]
        typed = {clinic.pk: (request.POST.get(f"confirm_{clinic.pk}") or "").strip() for clinic in clinics}
        confirmed = all(typed[clinic.pk] == clinic.schema_name for clinic in clinics)
        if request.POST.get("post") != "yes" or not clinics or not confirmed:
            context = {
                **self.admin_site.each_context(request),
                "title": _("Offboard these clinics?"),
                "rows": [
                    (
                        clinic,
                        typed[clinic.pk],
                        request.POST.get("post") == "yes" and typed[clinic.pk] != clinic.schema_name,
                    )
                    for clinic in clinics
                ],
                "already": already,
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
            except RespaldoError as error:
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
                "rows": [(clinic, clinic.backups.in_storage().count()) for clinic in clinics],
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "reason": reason,
                "missing": request.POST.get("post") == "yes",
            }
            return TemplateResponse(request, "admin/clinics/clinic/erase_confirmation.html", context)
        for clinic in clinics:
            try:
                erasure = erase_clinic_backups(
                    clinic, actor=request.user.get_username(), reason=reason, address=client_address(request)
                )
            except RespaldoError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                done = _("The archive key of %(clinic)s is destroyed and %(count)s stored backups deleted.")
                self.message_user(request, done % {"clinic": clinic, "count": erasure.deleted}, messages.SUCCESS)
                if erasure.kept_held:
                    kept = _(
                        "%(count)s backups of %(clinic)s were put on legal hold during the erasure "
                        "and kept: %(backups)s."
                    )
                    numbers = ", ".join(f"#{pk}" for pk in erasure.kept_held)
                    values = {"count": len(erasure.kept_held), "clinic": clinic, "backups": numbers}
                    self.message_user(request, kept % values, messages.WARNING)
        return None

    def get_queryset(self, request):
        clinics = super().get_queryset(request).exclude(schema_name="public").prefetch_related("domains")
        return clinics_with_health(clinics)

    def get_readonly_fields(self, request, obj=None):
        # Renaming a schema would orphan its data: it is chosen once, at creation.
        return ["schema_name", "created_at"] if obj else ["created_at"]

    @admin.display(description=_("schema"), ordering="schema_name")
    def schema_display(self, obj: Clinic) -> str:
        return obj.schema_name

    @admin.display(description=_("created at"), ordering="created_at")
    def created_display(self, obj: Clinic) -> str:
        return human_time(obj.created_at, zone=True)

    @admin.display(description=_("primary domain"))
    def primary_domain(self, obj: Clinic) -> str:
        primary = next((d for d in obj.domains.all() if d.is_primary), None)
        return primary.domain if primary else "—"

    # --- Backup health (annotations of backups.selectors.platform.clinics_with_health) ---

    def sort_query(self, column: str, *, descending: bool = True) -> str:
        """The changelist's query string sorting by ``column`` (the admin's ``o`` counts the checkbox)."""
        position = self.list_display.index(column) + (1 if self.actions else 0)
        return f"o={'-' if descending else ''}{position}"

    @staticmethod
    def _ago(moment) -> str:
        if moment is None:
            return str(_("never"))
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            moment.isoformat(),
            human_time(moment, zone=True),
            human_ago(moment),
        )

    @admin.display(description=_("state"), ordering="offboarded_at")
    def state_display(self, obj: Clinic) -> str:
        """Active, or when the clinic was offboarded and until when its backups are kept."""
        if obj.offboarded_at is None:
            return str(_("Active"))
        kept = obj.offboarded_at + timedelta(days=conf.offboard_keep_days)
        return format_html(
            '<span class="respaldo-offboarded"><strong>{}</strong><br>{}</span>',
            _("Offboarded on %(date)s") % {"date": _day(obj.offboarded_at)},
            _("backups kept until %(date)s") % {"date": _day(kept)},
        )

    @admin.display(description=_("last good backup"), ordering="last_success_at")
    def last_success_display(self, obj: Clinic) -> str:
        if not obj.is_stale:
            return self._ago(obj.last_success_at)
        return format_html(
            '<span class="respaldo-stale"><span aria-hidden="true">⚠ </span>{} <strong>{}</strong></span>',
            self._ago(obj.last_success_at),
            _("overdue (over %(hours)s h)") % {"hours": obj.stale_after_hours},
        )

    @admin.display(description=_("last backup"), ordering="last_status")
    def last_status_display(self, obj: Clinic) -> str:
        return status_badge(Backup(status=obj.last_status)) if obj.last_status else "—"

    @admin.display(description=_("last verified"), ordering="last_verified_at")
    def last_verified_display(self, obj: Clinic) -> str:
        return self._ago(obj.last_verified_at)

    @admin.display(description=_("stored"), ordering="stored_size")
    def stored_size_display(self, obj: Clinic) -> str:
        return human_bytes(obj.stored_size)

    @admin.display(description=_("backups"), ordering="stored_count")
    def stored_count_display(self, obj: Clinic) -> int:
        return obj.stored_count

    @admin.display(description=_("daily backups"), ordering="policy_enabled")
    def policy_display(self, obj: Clinic) -> str:
        return f"✓ {pgettext('daily backups', 'on')}" if obj.policy_enabled else f"✗ {pgettext('daily backups', 'off')}"

    # --- Back up or drill now ----------------------------------------------------------

    def _run_now(self, request, queryset, *, action: str, title, intro, run, done):
        """A confirmation page listing the clinics, then ``run(clinic)`` for each: one message of
        those done, one per refusal (an unexpected error is raised, as Django does)."""
        clinics = list(queryset)
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": title,
                "intro": intro,
                "clinics": clinics,
                "action": action,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/clinics/clinic/run_now_confirmation.html", context)
        started = []
        for clinic in clinics:
            try:
                run(clinic)
            except RespaldoError as error:
                refused = _("%(clinic)s: %(reason)s") % {"clinic": clinic.name, "reason": error}
                self.message_user(request, refused, messages.WARNING)
            else:
                started.append(clinic.name)
        if started:
            self.message_user(request, done % {"clinics": ", ".join(started)}, messages.SUCCESS)
        return None

    @admin.action(description=_("Back up the selected clinics now"))
    def backup_selected(self, request, queryset):
        """One manual backup per clinic, queued for the workers (the clinic's own refusals apply)."""
        return self._run_now(
            request,
            queryset,
            action="backup_selected",
            title=_("Back up these clinics now?"),
            intro=_("Each clinic gets a manual backup, queued for the workers; its daily backup still runs."),
            run=lambda clinic: backup_request(
                clinic=clinic, requested_by=request.user.get_username(), address=client_address(request)
            ),
            done=_("Backups queued for: %(clinics)s."),
        )

    @admin.action(description=_("Drill the selected clinics now"))
    def drill_selected(self, request, queryset):
        """A restore drill of each clinic's newest stored backup, queued for the workers."""
        return self._run_now(
            request,
            queryset,
            action="drill_selected",
            title=_("Drill these clinics now?"),
            intro=_(
                "The newest stored backup of each clinic is restored into a scratch schema, checked and "
                "rolled back: the clinic itself is not touched."
            ),
            run=request_drill,
            done=_("Drills queued for: %(clinics)s."),
        )
