"""Webhook endpoints and their deliveries (``backups.operations.webhooks``).

An endpoint with a clinic receives that clinic's events; one without a clinic is the
platform's and receives every clinic's. Each event makes one :class:`WebhookDelivery` per
matching active endpoint, kept with its attempts and the last response code. Imported at the
end of ``backups.models`` so that Django finds the models in the app.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from backups.conf import conf

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes as 64 hex digits."""
    return secrets.token_hex(32)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address."""
    if host.lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_webhook_url(url: str) -> None:
    """HTTPS only; plain HTTP only to localhost when ``BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST`` is on."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValidationError(_("Do not put a user name or password in the URL."), code="webhook_credentials")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname or "") and conf.webhooks_allow_http_localhost:
        return
    raise ValidationError(_("The URL must start with https:// (plain http is refused)."), code="webhook_not_https")


class WebhookEndpoint(models.Model):
    """An HTTPS address that receives backup, restore and drill events, signed with its secret."""

    clinic = models.ForeignKey(
        "clinics.Clinic",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="webhook_endpoints",
        verbose_name=_("clinic"),
        help_text=_("Empty: a platform endpoint, which receives every clinic's events."),
    )
    url = models.URLField(
        _("URL"),
        max_length=500,
        validators=[validate_webhook_url],
        help_text=_("An https:// address that accepts POST requests with a JSON body. Plain http is refused."),
    )
    description = models.CharField(_("description"), max_length=200, blank=True)
    secret = models.CharField(_("signing secret"), max_length=64, default=new_secret, editable=False)
    on_backup = models.BooleanField(_("backup events"), default=True)
    on_restore = models.BooleanField(_("restore events"), default=True)
    on_drill = models.BooleanField(_("drill events"), default=True)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    created_by = models.CharField(_("created by"), max_length=254, blank=True, editable=False)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.url

    def listens_to(self, kind: str) -> bool:
        """Whether this endpoint wants events of ``kind`` (backup, restore, drill; a test always)."""
        return kind == "test" or bool(getattr(self, f"on_{kind}", False))


class WebhookDelivery(models.Model):
    """One event for one endpoint: its JSON body, its attempts, and how the last one went."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    class Failure(models.TextChoices):
        """Why the last attempt got no HTTP answer, one wording per kind, in words a clinic may see
        (the detail is in ``last_error``, which only the platform sees). A clinic's endpoint must
        be a public address (else ``refused``): these kinds tell nothing of the worker's network.
        The time-out's wording names the seconds (``backups.admin.clinic_webhooks.outcome_text``)."""

        NONE = "", _("none")
        NOT_FOUND = "not_found", _("no answer: the address could not be found")
        CONNECTION_REFUSED = "conn_refused", _("no answer: the connection was refused")
        TIMEOUT = "timeout", _("no answer in time")
        TLS = "tls", _("no answer: the secure connection failed (its certificate was not accepted)")
        NETWORK = "network", _("no answer: the endpoint could not be reached or did not answer in time")
        REFUSED = "refused", _("not sent: the address is not allowed (it must be a public https:// address)")
        INACTIVE = "inactive", _("not sent: the endpoint was deactivated")

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("endpoint")
    )
    event = models.CharField(_("event"), max_length=40)
    event_id = models.UUIDField(_("event id"), default=uuid.uuid4, editable=False)
    payload = models.JSONField(_("payload"), default=dict)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    last_response_code = models.PositiveSmallIntegerField(_("last response code"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    failure = models.CharField(_("failure"), max_length=20, choices=Failure.choices, default="", blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=Q(status="pending")),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"
