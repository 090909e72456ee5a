"""Signed webhooks: backup, restore and drill events POSTed as JSON to registered endpoints.

An endpoint belongs to a clinic (its events only) or to the platform (``clinic`` empty: every
clinic's events). When a job's row is final (``backups.operations.signals``), the receivers
make one :class:`~backups.models_webhooks.WebhookDelivery` per matching active endpoint, after
the surrounding transaction commits, and enqueue ``backups.tasks.deliver_webhook`` for each.

Each attempt POSTs the stored JSON body with::

    Content-Type: application/json
    User-Agent: Respaldo-Webhooks/1
    X-Respaldo-Event: backup.succeeded
    X-Respaldo-Delivery: <event id, a UUID; the same on every retry>
    X-Respaldo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

A 2xx answer within :data:`TIMEOUT` seconds is delivered; anything else (another code, a
redirect, a time-out, a refused connection) is recorded (``last_response_code``,
``last_error``) and tried again after :data:`BACKOFF` (1, 5, 25, 125, 625 minutes) by
:func:`deliver_due`, which the dispatcher runs every minute, until :data:`MAX_ATTEMPTS`
attempts have failed. A delivery never fails a job: receivers and the commit hook log and
swallow every error, like the email receivers of ``backups.operations.notify``.

What a body carries: the event, its id, when it happened, the clinic (id, schema, name) and
the job's public fields (id, status, kind and format or outcome, size, SHA-256, error code and
English message). Never a secret, a storage path or a user's address.

SSRF: an endpoint URL makes this server send requests where someone else chose. URLs must be
``https://`` (plain ``http://`` only to localhost with ``BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST``,
for tests); redirects are never followed; a clinic's endpoint whose host resolves to a
non-public address (private, loopback, link-local such as 169.254.169.254, reserved) is
refused at each attempt (loopback only with that setting). Platform endpoints, registered by
the platform's own administrators, may name internal hosts. The check resolves the name
before the request connects, so a DNS answer that changes in between (rebinding) is not
covered: production deployments should also send the worker's outbound traffic through an
egress proxy or firewall that blocks internal networks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone, translation

from backups.conf import conf
from backups.exceptions import render
from backups.models import Backup, Job, JobStatus, Restore
from backups.models_webhooks import WebhookDelivery, WebhookEndpoint, is_loopback_host, validate_webhook_url
from backups.operations import signals

logger = logging.getLogger(__name__)

USER_AGENT = "Respaldo-Webhooks/1"
TIMEOUT = 10  # seconds per attempt
MAX_ATTEMPTS = 6
BACKOFF = [timedelta(minutes=m) for m in (1, 5, 25, 125, 625)]  # the wait after attempt 1, 2, ...
DUE_PER_RUN = 20  # deliveries one dispatcher run tries at most
DUE_BUDGET = 40.0  # seconds one dispatcher run spends on deliveries at most
KINDS = ("backup", "restore", "drill")
TEST_EVENT = "test"


class Refused(Exception):
    """An attempt that must not be made (and will not be retried): the URL or its address."""


# --- signatures ---------------------------------------------------------------------------


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed) for a stored payload."""
    return json.dumps(payload, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Respaldo-Signature`` value: ``t=<unix seconds>,v1=<hex signature>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


# --- what a body says ----------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def job_error(job: Job) -> dict[str, str] | None:
    """The job's error code and its message in English, or None."""
    if not (job.error_code or job.error):
        return None
    with translation.override("en"):
        return {"code": job.error_code or "error", "message": job.error_message()}


def drill_error(backup: Backup) -> dict[str, str] | None:
    """Why the backup's drill failed (code, English message), or None."""
    record = backup.drill_error or {}
    if not record:
        return None
    code = record.get("code") or "drill_failed"
    with translation.override("en"):
        return {"code": code, "message": render(record.get("message_id") or code, record.get("params"))}


def clinic_fields(clinic: Any) -> dict[str, Any] | None:
    """The clinic an event is about."""
    if clinic is None:
        return None
    return {"id": clinic.pk, "schema": clinic.schema_name, "name": clinic.name}


def backup_fields(backup: Backup) -> dict[str, Any]:
    """A backup's public fields."""
    return {
        "id": backup.pk,
        "status": backup.status,
        "kind": backup.kind,
        "format": backup.payload_format,
        "size": backup.size,
        "sha256": backup.sha256 or None,
        "requested_at": _iso(backup.requested_at),
        "finished_at": _iso(backup.finished_at),
        "error": job_error(backup),
    }


def restore_fields(restore: Restore) -> dict[str, Any]:
    """A restore's public fields."""
    return {
        "id": restore.pk,
        "status": restore.status,
        "outcome": restore.outcome or None,
        "backup_id": restore.backup_id,
        "safety_backup_id": restore.safety_backup_id,
        "requested_at": _iso(restore.requested_at),
        "finished_at": _iso(restore.finished_at),
        "error": job_error(restore),
    }


def drill_fields(backup: Backup) -> dict[str, Any]:
    """How a verification or restore drill of ``backup`` ended."""
    return {
        "status": "failed" if backup.drill_status == "failed" else "succeeded",
        "drilled_at": _iso(backup.drilled_at),
        "verified_at": _iso(backup.verified_at),
        "error": drill_error(backup) if backup.drill_status == "failed" else None,
    }


def envelope(event: str, clinic: Any, occurred_at: datetime | None, **data: Any) -> dict[str, Any]:
    """A body: event, its id, when, the clinic, then the event's own fields."""
    return {
        "event": event,
        "event_id": str(uuid.uuid4()),
        "occurred_at": _iso(occurred_at or timezone.now()),
        "clinic": clinic_fields(clinic),
        **data,
    }


# --- from signals to deliveries ----------------------------------------------------------------


def endpoints_for(clinic_id: int | None, kind: str) -> QuerySet[WebhookEndpoint]:
    """Active endpoints that receive ``kind`` events of the clinic: its own and the platform's."""
    if kind not in KINDS:
        raise ValueError(kind)
    owners = Q(clinic__isnull=True) | Q(clinic_id=clinic_id) if clinic_id else Q(clinic__isnull=True)
    return WebhookEndpoint.objects.filter(owners, active=True, **{f"on_{kind}": True}).order_by("pk")


def enqueue(delivery_id: int) -> None:
    """Hand one delivery to the workers (the dispatcher picks it up anyway if this fails)."""
    from django_q.tasks import async_task

    async_task("backups.tasks.deliver_webhook", delivery_id, task_name=f"webhook-{delivery_id}", group="webhooks")


def create_deliveries(clinic_id: int | None, kind: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """One pending delivery of ``payload`` per matching endpoint, each enqueued; never raises."""
    created: list[WebhookDelivery] = []
    try:
        now = timezone.now()
        for endpoint in endpoints_for(clinic_id, kind):
            created.append(
                WebhookDelivery.objects.create(
                    endpoint=endpoint,
                    event=payload["event"],
                    event_id=payload["event_id"],
                    payload=payload,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        for delivery in created:
            enqueue(delivery.pk)
    except Exception:
        logger.exception("Could not queue webhook deliveries of %s for clinic %s", payload.get("event"), clinic_id)
    return created


def queue_event(clinic: Any, kind: str, payload: dict[str, Any]) -> None:
    """Create the deliveries once the current transaction commits (at once outside one)."""
    transaction.on_commit(partial(create_deliveries, clinic.pk if clinic else None, kind, payload), robust=True)


def on_backup_finished(sender: Any, backup: Backup, **kwargs: Any) -> None:
    """A backup (any kind, safety backups too) succeeded or failed."""
    try:
        if backup.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            event = f"backup.{backup.status}"
            payload = envelope(event, backup.clinic, backup.finished_at, backup=backup_fields(backup))
            queue_event(backup.clinic, "backup", payload)
    except Exception:
        logger.exception("Could not prepare the webhook of backup #%s", backup.pk)


def on_restore_finished(sender: Any, restore: Restore, **kwargs: Any) -> None:
    """A restore succeeded or failed."""
    try:
        if restore.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            event = f"restore.{restore.status}"
            payload = envelope(event, restore.clinic, restore.finished_at, restore=restore_fields(restore))
            queue_event(restore.clinic, "restore", payload)
    except Exception:
        logger.exception("Could not prepare the webhook of restore #%s", restore.pk)


def on_drill_finished(sender: Any, backup: Backup, **kwargs: Any) -> None:
    """A verification or restore drill of a backup ended, well or not."""
    try:
        drill = drill_fields(backup)
        payload = envelope(f"drill.{drill['status']}", backup.clinic, None, drill=drill, backup=backup_fields(backup))
        queue_event(backup.clinic, "drill", payload)
    except Exception:
        logger.exception("Could not prepare the drill webhook of backup #%s", backup.pk)


def connect_receivers() -> None:
    """Listen to the operations' signals (idempotent)."""
    signals.backup_finished.connect(on_backup_finished, dispatch_uid="backups.webhooks.backup")
    signals.restore_finished.connect(on_restore_finished, dispatch_uid="backups.webhooks.restore")
    signals.drill_finished.connect(on_drill_finished, dispatch_uid="backups.webhooks.drill")


# --- one attempt -----------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (3xx, not delivered), never followed: it could point anywhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def check_destination(endpoint: WebhookEndpoint) -> None:
    """Raise :class:`Refused` for a URL no longer allowed or (clinic endpoints) a non-public address."""
    try:
        validate_webhook_url(endpoint.url)
    except ValidationError as exc:
        raise Refused(" ".join(str(m) for m in exc.messages)) from None
    if endpoint.clinic_id is None:
        return  # the platform's own administrators chose it
    parts = urlsplit(endpoint.url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        loopback_allowed = address.is_loopback and is_loopback_host(host) and conf.webhooks_allow_http_localhost
        if not address.is_global and not loopback_allowed:
            raise Refused(f"refused: {host} resolves to a non-public address ({address})")


def post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> int:
    """POST the delivery's body once; returns the HTTP status (raises on no answer or a refusal)."""
    check_destination(endpoint)
    body = body_bytes(delivery.payload)
    request = urllib.request.Request(  # noqa: S310 - check_destination allowed https (or http to localhost) only
        endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Respaldo-Event": delivery.event,
            "X-Respaldo-Delivery": str(delivery.event_id),
            "X-Respaldo-Signature": signature_header(endpoint.secret, body),
        },
    )
    try:
        with _opener.open(request, timeout=TIMEOUT) as response:
            response.read(65536)
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def record(delivery: WebhookDelivery, code: int | None, error: str, *, retry: bool, now: datetime) -> None:
    """Write one attempt's outcome: delivered, scheduled again with backoff, or failed for good."""
    delivery.attempts += 1
    delivery.last_response_code = code
    delivery.last_error = error[:2000]
    if code is not None and 200 <= code < 300:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", timezone.now(), None
    elif retry and delivery.attempts < MAX_ATTEMPTS:
        delivery.next_attempt_at = now + BACKOFF[delivery.attempts - 1]
    else:
        delivery.status, delivery.next_attempt_at = "failed", None
    fields = ["attempts", "last_response_code", "last_error", "status", "delivered_at", "next_attempt_at"]
    delivery.save(update_fields=fields)


def attempt(delivery: WebhookDelivery, *, now: datetime, retry: bool = True) -> None:
    """One attempt at a (locked) pending delivery; never raises."""
    endpoint = delivery.endpoint
    if not endpoint.active:
        record(delivery, None, "the endpoint was deactivated", retry=False, now=now)
        return
    code, error = None, ""
    try:
        code = post(endpoint, delivery)
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except Refused as exc:
        retry, error = False, str(exc)
    except Exception as exc:  # a time-out, a refused connection, a TLS error: tried again later
        error = f"{type(exc).__name__}: {exc}"
    if error:
        logger.warning("Webhook delivery #%s to endpoint #%s: %s", delivery.pk, endpoint.pk, error)
    record(delivery, code, error, retry=retry, now=now)


def deliver(delivery_id: int, now: datetime | None = None, *, retry: bool = True) -> WebhookDelivery | None:
    """Attempt one pending delivery, if it is due-or-new and no one else holds it; returns it.

    The row stays locked (``skip_locked``) during the request, so the task and the dispatcher
    never send one delivery twice at once.
    """
    now = now or timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id, status="pending")
            .first()
        )
        if delivery is None:
            return None
        attempt(delivery, now=now, retry=retry)
        return delivery


def deliver_due(now: datetime) -> int:
    """The dispatcher's step: attempt pending deliveries whose time has come; returns how many."""
    started, done = time.monotonic(), 0
    due = WebhookDelivery.objects.filter(status="pending", next_attempt_at__lte=now).order_by("next_attempt_at", "pk")
    for pk in list(due.values_list("pk", flat=True)[:DUE_PER_RUN]):
        if time.monotonic() - started > DUE_BUDGET:
            break
        if deliver(pk, now) is not None:
            done += 1
    return done


def send_test_event(endpoint: WebhookEndpoint, actor: str = "") -> WebhookDelivery:
    """Deliver a ``test`` event to ``endpoint`` now, once (no retries); returns the delivery."""
    payload = envelope(
        TEST_EVENT,
        endpoint.clinic,
        None,
        test={"message": "A test event from Respaldo: the signature and the address work.", "sent_by": actor},
    )
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event=TEST_EVENT, event_id=payload["event_id"], payload=payload, next_attempt_at=now
    )
    deliver(delivery.pk, now, retry=False)
    delivery.refresh_from_db()
    return delivery


# --- the audit trail of endpoints ---------------------------------------------------------------


def endpoint_audited(endpoint: WebhookEndpoint, *, added: bool, actor: str, address: str | None = None) -> None:
    """An audit entry for an endpoint added or removed (the clinic's trail, or the platform's)."""
    from backups.models import AuditEntry
    from backups.operations.audit import audit

    audit(
        AuditEntry.Action.WEBHOOK_ADDED if added else AuditEntry.Action.WEBHOOK_REMOVED,
        clinic_id=endpoint.clinic_id,
        actor=actor,
        address=address,
        endpoint=endpoint.pk,
        url=endpoint.url,
    )
