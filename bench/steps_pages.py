"""The pages group's steps (a mixin of ``run.Bench``): three admin pages served by gunicorn
(2 workers, as deployed) to a load generator in its own process (``bench/load.py``), over a
catalog of catalog-only clinics with 100 backups each (10,000 clinics and 1,000,000 rows at S
and M, issue 28; 1,000 at XS, CI's smoke run); p95 latency and query count.
"""

# ruff: noqa: S608 - bench-made SQL, from fixed names

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context
from sampling import Sample
from startup import MB, ROOT, TMP

from clinics.models import Clinic, Domain

PAGE_REQUESTS = 40  # per page and repeat, over the load generator's clients
PAGE_CLIENTS = 2  # concurrent logged-in clients of bench/load.py
PAGE_WORKERS = 2  # gunicorn workers serving them (one per core here)
PAGE_CLINICS = {"XS": 1_000, "S": 10_000, "M": 10_000}  # catalog-only clinics, 100 backups each
SUPERUSER, PASSWORD = "benchadmin", "bench-password-only-for-bench"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for gunicorn)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PageSteps:
    """Steps of the pages group, and its setting up: the catalog, the users, the server (``server``)."""

    def setup_pages(self) -> None:
        """``PAGE_CLINICS`` catalog-only clinics with 100 backups each (one in ten failed), as in the tests."""
        self.drop_catalog()
        from backups.tests.catalog_fill import fill_catalog

        fill_catalog(clinics=PAGE_CLINICS[self.size], backups_each=100, size=MB)

    def setup_users(self) -> None:
        """The platform tenant, and a superuser in it and in the bench clinic, for the pages."""
        from django.contrib.auth import get_user_model

        from clinics.demo import ensure_public_tenant

        ensure_public_tenant()
        user_model = get_user_model()
        for schema in ("public", self.schema):
            with schema_context(schema):
                if not user_model.objects.filter(username=SUPERUSER).exists():
                    user_model.objects.create_superuser(SUPERUSER, f"{SUPERUSER}@example.com", PASSWORD)
        connection.set_schema_to_public()
        self.domain = Domain.objects.get(tenant__schema_name=self.schema, is_primary=True).domain
        public = Domain.objects.filter(tenant__schema_name="public").first()
        self.public_domain = public.domain if public else "localhost"

    def drop_catalog(self) -> None:
        budget = "(SELECT id FROM clinics_clinic WHERE schema_name LIKE 'budget\\_%%')"
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM backups_backup WHERE clinic_id IN {budget}")
            cursor.execute(f"DELETE FROM backups_backuppolicy WHERE clinic_id IN {budget}")
        Clinic.objects.filter(schema_name__startswith="budget_").delete()

    def steps_pages(self) -> list:
        return [
            ("page index", lambda: self.page("pages: platform index /admin/", self.public_domain, "/admin/")),
            (
                "page clinics",
                lambda: self.page("pages: platform clinics list", self.public_domain, "/admin/clinics/clinic/"),
            ),
            (
                "page backups",
                lambda: self.page("pages: clinic backups page", self.domain, "/admin/backups/backup/"),
            ),
            ("minute", self.minute),
        ]

    def minute(self) -> dict[str, Sample]:
        """One minute of the dispatcher (``backups.tasks.dispatch``'s steps, the daily summary
        apart) over the pages' catalog, each step in a transaction rolled back and nothing queued:
        its seconds, and each step's milliseconds and queries in the notes."""
        from django.db import transaction
        from django.utils import timezone

        from backups.operations import alerts, drills, notify, retention, schedule, webhooks

        now = timezone.now()
        steps = {
            "schedule": lambda: schedule.dispatch(now, enqueue=False),
            "drills": lambda: drills.dispatch_drills(now, enqueue=False),
            "retention": lambda: retention.prune_all(now, part=(now.minute, 60)),
            "retries": lambda: notify.notify_retry_pending(now),
            "webhooks": lambda: webhooks.deliver_due(now),
            "alerts": lambda: alerts.check_stale(now),
        }
        notes, total = {}, 0.0
        for name, step in steps.items():
            with CaptureQueriesContext(connection) as captured, transaction.atomic():
                start = time.perf_counter()
                step()
                seconds = time.perf_counter() - start
                transaction.set_rollback(True)
            queries = sum(1 for q in captured.captured_queries if not q["sql"].startswith("SET search_path"))
            notes[name] = f"{seconds * 1000:.0f} ms, {queries} q"
            total += seconds
        connection.set_schema_to_public()
        clinics = PAGE_CLINICS[self.size]
        return {f"minute: the dispatcher's steps, at {clinics:,} clinics": Sample(total, notes=notes)}

    def page_server(self) -> str:
        """gunicorn serving the site as deployed (Procfile), 2 workers, started once; its base URL."""
        if self.server is None:
            port = free_port()
            log_file = (TMP / "gunicorn.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "clinic_site.wsgi", "--bind", f"127.0.0.1:{port}"]
                + ["--workers", str(PAGE_WORKERS), "--timeout", "120"],
                cwd=ROOT,
                env=dict(os.environ, DEBUG="0"),  # DEBUG would keep every query's SQL
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            base = f"http://127.0.0.1:{port}"
            self.server = proc
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start: {(TMP / 'gunicorn.log').read_text()[-1500:]}")
                time.sleep(0.1)
            self.server_base = base
        return self.server_base

    def stop_page_server(self) -> None:
        if self.server is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.server.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(30)
            self.server = None

    def page(self, name: str, host: str, path: str) -> dict[str, Sample]:
        """p95 latency of ``path`` served by gunicorn (2 workers) to 2 logged-in clients of a load
        generator in another process (``bench/load.py``); the query count from the test client."""
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "load.py"), "--base", self.page_server(), "--host", host]
            + ["--path", path, "--user", SUPERUSER, "--password", PASSWORD, "--requests", str(PAGE_REQUESTS)]
            + ["--clients", str(PAGE_CLIENTS)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed on {host}{path}: {out.stderr[-1500:]}")
        measured = json.loads(out.stdout)
        if measured["failures"]:
            raise RuntimeError(measured["failures"][0])
        latencies = measured["latencies"]
        c = Client(HTTP_HOST=host)
        if c.post("/admin/login/", {"username": SUPERUSER, "password": PASSWORD}).status_code != 302:
            raise RuntimeError(f"could not log in on {host}")
        c.get(path)
        with CaptureQueriesContext(connection) as captured:
            c.get(path)
        connection.set_schema_to_public()
        queries = [q for q in captured.captured_queries if not q["sql"].startswith("SET search_path")]
        p95 = statistics.quantiles(latencies, n=20)[-1]
        return {
            name: Sample(p95, notes={"queries": len(queries), "median ms": round(statistics.median(latencies) * 1000)})
        }
