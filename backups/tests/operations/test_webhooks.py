"""Signed webhooks, checked by a real HTTP receiver on 127.0.0.1 that verifies every signature
with the scheme the README documents: events, retries, the console's endpoint pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_tenants.utils import schema_context

from backups import tasks
from backups.models import Backup, JobStatus
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import drills, webhooks
from backups.permissions import CLINIC_ADMINS_GROUP
from backups.services.backup import backup_request
from backups.signals import backup_finished
from backups.tests.helpers import corrupt, free_port, logged_in, make_backup
from backups.tests.operations.helpers import ENDPOINTS, attempted, endpoint, verified

pytestmark = pytest.mark.django_db


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
        requested = backup_request(clinic="clinica", enqueue=False)
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
        requested = backup_request(clinic="clinica", enqueue=False)
        assert tasks.run_backup(requested.pk) == JobStatus.SUCCEEDED


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
