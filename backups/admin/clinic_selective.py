"""The clinic console's "Restore one patient…" page: one patient and their records back from a backup.

Three steps on one URL (``<backup id>/pick/``), a thin adapter over
:mod:`backups.services.selective` and :mod:`backups.services.selective_search` like the other
console views (object through the clinic-scoped queryset, so another clinic's backup is a 404
-> permission -> bound form -> one service call -> message -> redirect):

1. GET: the backup's patients who are missing from the clinic now, and a search by name or
   national id (``q``; accents and case ignored), each patient found a link to step 2;
2. GET with ``national_id``: the preview (rows to add, rows to change with their fields, rows
   left alone, conflicts in words), readable (:mod:`backups.admin.selective_display`), and a
   confirmation form (type the national id again);
3. POST: the apply, then a message and the backup list; a refusal shows the first step again.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.admin.selective_display import patient_name, readable_tables
from backups.exceptions import RespaldoError
from backups.models import Backup
from backups.services.selective import SelectivePreview, SelectiveResult, selective_apply, selective_preview
from backups.services.selective_search import backup_patients, missing_now, search_patients
from backups.web.http import client_address

SHOWN = 50  # patients listed at most per list (a longer search is narrowed by typing more)


class PatientPickForm(forms.Form):
    """Which patient to bring back: their national id (the links of the first step carry it)."""

    national_id = forms.CharField(label=gettext_lazy("Patient's national id"), max_length=30, strip=True)


class PatientSearchForm(forms.Form):
    """A search of the backup's patients: part of a name or of a national id."""

    q = forms.CharField(
        label=gettext_lazy("Name or national id"),
        max_length=100,
        required=False,
        strip=True,
        help_text=gettext_lazy("Part of the name is enough; accents and capitals do not matter."),
        widget=forms.TextInput(attrs={"autofocus": True}),
    )


class PatientConfirmForm(forms.Form):
    """The national id typed again, and the preview's fingerprint (what the person saw)."""

    national_id = forms.CharField(widget=forms.HiddenInput, max_length=30, strip=True)
    fingerprint = forms.CharField(widget=forms.HiddenInput, max_length=64)  # without it: refused
    confirm = forms.CharField(
        label=gettext_lazy("Type the national id again to confirm"),
        max_length=30,
        strip=True,
        widget=forms.TextInput(attrs={"autofocus": True}),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("confirm") and cleaned.get("confirm") != cleaned.get("national_id"):
            self.add_error("confirm", _("This is not the national id of the patient shown above."))
        return cleaned


def _restorable(backup: Backup) -> bool:
    return backup.has_stored_file


class SelectiveView:
    """The "Restore one patient…" page of ``model_admin`` (the clinic's backups admin)."""

    def __init__(self, model_admin) -> None:
        self.model_admin = model_admin

    def changelist(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse(f"{self.model_admin.admin_site.name}:backups_backup_changelist"))

    def __call__(self, request: HttpRequest, backup_id: int) -> HttpResponse:
        from backups.admin.guards import require

        backup = get_object_or_404(self.model_admin.get_queryset(request), pk=backup_id)
        require(request, "restore_backup")
        if not _restorable(backup):
            message = _("Backup #%(id)s cannot be restored.") % {"id": backup.pk}
            self.model_admin.message_user(request, message, messages.ERROR)
            return self.changelist()
        if request.method == "POST":
            return self.apply(request, backup)
        pick = PatientPickForm(request.GET if "national_id" in request.GET else None)
        if pick.is_valid():
            return self.preview(request, backup, pick)
        return self.pick(request, backup, PatientSearchForm(request.GET or None))

    def pick(self, request: HttpRequest, backup: Backup, search: PatientSearchForm, **context) -> HttpResponse:
        """Step 1: the backup's patients missing now, and those the search finds."""
        query = search.cleaned_data["q"] if search.is_valid() else ""
        try:
            patients = backup_patients(backup)
        except RespaldoError as exc:
            return self.page(request, backup, "selective_pick.html", search=search, unreadable=str(exc), **context)
        found = search_patients(patients, query) if query else None
        missing = missing_now(patients)
        return self.page(
            request,
            backup,
            "selective_pick.html",
            search=search,
            query=query,
            found=found[:SHOWN] if found is not None else None,
            found_more=len(found) - SHOWN if found is not None and len(found) > SHOWN else 0,
            missing=missing[:SHOWN],
            missing_more=max(0, len(missing) - SHOWN),
            patient_count=len(patients),
            **context,
        )

    def preview(self, request: HttpRequest, backup: Backup, pick: PatientPickForm) -> HttpResponse:
        """Step 2: what would change, and the confirmation form."""
        national_id = pick.cleaned_data["national_id"]
        try:
            found = selective_preview(backup, national_id=national_id)
        except RespaldoError as exc:
            return self.pick(request, backup, PatientSearchForm(), refusal=str(exc))
        confirm = PatientConfirmForm(initial={"national_id": national_id, "fingerprint": found.fingerprint})
        return self.preview_page(request, backup, found, confirm)

    def preview_page(
        self, request: HttpRequest, backup: Backup, found: SelectivePreview, form: PatientConfirmForm
    ) -> HttpResponse:
        zone = request.tenant.time_zone
        return self.page(
            request,
            backup,
            "selective_preview.html",
            preview=found,
            form=form,
            patient_name=patient_name(found),
            readable=readable_tables(found, zone),
            time_zone=zone,
        )

    def apply(self, request: HttpRequest, backup: Backup) -> HttpResponse:
        """Step 3: the confirmed apply; a refusal shows the first step again with the reason."""
        form = PatientConfirmForm(request.POST)
        if form.is_valid():
            try:
                result = selective_apply(
                    backup,
                    national_id=form.cleaned_data["national_id"],
                    requested_by=request.user.get_username(),
                    address=client_address(request),
                    expected=form.cleaned_data["fingerprint"],
                )
            except RespaldoError as exc:
                form.add_error(None, str(exc))
            else:
                self.model_admin.message_user(request, _done(result), messages.SUCCESS)
                # its result page, where it can be undone (exactly those rows)
                site = self.model_admin.admin_site.name
                return HttpResponseRedirect(reverse(f"{site}:backups_restore_progress", args=[result.restore.pk]))
        search = PatientSearchForm({"q": form.data.get("national_id", "")})
        return self.pick(request, backup, search, refused=form)

    def page(self, request: HttpRequest, backup: Backup, template: str, **context) -> HttpResponse:
        title = _("Restore one patient from backup #%(id)s") % {"id": backup.pk}
        return self.model_admin.page(request, template, title, backup=backup, **context)


def _done(result: SelectiveResult) -> str:
    return _(
        "Patient %(national_id)s restored from backup #%(backup)s: %(added)s rows added, "
        "%(changed)s rows changed (safety backup #%(safety)s taken first)."
    ) % {
        "national_id": result.national_id,
        "backup": result.backup.pk,
        "added": sum(table["added"] for table in result.counts.values()),
        "changed": sum(table["changed"] for table in result.counts.values()),
        "safety": result.safety_backup.pk,
    }


def selective_view(model_admin) -> Callable[..., HttpResponse]:
    """The view to register under ``<backup id>/pick/``."""
    return SelectiveView(model_admin)
