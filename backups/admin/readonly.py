"""What the console's catalog pages share: rows made by workers, read-only, titled by their model."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse


class CatalogAdmin(admin.ModelAdmin):
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
