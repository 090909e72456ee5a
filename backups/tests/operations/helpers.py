"""Helpers shared by the operations tests: webhook endpoints and their deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.utils import timezone

from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import webhooks
from clinics.models import Clinic

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
        # A connection reset between the poll saying "ready" and accept() would block a blocking
        # accept() for good (then shutdown() waits forever: seen in CI): never wait over a second.
        self.server.socket.settimeout(1.0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    """A webhook endpoint of ``schema`` (of the platform when None) to ``url``."""
    clinic = Clinic.objects.get(schema_name=schema) if schema else None
    return WebhookEndpoint.objects.create(clinic=clinic, url=url, **fields)


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
