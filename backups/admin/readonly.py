"""What the console's catalog pages share: rows made by workers, read-only, titled by their model."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import translation
from django.utils.html import format_html

# Django's own words for the row checkbox, from Django's catalog (not ours: a variable, so makemessages skips it)
_SELECT_ROW = "Select this object for an action - {}"


class QuickRowCheckbox:
    """The list's row checkbox as Django renders it, without a widget template per row.

    Django renders each row's checkbox through the form widget templates; on a page of 100
    rows that was about a third of the page's time (bench/ "pages"). Same markup, same names.
    """

    def action_checkbox(self, obj) -> str:
        label = format_html(translation.gettext(_SELECT_ROW), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )


class ClinicScopedAdmin(QuickRowCheckbox, admin.ModelAdmin):
    """An object outside this clinic's queryset is a 404 (Django's default is a redirect to the index)."""

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        if not str(object_id).isdigit() or not self.get_queryset(request).filter(pk=object_id).exists():
            raise Http404
        return super().change_view(request, object_id, form_url, extra_context)


class CatalogAdmin(ClinicScopedAdmin):
    """No add or change form, no delete, no bulk actions: jobs make these rows and retention removes them."""

    list_per_page = 25

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        return {}

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        context = {"title": self.model._meta.verbose_name_plural.capitalize(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)
