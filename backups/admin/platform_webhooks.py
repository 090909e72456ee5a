"""The platform's webhooks: its own endpoints (every clinic's events) and every delivery, read-only."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy

from backups.admin.clinic_webhooks import EndpointAdmin, outcome_text
from backups.admin.readonly import CatalogAdmin
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from clinic_site.admin_sites import platform_site


@admin.register(WebhookEndpoint, site=platform_site)
class PlatformWebhookEndpointAdmin(EndpointAdmin):
    """Platform-wide endpoints: they receive every clinic's events (clinics' own endpoints are theirs)."""

    error_details = True

    def owner(self, request: HttpRequest):
        return None

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        """The URL's help also names the setting that lets tests use plain http to localhost (operators only)."""
        form = super().get_form(request, obj, change, **kwargs)
        form.base_fields["url"].help_text = gettext_lazy(
            "An https:// address that accepts POST requests with a JSON body. Plain http is refused, "
            "except to localhost when the deployment sets BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST (for tests)."
        )
        return form


@admin.register(WebhookDelivery, site=platform_site)
class PlatformWebhookDeliveryAdmin(CatalogAdmin):
    """Every delivery, to platform and clinic endpoints, newest first (read-only)."""

    list_display = ["created", "event", "clinic_schema", "endpoint_url", "status", "attempts", "outcome"]
    list_filter = ["status", "event", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["endpoint__url", "endpoint__clinic__schema_name", "event_id"]
    list_select_related = ["endpoint__clinic"]
    fields = [
        "endpoint",
        "event",
        "event_id",
        "status",
        "attempts",
        "last_response_code",
        "last_error",
        "failure",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "body",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        return WebhookDelivery.objects.select_related("endpoint__clinic")

    @admin.display(description=gettext_lazy("created at"), ordering="created_at")
    def created(self, delivery: WebhookDelivery) -> str:
        return timezone.localtime(delivery.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description=gettext_lazy("clinic"), ordering="endpoint__clinic__schema_name")
    def clinic_schema(self, delivery: WebhookDelivery) -> str:
        clinic = delivery.endpoint.clinic
        return clinic.schema_name if clinic else gettext_lazy("(platform)")

    @admin.display(description=gettext_lazy("URL"), ordering="endpoint__url")
    def endpoint_url(self, delivery: WebhookDelivery) -> str:
        return delivery.endpoint.url

    @admin.display(description=gettext_lazy("last response"))
    def outcome(self, delivery: WebhookDelivery) -> str:
        return outcome_text(delivery, details=True)

    @admin.display(description=gettext_lazy("payload"))
    def body(self, delivery: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, ensure_ascii=False))
