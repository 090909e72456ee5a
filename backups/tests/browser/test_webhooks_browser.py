"""Webhooks in a real browser, as a clinic administrator adds one (in Spanish): the signing secret
is on the endpoint's page and in no cookie, and "Send a test event" queues the event without the
page ever opening a connection to the endpoint (its delivery by a worker is tested in test_webhooks)."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.db import connection

from backups.models import WebhookDelivery, WebhookEndpoint
from backups.tests.browser.helpers import Shots
from conftest import log_in

CLINIC = "clinica"
URL = "https://hooks.example.com/respaldo"


def test_a_clinic_admin_adds_an_endpoint_sees_its_secret_and_queues_a_test_event(web_server, browser):
    base = f"http://{CLINIC}.localhost:{web_server}"
    shots = Shots("es-ES")
    context = browser.new_context(locale="es-ES", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, f"{base}/admin/", "admin", "admin")
        page.goto(f"{base}/admin/backups/webhookendpoint/add/")
        page.fill("#id_url", URL)
        page.fill("#id_description", "Recepción")
        page.click("input[name=_save]")
        page.wait_for_url("**/admin/backups/webhookendpoint/*/change/**")
        endpoint = WebhookEndpoint.objects.get(url=URL, clinic__schema_name=CLINIC)
        text = page.inner_text("body")
        assert endpoint.secret in text and "secreto" in text.lower()
        assert all(endpoint.secret not in cookie["value"] for cookie in context.cookies())
        shots(page, "webhook-secret")

        page.click("form.respaldo-webhook-test button[type=submit]")
        page.wait_for_selector(".messagelist")
        assert "en cola" in page.inner_text(".messagelist").lower()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert delivery.status == WebhookDelivery.Status.PENDING and delivery.attempts == 0  # not sent by the page
        page.reload()
        assert "Pendiente" in page.inner_text("body")
        shots(page, "webhook-queued")
        shutil.copy(
            sorted(shots.folder.glob("*-webhook-queued.png"))[-1],
            Path(settings.BASE_DIR) / "docs/screenshots/webhook-es.png",
        )
    finally:
        context.close()
        connection.set_schema_to_public()
        WebhookDelivery.objects.filter(endpoint__url=URL).delete()
        WebhookEndpoint.objects.filter(url=URL).delete()
