"""Signed webhooks, checked by a real HTTP receiver on 127.0.0.1 that verifies every signature
with the scheme the README documents."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tenants.utils import schema_context

from backups import services, tasks
from backups.models import Backup, JobStatus
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import drills, webhooks
from backups.permissions import CLINIC_ADMINS_GROUP
from backups.signals import backup_finished
from backups.tests.helpers import corrupt, free_port, logged_in, make_backup
from clinics.models import Clinic

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/backups/webhookendpoint/"


class Receiver:
    """An HTTP server in a thread that records each request and answers the next queued code (else 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def verify_request(self, request, client_address) -> bool:
                receiver.connections += 1  # every TCP connection accepted, request or not
                return True

        self.connections = 0
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Deliveries handed to the workers (recorded instead of queued in django-q2)."""
    ids: list[int] = []
    monkeypatch.setattr(webhooks, "enqueue", ids.append)
    return ids


def verified(request: dict, secret: str, *, tolerance: int = 300) -> dict:
    """The JSON body of a request whose signature checks out, as the README tells a receiver to check it."""
    header = request["headers"]["X-Respaldo-Signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp, signature = int(parts["t"]), parts["v1"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature), "bad signature"
    assert abs(time.time() - timestamp) <= tolerance, "stale timestamp"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["User-Agent"] == "Respaldo-Webhooks/1"
    body = json.loads(request["body"])
    assert request["headers"]["X-Respaldo-Event"] == body["event"]
    assert request["headers"]["X-Respaldo-Delivery"] == body["event_id"]
    return body


def endpoint(url: str, schema: str | None = "clinica", **fields) -> WebhookEndpoint:
    clinic = Clinic.objects.get(schema_name=schema) if schema else None
    return WebhookEndpoint.objects.create(clinic=clinic, url=url, **fields)


def test_a_backup_event_reaches_the_clinics_and_the_platforms_endpoints_signed(
    receiver, queued, django_capture_on_commit_callbacks
):
    own, platform = endpoint(receiver.url), endpoint(receiver.url + "/platform", schema=None)
    endpoint(receiver.url + "/other", schema="bienestar")
    endpoint(receiver.url + "/off", active=False)
    endpoint(receiver.url + "/no-backups", on_backup=False)
    backup = make_backup("clinica")
    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=Backup, backup=backup)
    deliveries = WebhookDelivery.objects.filter(pk__in=queued).order_by("endpoint_id")
    assert [d.endpoint_id for d in deliveries] == [own.pk, platform.pk]
    for pk in queued:
        assert tasks.deliver_webhook(pk) == "delivered"
    assert sorted(r["path"] for r in receiver.requests) == ["/hook", "/hook/platform"]
    for request in receiver.requests:
        body = verified(request, own.secret if request["path"] == "/hook" else platform.secret)
        assert body["event"] == "backup.succeeded" and body["clinic"]["schema"] == "clinica"
        assert body["backup"]["id"] == backup.pk and body["backup"]["sha256"] == backup.sha256
        assert body["backup"]["size"] == backup.size and body["backup"]["format"] == "pg"
        assert body["backup"]["error"] is None
        assert "storage_name" not in request["body"].decode() and own.secret not in request["body"].decode()
    delivered = WebhookDelivery.objects.get(endpoint=own)
    assert (delivered.status, delivered.attempts, delivered.last_response_code) == ("delivered", 1, 200)
    assert delivered.delivered_at is not None and delivered.next_attempt_at is None
    assert tasks.deliver_webhook(delivered.pk) == "skipped"  # never twice
    assert len(receiver.requests) == 2


def test_a_failed_drill_is_announced_with_its_reason_in_english(receiver, queued, django_capture_on_commit_callbacks):
    hook = endpoint(receiver.url, on_backup=False, on_restore=False)
    backup = make_backup("clinica")
    corrupt(backup)
    with django_capture_on_commit_callbacks(execute=True):
        drilled = drills.drill(backup)
    assert drilled.drill_status == "failed"
    (delivery,) = WebhookDelivery.objects.filter(pk__in=queued)
    webhooks.deliver(delivery.pk)
    (request,) = receiver.requests
    body = verified(request, hook.secret)
    assert body["event"] == "drill.failed" and body["clinic"]["id"] == backup.clinic_id
    assert body["drill"]["status"] == "failed" and body["backup"]["id"] == backup.pk
    assert body["drill"]["error"]["code"] in {"tampered", "damaged", "archive_changed"}
    assert body["drill"]["error"]["message"].isascii() and body["drill"]["error"]["message"]


def test_a_refused_delivery_is_retried_with_backoff_until_it_succeeds(
    receiver, queued, django_capture_on_commit_callbacks
):
    hook = endpoint(receiver.url)
    receiver.codes = [500, 503]
    backup = make_backup("clinica")
    with django_capture_on_commit_callbacks(execute=True):
        backup_finished.send(sender=Backup, backup=backup)
    (pk,) = queued
    start = timezone.now()
    assert tasks.deliver_webhook(pk) == "pending"
    delivery = WebhookDelivery.objects.get(pk=pk)
    assert (delivery.attempts, delivery.last_response_code, delivery.last_error) == (1, 500, "HTTP 500")
    assert start + timedelta(seconds=55) < delivery.next_attempt_at < start + timedelta(seconds=70)
    assert webhooks.deliver_due(start + timedelta(seconds=30)) == 0  # not yet
    second = start + timedelta(minutes=1, seconds=5)
    assert webhooks.deliver_due(second) == 1
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_response_code, delivery.status) == (2, 503, "pending")
    assert delivery.next_attempt_at == second + timedelta(minutes=5)
    assert webhooks.deliver_due(second + timedelta(minutes=4)) == 0
    assert webhooks.deliver_due(second + timedelta(minutes=5)) == 1
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_response_code, delivery.status) == (3, 200, "delivered")
    assert delivery.last_error == "" and delivery.next_attempt_at is None
    bodies = [verified(request, hook.secret) for request in receiver.requests]
    assert len(bodies) == 3 and len({b["event_id"] for b in bodies}) == 1  # the same event, retried


def test_a_delivery_gives_up_after_six_attempts(receiver):
    hook = endpoint(receiver.url)
    receiver.codes = [500] * 10
    delivery = WebhookDelivery.objects.create(
        endpoint=hook, event="backup.failed", payload={"event": "backup.failed"}, next_attempt_at=timezone.now()
    )
    now, waits = timezone.now(), []
    for _ in range(8):
        webhooks.deliver_due(now)
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            waits.append(round((delivery.next_attempt_at - now).total_seconds() / 60))
            now = delivery.next_attempt_at
    assert waits == [1, 5, 25, 125, 625]
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 6, None)
    assert len(receiver.requests) == 6


def test_a_failing_endpoint_never_fails_the_job(receiver, monkeypatch, django_capture_on_commit_callbacks):
    endpoint(receiver.url)
    endpoint(f"http://127.0.0.1:{free_port()}/nobody-listens")
    receiver.codes = [500]
    monkeypatch.setattr(webhooks, "enqueue", tasks.deliver_webhook)  # delivered right away, inside the job's path
    with django_capture_on_commit_callbacks(execute=True):
        requested = services.backup_request(clinic="clinica", enqueue=False)
        assert tasks.run_backup(requested.pk) == JobStatus.SUCCEEDED
    assert Backup.objects.get(pk=requested.pk).status == JobStatus.SUCCEEDED
    outcomes = sorted((d.last_response_code or 0, d.status) for d in WebhookDelivery.objects.all())
    assert outcomes == [(0, "pending"), (500, "pending")]
    refused = WebhookDelivery.objects.get(last_response_code__isnull=True)
    assert "Connection" in refused.last_error or "refused" in refused.last_error.lower()

    def broken(*args, **kwargs):
        raise RuntimeError("the endpoints table is gone")

    monkeypatch.setattr(webhooks, "endpoints_for", broken)
    monkeypatch.setattr(webhooks, "envelope", broken)
    with django_capture_on_commit_callbacks(execute=True):
        requested = services.backup_request(clinic="clinica", enqueue=False)
        assert tasks.run_backup(requested.pk) == JobStatus.SUCCEEDED


def attempted(hook: WebhookEndpoint, event: str = "test") -> WebhookDelivery:
    """One delivery to ``hook``, attempted now as a worker would; returns it as recorded."""
    event_id = uuid.uuid4()
    delivery = WebhookDelivery.objects.create(
        endpoint=hook,
        event=event,
        event_id=event_id,
        payload={"event": event, "event_id": str(event_id)},
        next_attempt_at=timezone.now(),
    )
    webhooks.deliver(delivery.pk)
    delivery.refresh_from_db()
    return delivery


def test_a_clinic_endpoint_never_reaches_a_private_address():
    hook = endpoint("https://10.0.0.1/hook")
    delivery = attempted(hook)
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "non-public address" in delivery.last_error and delivery.last_response_code is None


def test_only_https_urls_are_accepted(settings):
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = False
    for url in [
        "http://example.com/hook",
        "http://127.0.0.1:8000/hook",
        "ftp://example.com/",
        "https://u:p@x.example/",
    ]:
        with pytest.raises(ValidationError):
            WebhookEndpoint(url=url).full_clean()
    WebhookEndpoint(url="https://hooks.example.com/respaldo").full_clean()
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    WebhookEndpoint(url="http://127.0.0.1:8000/hook").full_clean()
    WebhookEndpoint(url="http://localhost/hook").full_clean()
    with pytest.raises(ValidationError, match="https://"):
        WebhookEndpoint(url="http://example.com/hook").full_clean()


def form(url: str) -> dict:
    return {"url": url, "description": "ERP", "on_backup": "on", "on_restore": "on", "on_drill": "on", "active": "on"}


def test_the_console_adds_an_endpoint_and_shows_its_secret(receiver):
    client = logged_in("admin", "admin")
    refused = client.post(f"{ENDPOINTS}add/", form("http://example.com/hook"))
    assert refused.status_code == 200 and "must start with https://" in refused.content.decode()
    assert not WebhookEndpoint.objects.exists()

    added = client.post(f"{ENDPOINTS}add/", form(receiver.url), follow=True)
    hook = WebhookEndpoint.objects.get()
    assert hook.clinic.schema_name == "clinica" and hook.created_by == "admin" and len(hook.secret) == 64
    assert hook.secret in added.content.decode()
    page = client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode()
    assert hook.secret in page and "Send a test event" in page

    assert client.get(f"{ENDPOINTS}{hook.pk}/test/").status_code == 405
    assert not receiver.requests


def test_a_test_event_is_queued_never_sent_from_the_web_request(receiver, queued, django_capture_on_commit_callbacks):
    client = logged_in("admin", "admin")
    hook = endpoint(receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        tested = client.post(f"{ENDPOINTS}{hook.pk}/test/", follow=True)
    assert tested.redirect_chain[-1][0] == f"{ENDPOINTS}{hook.pk}/change/"
    assert receiver.connections == 0 and not receiver.requests  # the web request opened no socket to it
    page = tested.content.decode()
    assert f"Test event queued for {receiver.url}" in page
    delivery = WebhookDelivery.objects.get()
    assert queued == [delivery.pk] and (delivery.event, delivery.status, delivery.attempts) == ("test", "pending", 0)
    assert 'class="respaldo-webhook-deliveries"' in page and "<td>Pending</td>" in page

    assert tasks.deliver_webhook(delivery.pk) == "delivered"  # the worker
    (request,) = receiver.requests
    body = verified(request, hook.secret)
    assert body["event"] == "test" and body["clinic"]["schema"] == "clinica"
    page = client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode()
    assert "<td>Delivered</td><td>1</td><td>HTTP 200</td>" in page

    receiver.codes = [500]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"{ENDPOINTS}{hook.pk}/test/")
    assert tasks.deliver_webhook(queued[-1]) == "failed"  # a test is never retried, by the task or the dispatcher
    assert WebhookDelivery.objects.get(last_response_code=500).next_attempt_at is None
    assert "<td>Failed</td><td>1</td><td>HTTP 500</td>" in client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(ENDPOINTS, {"action": "send_test_events", "_selected_action": [hook.pk]})
    assert len(queued) == 3 and len(receiver.requests) == 2  # the list action queues too


def cookie_text(cookies) -> str:
    """Every cookie's value, and what the messages cookie holds decoded (it is signed and compressed)."""
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.http import HttpRequest

    texts = []
    for morsel in cookies.values():
        texts.append(morsel.value)
        if morsel.key == CookieStorage.cookie_name and morsel.value:
            texts += [str(message) for message in CookieStorage(HttpRequest())._decode(morsel.value) or []]
    return "\n".join(texts)


def test_the_signing_secret_never_travels_in_a_cookie():
    client = logged_in("admin", "admin")
    for button in ("_save", "_continue", "_addanother"):
        added = client.post(f"{ENDPOINTS}add/", {**form(f"https://hooks.example.com/{button}"), button: "1"})
        hook = WebhookEndpoint.objects.get(url=f"https://hooks.example.com/{button}")
        assert added.status_code == 302 and "signing secret" in cookie_text(added.cookies)  # the message is there
        assert hook.secret not in cookie_text(added.cookies) and hook.secret not in str(added)
        landed = client.get(added["Location"])
        assert hook.secret not in cookie_text(landed.cookies) and hook.secret not in cookie_text(client.cookies)
        if button == "_addanother":
            assert "Its signing secret is on the endpoint" in landed.content.decode()
            assert added["Location"].endswith("/add/")
        else:  # the endpoint's own page, with the secret on it, once
            assert added["Location"] == f"{ENDPOINTS}{hook.pk}/change/"
            assert landed.content.decode().count(hook.secret) == 1
            assert "Copy its signing secret, below" in landed.content.decode()


def test_another_clinics_endpoint_is_404_and_not_listed(receiver):
    client = logged_in("admin", "admin")
    other = endpoint(receiver.url + "/ajeno", schema="bienestar")
    platform = endpoint(receiver.url + "/platform", schema=None)
    assert "/ajeno" not in client.get(ENDPOINTS).content.decode()
    for hook in (other, platform):
        for page in ("change", "delete", "history"):
            assert client.get(f"{ENDPOINTS}{hook.pk}/{page}/").status_code == 404
        assert client.post(f"{ENDPOINTS}{hook.pk}/test/").status_code == 404
        assert client.post(f"{ENDPOINTS}{hook.pk}/delete/", {"post": "yes"}).status_code == 404
    assert not receiver.requests and WebhookEndpoint.objects.count() == 2


def test_who_may_manage_endpoints():
    with schema_context("clinica"):
        codenames = set(Group.objects.get(name=CLINIC_ADMINS_GROUP).permissions.values_list("codename", flat=True))
    assert {"add_webhookendpoint", "change_webhookendpoint", "delete_webhookendpoint"} <= codenames
    assert logged_in("recepcion", "recepcion").get(ENDPOINTS).status_code == 403


def test_the_platform_has_its_own_endpoints_and_sees_every_delivery(receiver, queued):
    client = logged_in("superadmin", "superadmin", host="localhost")
    own = endpoint(receiver.url + "/for-clinica")
    client.post(f"{ENDPOINTS}add/", form(receiver.url + "/for-platform"))
    platform = WebhookEndpoint.objects.get(clinic__isnull=True)
    assert client.get(f"{ENDPOINTS}{own.pk}/change/").status_code == 404
    assert "/for-clinica" not in client.get(ENDPOINTS).content.decode()
    tested = client.post(f"{ENDPOINTS}{platform.pk}/test/", follow=True)
    assert "Test event queued" in tested.content.decode() and not receiver.requests
    webhooks.deliver(WebhookDelivery.objects.get(endpoint=platform).pk)
    assert "HTTP 200" in client.get(f"{ENDPOINTS}{platform.pk}/change/").content.decode()
    assert verified(receiver.requests[0], platform.secret)["clinic"] is None
    attempted(own)
    deliveries = client.get("/admin/backups/webhookdelivery/").content.decode()
    assert "/for-clinica" in deliveries and "/for-platform" in deliveries and "clinica" in deliveries


def test_the_endpoint_pages_speak_spanish(receiver, queued):
    client = logged_in("admin", "admin", language="es")
    hook = endpoint(receiver.url)
    page = client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode()
    assert "Enviar un evento de prueba" in page and "secreto de firma" in page.lower()
    tested = client.post(f"{ENDPOINTS}{hook.pk}/test/", follow=True).content.decode()
    assert f"Evento de prueba en cola para {receiver.url}" in tested
    closed = endpoint(f"http://127.0.0.1:{free_port()}/nobody")
    attempted(closed)
    page = client.get(f"{ENDPOINTS}{closed.pk}/change/").content.decode()
    assert "sin respuesta: se rechazó la conexión" in page
    refused = client.post(f"{ENDPOINTS}add/", form("http://example.com/hook")).content.decode()
    assert "La URL debe empezar por https://" in refused


def test_adding_and_removing_an_endpoint_is_in_the_clinics_audit_trail(receiver):
    from backups.models import AuditEntry

    client = logged_in("admin", "admin")
    client.post(f"{ENDPOINTS}add/", form(receiver.url))
    hook = WebhookEndpoint.objects.get()
    added = AuditEntry.objects.get(action="webhook_added")
    assert (added.clinic.schema_name, added.actor, added.details["url"]) == ("clinica", "admin", receiver.url)
    assert client.post(f"{ENDPOINTS}{hook.pk}/delete/", {"post": "yes"}).status_code == 302
    removed = AuditEntry.objects.get(action="webhook_removed")
    assert (removed.details["endpoint"], removed.actor) == (hook.pk, "admin")
    assert not WebhookEndpoint.objects.exists()


def test_the_endpoint_list_shows_each_last_delivery_in_a_fixed_number_of_queries():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = logged_in("admin", "admin")

    def add(n: int) -> None:
        hook = endpoint(f"https://hooks{n}.example.com/in")
        WebhookDelivery.objects.create(endpoint=hook, event="test", status="failed", last_response_code=500 + n)
        WebhookDelivery.objects.create(endpoint=hook, event="test", status="delivered", last_response_code=200 + n)

    add(0)
    with CaptureQueriesContext(connection) as one:
        assert "HTTP 200" in client.get(ENDPOINTS).content.decode()
    for n in range(1, 6):
        add(n)
    with CaptureQueriesContext(connection) as six:
        page = client.get(ENDPOINTS).content.decode()
    assert all(f"HTTP {200 + n}" in page for n in range(6)) and "HTTP 500" not in page  # the newest of each
    assert len(six.captured_queries) == len(one.captured_queries)


# --- One attempt: a total deadline, the address checked is the address used -----------------------


class Trickler:
    """A TCP server in a thread that reads a request, then answers one byte every ``interval``
    seconds (a status line, then a header that never ends) until the client goes away or
    ``give_up`` seconds pass."""

    def __init__(self, interval: float = 0.5, give_up: float = 30.0) -> None:
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"
        self.interval, self.give_up = interval, give_up
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nX-Trickle: "
            started = time.monotonic()
            while time.monotonic() - started < self.give_up:
                try:
                    conn.sendall(answer[self.sent : self.sent + 1] if self.sent < len(answer) else b"a")
                except OSError:
                    return  # the client hung up
                self.sent += 1
                time.sleep(self.interval)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(35)


def test_a_trickling_endpoint_is_cut_at_the_total_deadline(settings, monkeypatch):
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    monkeypatch.setattr(webhooks, "TIMEOUT", 2)  # each read gets a byte within 0.5 s: only a total deadline ends it
    trickler = Trickler(interval=0.5)
    try:
        started = time.monotonic()
        delivery = attempted(endpoint(trickler.url), event="backup.succeeded")
        took = time.monotonic() - started
    finally:
        trickler.close()
    assert took < 8, f"the attempt took {took:.1f} s: the deadline is per read, not total"
    assert trickler.sent >= 3  # bytes kept coming: no single read waited out a per-read time-out
    assert (delivery.status, delivery.attempts, delivery.last_response_code) == ("pending", 1, None)
    assert "timed out" in delivery.last_error and delivery.failure == "timeout"  # a time-out, retried later


class Listener:
    """A TCP listener in a thread that records each connection it accepts, then closes it."""

    def __init__(self) -> None:
        self.connections: list[tuple] = []
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, address = self.socket.accept()
            except OSError:
                return
            self.connections.append(address)
            conn.close()

    def close(self) -> None:
        self.socket.close()
        self.thread.join(5)


PUBLIC = "93.184.215.14"  # a globally routable address (no listener of ours behind it)


def test_a_rebinding_name_never_reaches_a_local_listener(monkeypatch):
    """The resolver answers a public address, then 127.0.0.1 to whoever asks next (as a
    rebinding DNS server does): the attempt connects to the address it checked, never asks twice."""
    monkeypatch.setattr(webhooks, "TIMEOUT", 1)
    listener, real, answers = Listener(), socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        address = "127.0.0.1" if answers else PUBLIC
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        hook = endpoint(f"https://rebind.example:{listener.port}/hook")
        for _ in range(3):
            answers.clear()
            delivery = attempted(hook, event="backup.succeeded")
            assert answers == [PUBLIC]  # asked once, and that answer was checked
            assert delivery.status == "pending" and delivery.failure in ("timeout", "conn_refused", "network"), (
                delivery.last_error
            )
    finally:
        listener.close()
    assert not listener.connections


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::808:808",  # local-use NAT64
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "::808:808",  # IPv4-compatible, even of a public address (deprecated, not routable)
        "::ffff:a00:1",  # IPv4-mapped 10.0.0.1
        "::ffff:7f00:1",  # IPv4-mapped 127.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
        "fec0::1",  # site-local
        "ff0e::1",  # global-scope multicast
        "ff02::1",  # link-local multicast
        "224.0.0.1",
        "239.1.1.1",
        "fe80::1",
        "fc00::1",
        "::1",
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "255.255.255.255",
    ],
)
def test_a_clinic_endpoint_refuses_every_address_that_is_not_globally_routable(address):
    assert not webhooks.is_public_address(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    delivery = attempted(endpoint(f"https://{host}/hook"))
    assert (delivery.status, delivery.failure) == ("failed", "refused") and "non-public" in delivery.last_error


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:808:808"]
)
def test_public_addresses_are_allowed(address):
    assert webhooks.is_public_address(ipaddress.ip_address(address))


def test_a_clinic_reads_one_wording_per_kind_of_failure_and_the_platform_the_detail(settings, monkeypatch):
    """A name that does not resolve, a refused port and a listener that never answers: the clinic
    reads each in plain words (never an exception's name or errno); the platform reads the
    same words with the recorded detail."""
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    monkeypatch.setattr(webhooks, "TIMEOUT", 2)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        closed = endpoint(f"http://127.0.0.1:{free_port()}/closed")
        filtered = endpoint(f"http://127.0.0.1:{silent.getsockname()[1]}/silent")
        nowhere = endpoint("https://nowhere.invalid/hook")  # .invalid never resolves (RFC 2606)
        refused_at, timed_out = attempted(closed, "backup.failed"), attempted(filtered, "backup.failed")
        not_found = attempted(nowhere, "backup.failed")
    finally:
        silent.close()
    assert (refused_at.failure, timed_out.failure, not_found.failure) == ("conn_refused", "timeout", "not_found")

    client = logged_in("admin", "admin")
    hooks = (closed, filtered, nowhere)
    pages = {hook.pk: client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode() for hook in hooks}
    rows = {pk: re.search(r"<td>Pending</td><td>1</td><td>([^<]*)</td>", page).group(1) for pk, page in pages.items()}
    assert rows == {
        closed.pk: "no answer: the connection was refused",
        filtered.pk: "no answer within 2 seconds",
        nowhere.pk: "no answer: the address could not be found",
    }
    listing = client.get(ENDPOINTS).content.decode()
    for page in [*pages.values(), listing]:
        assert "ConnectionRefused" not in page and "Errno" not in page and "timed out" not in page
        assert "cannot resolve" not in page and "NotFound" not in page
    for wording in rows.values():
        assert f"Pending · {wording}" in listing

    assert "ConnectionRefusedError" in refused_at.last_error and "timed out" in timed_out.last_error
    platform = logged_in("superadmin", "superadmin", host="localhost")
    deliveries = platform.get("/admin/backups/webhookdelivery/").content.decode()
    assert "no answer: the connection was refused (ConnectionRefusedError" in deliveries
    assert "no answer within 2 seconds (TimeoutError: timed out" in deliveries
    assert "no answer: the address could not be found (NotFound: cannot resolve nowhere.invalid" in deliveries
    detail = platform.get(f"/admin/backups/webhookdelivery/{timed_out.pk}/change/").content.decode()
    assert "timed out" in detail


def test_a_clinics_url_help_names_no_setting_the_platforms_does(settings):
    client = logged_in("admin", "admin")
    page = client.get(f"{ENDPOINTS}add/").content.decode()
    assert "An https:// address that accepts POST requests with a JSON body. Plain http is refused." in page
    assert "BACKUPS_" not in page
    platform = logged_in("superadmin", "superadmin", host="localhost")
    assert (
        "BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST" in platform.get("/admin/backups/webhookendpoint/add/").content.decode()
    )


def test_the_signing_secret_is_on_the_page_the_message_names(settings):
    client = logged_in("admin", "admin")
    data = {"url": "https://hooks.example/in", "on_backup": "on", "active": "on"}
    added = client.post(f"{ENDPOINTS}add/", data, follow=True)
    hook = WebhookEndpoint.objects.get(url="https://hooks.example/in")
    page = added.content.decode()
    assert added.redirect_chain[-1][0] == f"{ENDPOINTS}{hook.pk}/change/"
    assert (
        "Copy its signing secret, below, into the receiving service" in page and f"<code>{hook.secret}</code>" in page
    )
    another = client.post(f"{ENDPOINTS}add/", {**data, "url": "https://hooks.example/two", "_addanother": "1"})
    second = WebhookEndpoint.objects.get(url="https://hooks.example/two")
    assert "signing secret is on the endpoint" in client.get(another["Location"]).content.decode()
    assert f"<code>{second.secret}</code>" in client.get(f"{ENDPOINTS}{second.pk}/change/").content.decode()


def certificate(tmp_path, name: str) -> tuple[str, str, str]:
    """A throwaway authority and a server certificate for ``name``: (CA file, cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def build(subject: str, key, issuer: str, issuer_key, *, ca: bool):
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("Respaldo test CA", ca_key, "Respaldo test CA", ca_key, ca=True)
    cert = build(name, key, "Respaldo test CA", ca_key, ca=False)
    files = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tuple(str(f) for f in files)


def test_https_connects_to_the_checked_address_and_verifies_the_urls_host_name(tmp_path, monkeypatch):
    """hooks.example resolves (once) to 127.0.0.1, where a TLS receiver holds a certificate for
    hooks.example: the request goes there, with hooks.example as TLS server name and Host; a name
    the certificate does not hold is refused by the certificate check."""
    ca_file, cert_file, key_file = certificate(tmp_path, "hooks.example")
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the system's authorities, for this test: ours
    receiver, names = Receiver(), []
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)
    server_side.sni_callback = lambda sock, name, context: names.append(name)
    receiver.server.socket = server_side.wrap_socket(receiver.server.socket, server_side=True)
    port, real = receiver.server.server_address[1], socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host in ("hooks.example", "other.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    try:
        good = endpoint(f"https://hooks.example:{port}/in", schema=None)  # the platform's may be internal
        delivered = attempted(good)
        wrong = attempted(endpoint(f"https://other.example:{port}/in", schema=None))
    finally:
        receiver.close()
    assert (delivered.status, delivered.last_response_code) == ("delivered", 200), delivered.last_error
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.example:{port}" and names[0] == "hooks.example"
    verified(request, good.secret)
    assert wrong.status == "failed" and "certificate" in wrong.last_error.lower() and wrong.failure == "tls"
