"""One delivery per endpoint at a time: two workers, each with its own database connection,
against one slow endpoint (committed rows: the workers' connections must see them)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.db import connection

from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import webhooks


class SlowReceiver:
    """An HTTP server in a thread that answers 200 after ``delay`` seconds and records how many
    requests it held at once."""

    def __init__(self, delay: float) -> None:
        self.requests, self.in_flight, self.most = 0, 0, 0
        lock, receiver = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.requests += 1
                    receiver.in_flight += 1
                    receiver.most = max(receiver.most, receiver.in_flight)
                time.sleep(delay)
                with lock:
                    receiver.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_two_deliveries_to_one_endpoint_never_run_at_once(live_db, settings):
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    receiver = SlowReceiver(delay=2.0)
    hook = WebhookEndpoint.objects.create(url=receiver.url)  # the platform's: every clinic's events
    try:
        pks = [
            WebhookDelivery.objects.create(endpoint=hook, event="backup.succeeded", payload={"n": n}).pk
            for n in range(2)
        ]
        barrier, results, errors = threading.Barrier(2), {}, []

        def worker(pk: int) -> None:
            try:
                barrier.wait(10)
                results[pk] = webhooks.deliver(pk)
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker, args=(pk,)) for pk in pks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert receiver.most == 1 and receiver.requests == 1  # one at a time
        (sent,) = [pk for pk, delivery in results.items() if delivery is not None]
        (postponed,) = [pk for pk in pks if pk != sent]
        assert WebhookDelivery.objects.get(pk=sent).status == "delivered"
        waiting = WebhookDelivery.objects.get(pk=postponed)  # postponed: not failed, not an attempt
        assert (waiting.status, waiting.attempts, waiting.last_error, waiting.failure) == ("pending", 0, "", "")

        assert webhooks.deliver(postponed) is not None  # the endpoint is free again: it goes
        assert WebhookDelivery.objects.get(pk=postponed).status == "delivered" and receiver.requests == 2
    finally:
        hook.delete()
        receiver.close()
