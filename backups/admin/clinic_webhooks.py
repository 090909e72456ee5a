"""The clinic console's webhook endpoints: this clinic's own, with their recent deliveries.

Every page is scoped to ``request.tenant``: another clinic's endpoint id is a 404 (change,
delete, history, test). Add, change and delete need the model's own permissions; the signing
secret is shown only to who may change the endpoint, and "Send a test event" (a button on the
endpoint's page and a list action, POST only) needs that permission too. The platform's
endpoint pages (``platform_webhooks``) reuse :class:`EndpointAdmin`.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from backups.admin.readonly import ClinicScopedAdmin
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import webhooks
from backups.web.http import client_address
from clinic_site.admin_sites import clinic_site

RECENT_DELIVERIES = 25


def failure_text(failure: str) -> str:
    """The words for one kind of failure (``WebhookDelivery.Failure``), the time-out's with its seconds."""
    if failure == WebhookDelivery.Failure.TIMEOUT:
        seconds = webhooks.TIMEOUT
        return ngettext("no answer within %(seconds)s second", "no answer within %(seconds)s seconds", seconds) % {
            "seconds": seconds
        }
    return str(WebhookDelivery.Failure(failure).label)


def outcome_text(delivery: WebhookDelivery, *, details: bool = False) -> str:
    """ "HTTP 200", or why there was no answer: one wording per kind of failure for a clinic
    ("the address could not be found", "the connection was refused", "no answer within 10
    seconds"...), never the recorded error; the platform (``details``) reads that wording and
    the recorded error after it."""
    if delivery.last_response_code is not None:
        return f"HTTP {delivery.last_response_code}"
    failure = delivery.failure or (WebhookDelivery.Failure.NETWORK if delivery.last_error else "")
    # (a failure recorded before failures had a kind reads as "network")
    if not failure:
        return "—"
    if details and delivery.last_error:
        return f"{failure_text(failure)} ({delivery.last_error})"
    return failure_text(failure)


def tested_message(delivery: WebhookDelivery) -> str:
    """What the console says once a test event is queued."""
    return _(
        "Test event queued for %(url)s. A worker sends it within seconds: its result appears in the "
        "recent deliveries on this page when you reload it."
    ) % {"url": delivery.endpoint.url}


class EndpointAdmin(ClinicScopedAdmin):
    """What both consoles' endpoint pages share; subclasses say whose endpoints they are."""

    change_form_template = "admin/backups/webhookendpoint/change_form.html"
    list_display = ["url", "description", "events", "active", "created_at", "last_delivery"]
    list_filter = ["active"]
    fields = ["url", "description", "on_backup", "on_restore", "on_drill", "active"]
    actions = ["send_test_events"]
    error_details = False  # the platform's pages show what a network error was; a clinic's do not
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def owner(self, request: HttpRequest):
        """The clinic whose endpoints these pages show (None: the platform's)."""
        raise NotImplementedError

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        owner = self.owner(request)
        if owner is None:
            endpoints = WebhookEndpoint.objects.filter(clinic__isnull=True)
        else:
            endpoints = WebhookEndpoint.objects.filter(clinic_id=owner.pk)
        # the list's "last delivery" column, in the list's one query
        latest = WebhookDelivery.objects.filter(endpoint=OuterRef("pk")).order_by("-created_at", "-id")
        return endpoints.annotate(
            last_status=Subquery(latest.values("status")[:1]),
            last_code=Subquery(latest.values("last_response_code")[:1]),
            last_error_text=Subquery(latest.values("last_error")[:1]),
            last_failure=Subquery(latest.values("failure")[:1]),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> list[str]:
        if obj is None:
            return []
        secret = "signing_secret" if self.has_change_permission(request, obj) else "signing_secret_hidden"
        return [secret, "created_at", "created_by", "recent_deliveries"]

    def get_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> list[str]:
        return [*self.fields, *self.get_readonly_fields(request, obj)]

    def own_or_404(self, request: HttpRequest, object_id: str) -> WebhookEndpoint:
        endpoint = self.get_queryset(request).filter(pk=object_id).first() if str(object_id).isdigit() else None
        if endpoint is None:
            raise Http404
        return endpoint

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        if not change:
            obj.clinic = self.owner(request)
            obj.created_by = request.user.get_username()
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if not change:
                webhooks.endpoint_audited(
                    obj, added=True, actor=request.user.get_username(), address=client_address(request)
                )

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        with transaction.atomic():
            webhooks.endpoint_audited(
                obj, added=False, actor=request.user.get_username(), address=client_address(request)
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        with transaction.atomic():
            for endpoint in queryset:
                webhooks.endpoint_audited(
                    endpoint, added=False, actor=request.user.get_username(), address=client_address(request)
                )
            super().delete_queryset(request, queryset)

    def response_add(self, request: HttpRequest, obj: WebhookEndpoint, post_url_continue=None) -> HttpResponse:
        """Land on the new endpoint's page, where its signing secret is shown: never in a message,
        which may travel in a cookie (``django.contrib.messages``' cookie storage)."""
        response = super().response_add(request, obj, post_url_continue)
        if "_addanother" in request.POST or "_popup" in request.POST:
            self.message_user(
                request,
                _("Its signing secret is on the endpoint's page: keep it in the receiving service."),
                messages.WARNING,
            )
            return response
        self.message_user(
            request,
            _("Copy its signing secret, below, into the receiving service: it signs every event."),
            messages.WARNING,
        )
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:backups_webhookendpoint_change", args=[obj.pk]))

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        self.own_or_404(request, object_id)
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        self.own_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        endpoint = self.own_or_404(request, object_id)
        context = dict(extra_context or {})
        if self.has_change_permission(request, endpoint):
            context["test_url"] = reverse(f"{self.admin_site.name}:backups_webhookendpoint_test", args=[endpoint.pk])
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self):
        test = self.admin_site.admin_view(self.test_view)
        return [path("<int:endpoint_id>/test/", test, name="backups_webhookendpoint_test"), *super().get_urls()]

    def test_view(self, request: HttpRequest, endpoint_id: int) -> HttpResponse:
        """POST: queue a test event (a worker sends it: this request never waits on the endpoint)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        endpoint = self.own_or_404(request, str(endpoint_id))
        if not self.has_change_permission(request, endpoint):
            raise PermissionDenied
        delivery = webhooks.send_test_event(endpoint, actor=request.user.get_username())
        self.message_user(request, tested_message(delivery), messages.INFO)
        change = reverse(f"{self.admin_site.name}:backups_webhookendpoint_change", args=[endpoint.pk])
        return HttpResponseRedirect(change)

    @admin.action(description=gettext_lazy("Send a test event to the selected endpoints"), permissions=["change"])
    def send_test_events(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            delivery = webhooks.send_test_event(endpoint, actor=request.user.get_username())
            self.message_user(request, tested_message(delivery), messages.INFO)

    @admin.display(description=gettext_lazy("events"))
    def events(self, endpoint: WebhookEndpoint) -> str:
        names = [
            (endpoint.on_backup, _("backups")),
            (endpoint.on_restore, _("restores")),
            (endpoint.on_drill, _("drills")),
        ]
        return ", ".join(str(name) for on, name in names if on) or "—"

    @admin.display(description=gettext_lazy("last delivery"))
    def last_delivery(self, endpoint: WebhookEndpoint) -> str:
        if not getattr(endpoint, "last_status", None):
            return "—"
        delivery = WebhookDelivery(
            status=endpoint.last_status,
            last_response_code=endpoint.last_code,
            last_error=endpoint.last_error_text or "",
            failure=endpoint.last_failure or "",
        )
        return f"{delivery.get_status_display()} · {outcome_text(delivery, details=self.error_details)}"

    @admin.display(description=gettext_lazy("signing secret"))
    def signing_secret(self, endpoint: WebhookEndpoint) -> str:
        return format_html("<code>{}</code>", endpoint.secret)

    @admin.display(description=gettext_lazy("signing secret"))
    def signing_secret_hidden(self, endpoint: WebhookEndpoint) -> str:
        return _("hidden (only who may change this endpoint sees it)")

    @admin.display(description=gettext_lazy("recent deliveries"))
    def recent_deliveries(self, endpoint: WebhookEndpoint) -> str:
        rows = endpoint.deliveries.order_by("-created_at", "-id")[:RECENT_DELIVERIES]
        if not rows:
            return _("None yet.")
        head = format_html(
            "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            _("created at"),
            _("event"),
            _("status"),
            _("attempts"),
            _("last response"),
            _("next attempt at"),
        )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    timezone.localtime(d.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    d.event,
                    d.get_status_display(),
                    d.attempts,
                    outcome_text(d, details=self.error_details),
                    timezone.localtime(d.next_attempt_at).strftime("%Y-%m-%d %H:%M") if d.next_attempt_at else "—",
                )
                for d in rows
            ),
        )
        return format_html('<table class="respaldo-webhook-deliveries">{}{}</table>', head, body)


@admin.register(WebhookEndpoint, site=clinic_site)
class ClinicWebhookEndpointAdmin(EndpointAdmin):
    """This clinic's endpoints: they receive this clinic's events only."""

    def owner(self, request: HttpRequest):
        return request.tenant
