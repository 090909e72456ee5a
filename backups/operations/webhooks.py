"""Signed webhooks: backup, restore and drill events POSTed as JSON to registered endpoints.

An endpoint belongs to a clinic (its events only) or to the platform (``clinic`` empty: every
clinic's events). When a job's row is final (``backups.signals``), the receivers
make one :class:`~backups.models.webhooks.WebhookDelivery` per matching active endpoint, after
the surrounding transaction commits, and enqueue ``backups.tasks.deliver_webhook`` for each.

Each attempt POSTs the stored JSON body with::

    Content-Type: application/json
    User-Agent: Respaldo-Webhooks/1
    X-Respaldo-Event: backup.succeeded
    X-Respaldo-Delivery: <event id, a UUID; the same on every retry>
    X-Respaldo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

A 2xx answer within :data:`TIMEOUT` seconds is delivered. That is one deadline for the whole
attempt (connect, TLS handshake, sending, the answer's status line and headers), not a time-out
per socket read: an endpoint that answers a byte now and then is cut off at the deadline like
one that never answers. Anything else (another code, a redirect, a time-out, a refused
connection) is recorded (``last_response_code``; ``last_error`` with the detail, which only the
platform sees; ``failure``, the kind a clinic sees: one wording for every network failure, so
that an endpoint cannot be used to map the worker's network) and tried again after
:data:`BACKOFF` (1, 5, 25, 125, 625 minutes) by :func:`deliver_due`, which the dispatcher runs
every minute, until :data:`MAX_ATTEMPTS` attempts have failed. A test event is tried once.
Deliveries are made by the workers only, never in a web request ("Send a test event" queues
one), and one endpoint receives one delivery at a time (an advisory lock per endpoint; a
delivery that finds its endpoint busy stays pending as it was, for the dispatcher). A delivery
never fails a job: receivers and the commit hook log and swallow every error, like the email
receivers of ``backups.operations.notify``.

What a body carries: the event, its id, when it happened, the clinic (id, schema, name) and
the job's public fields (id, status, kind and format or outcome, size, SHA-256, error code and
English message). Never a secret, a storage path or a user's address.

SSRF: an endpoint URL makes this server send requests where someone else chose. URLs must be
``https://`` (plain ``http://`` only to localhost with ``BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST``,
for tests); redirects are never followed. Each attempt resolves the host once
(:func:`resolve`); for a clinic's endpoint every address must be globally routable
(:func:`is_public_address`: not private, loopback, link-local such as 169.254.169.254,
reserved, multicast or site-local, and IPv6 addresses that carry an IPv4 one, NAT64, 6to4,
Teredo or IPv4-mapped, are judged by that one; loopback only with that setting), or the
attempt is refused and not retried. The attempt then connects to those very addresses (the
Host header and the TLS server name, against which the certificate is verified, still come
from the URL), so a DNS answer that changes after the check (rebinding) is never used.
Platform endpoints, registered by the platform's own administrators, may name internal hosts.
The worker connects directly (no ``HTTPS_PROXY``); an egress firewall that blocks internal
networks is still a sensible second line. The name lookup itself is not under the deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from backups import signals
from backups.conf import conf
from backups.jobs.locks import WEBHOOK_ENDPOINTS, advisory_xact_lock
from backups.models import Backup, JobStatus, Restore
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint, is_loopback_host, validate_webhook_url
from backups.operations.webhook_payloads import backup_fields, drill_fields, envelope, restore_fields
from backups.operations.webhook_transport import Deadline, PinnedHTTPConnection, PinnedHTTPSConnection

logger = logging.getLogger(__name__)

USER_AGENT = "Respaldo-Webhooks/1"
TIMEOUT = 10  # seconds per attempt in all: connect, TLS handshake, send and the answer's status and headers
MAX_ATTEMPTS = 6
BACKOFF = [timedelta(minutes=m) for m in (1, 5, 25, 125, 625)]  # the wait after attempt 1, 2, ...
DUE_PER_RUN = 20  # deliveries one dispatcher run tries at most
DUE_BUDGET = 40.0  # seconds one dispatcher run spends on deliveries at most
KINDS = ("backup", "restore", "drill")
TEST_EVENT = "test"


class Refused(Exception):
    """An attempt that must not be made (and will not be retried): the URL or its address."""


class NotFound(ConnectionError):
    """The endpoint's host name has no address (DNS)."""


def failure_kind(exc: BaseException) -> str:
    """Which ``WebhookDelivery.Failure`` an attempt's exception is (its detail goes to ``last_error``)."""
    if isinstance(exc, Refused):
        return WebhookDelivery.Failure.REFUSED
    if isinstance(exc, NotFound):
        return WebhookDelivery.Failure.NOT_FOUND
    if isinstance(exc, ConnectionRefusedError):
        return WebhookDelivery.Failure.CONNECTION_REFUSED
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return WebhookDelivery.Failure.TIMEOUT
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return WebhookDelivery.Failure.TLS
    return WebhookDelivery.Failure.NETWORK


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


# --- where an attempt may connect -------------------------------------------------------------

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: an IPv4 address in its last 32 bits
_NOT_PUBLIC = [
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated), ::, ::1
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("fec0::/10"),  # site-local (deprecated)
]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo client), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a clinic's endpoint may connect to ``address``: globally routable unicast only.

    IPv6 addresses that carry an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo) are judged by it
    too; IPv4-compatible, site-local and local-use NAT64 addresses, multicast and everything
    ``ipaddress`` does not call global are refused.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NOT_PUBLIC):
            return False
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return is_public_address(embedded)
    if address.is_multicast or address.is_private or address.is_reserved or address.is_link_local:
        return False
    return address.is_global


def resolve(endpoint: WebhookEndpoint) -> list[tuple[int, tuple[Any, ...]]]:
    """Check the endpoint's URL, resolve its host once and return where an attempt may connect.

    Returns ``(family, socket address)`` pairs; the attempt connects to these and nowhere else,
    so the address checked is the address used (a DNS answer that changes later is never asked
    for). A clinic's endpoint must resolve to public addresses only (:class:`Refused`); the
    platform's may name internal hosts.
    """
    try:
        validate_webhook_url(endpoint.url)
    except ValidationError as exc:
        raise Refused(" ".join(str(m) for m in exc.messages)) from None
    parts = urlsplit(endpoint.url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise NotFound(f"cannot resolve {host}: {exc}") from None
    targets = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if endpoint.clinic_id is not None:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            loopback_allowed = address.is_loopback and is_loopback_host(host) and conf.webhooks_allow_http_localhost
            if not is_public_address(address) and not loopback_allowed:
                raise Refused(f"refused: {host} resolves to a non-public address ({address})")
        targets.append((family, sockaddr))
    if not targets:
        raise NotFound(f"cannot resolve {host}: no IPv4 or IPv6 address")
    return targets


def check_destination(endpoint: WebhookEndpoint) -> None:
    """Raise :class:`Refused` for a URL no longer allowed or (clinic endpoints) a non-public address."""
    resolve(endpoint)


# --- one attempt, within one deadline (the transport: backups.operations.webhook_transport) ---


def post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> int:
    """POST the delivery's body once, to the address checked, within :data:`TIMEOUT` seconds in
    all; returns the HTTP status (raises on no answer or a refusal). Redirects are answers,
    never followed."""
    targets = resolve(endpoint)
    deadline = Deadline(TIMEOUT)
    parts = urlsplit(endpoint.url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    connection_class = PinnedHTTPSConnection if https else PinnedHTTPConnection
    connection = connection_class(parts.hostname or "", port, targets, deadline)
    body = body_bytes(delivery.payload)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Respaldo-Event": delivery.event,
                "X-Respaldo-Delivery": str(delivery.event_id),
                "X-Respaldo-Signature": signature_header(endpoint.secret, body),
                "Connection": "close",
            },
        )
        return connection.getresponse().status  # the status line and headers; the body is not read
    finally:
        connection.close()


def record(
    delivery: WebhookDelivery, code: int | None, error: str, *, retry: bool, now: datetime, failure: str = ""
) -> None:
    """Write one attempt's outcome: delivered, scheduled again with backoff, or failed for good."""
    delivery.attempts += 1
    delivery.last_response_code = code
    delivery.last_error = error[:2000]
    delivery.failure = failure if code is None and error else ""
    if code is not None and 200 <= code < 300:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", timezone.now(), None
    elif retry and delivery.attempts < MAX_ATTEMPTS:
        delivery.next_attempt_at = now + BACKOFF[delivery.attempts - 1]
    else:
        delivery.status, delivery.next_attempt_at = "failed", None
    fields = ["attempts", "last_response_code", "last_error", "failure", "status", "delivered_at", "next_attempt_at"]
    delivery.save(update_fields=fields)


def attempt(delivery: WebhookDelivery, *, now: datetime) -> None:
    """One attempt at a (locked) pending delivery; never raises. A test event is never retried."""
    endpoint, retry = delivery.endpoint, delivery.event != TEST_EVENT
    if not endpoint.active:
        record(delivery, None, "the endpoint was deactivated", retry=False, now=now, failure="inactive")
        return
    code, error, failure = None, "", ""
    try:
        code = post(endpoint, delivery)
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except Refused as exc:
        retry, error, failure = False, str(exc), "refused"
    except Exception as exc:  # a time-out, a refused connection, a TLS error: tried again later
        error, failure = f"{type(exc).__name__}: {exc}", failure_kind(exc)
    if error:
        logger.warning("Webhook delivery #%s to endpoint #%s: %s", delivery.pk, endpoint.pk, error)
    record(delivery, code, error, retry=retry, now=now, failure=failure)


def endpoint_free(endpoint_id: int) -> bool:
    """Take the endpoint's lock for the current transaction, if no other delivery holds it."""
    return advisory_xact_lock(WEBHOOK_ENDPOINTS, endpoint_id)


def deliver(delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Attempt one pending delivery, if it is due-or-new and no one else holds it; returns it.

    The row stays locked (``skip_locked``) during the attempt, so the task and the dispatcher
    never send one delivery twice at once; and one delivery per endpoint runs at a time (an
    advisory lock on the endpoint): while another is being sent to the same endpoint, this one
    is left pending as it was, not attempted (the dispatcher takes it up again). Returns None
    when nothing was attempted.
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
        if not endpoint_free(delivery.endpoint_id):
            logger.info("Webhook delivery #%s postponed: endpoint #%s is busy", delivery.pk, delivery.endpoint_id)
            return None
        attempt(delivery, now=now)
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
    """Queue a ``test`` event for ``endpoint`` (tried once, by a worker); returns the pending delivery.

    Never sends anything itself: it runs in a web request, which must not wait on an endpoint.
    """
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
    transaction.on_commit(partial(enqueue, delivery.pk), robust=True)
    return delivery


# --- the audit trail of endpoints ---------------------------------------------------------------


def endpoint_audited(endpoint: WebhookEndpoint, *, added: bool, actor: str, address: str | None = None) -> None:
    """An audit entry for an endpoint added or removed (the clinic's trail, or the platform's)."""
    from backups.audit import audit
    from backups.models import AuditEntry

    audit(
        AuditEntry.Action.WEBHOOK_ADDED if added else AuditEntry.Action.WEBHOOK_REMOVED,
        clinic_id=endpoint.clinic_id,
        actor=actor,
        address=address,
        endpoint=endpoint.pk,
        url=endpoint.url,
    )
