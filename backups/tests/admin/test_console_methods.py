"""The console's own pages, like the API's routes: only a POST (which Django checks for CSRF) changes
anything. Every backups URL of the clinic's admin, generated from its URLconf, is sent HEAD, PUT,
PATCH, DELETE and OPTIONS with a form body that would confirm a restore, a hold or a revocation,
by a signed-in administrator whose requests skip the CSRF check (the test client's default): no
answer is a server error, and nothing is recorded or changed."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import URLResolver, get_resolver

from backups import storage
from backups.audit import audit
from backups.models import (
    ApiToken,
    AuditEntry,
    Backup,
    BackupPolicy,
    Download,
    Restore,
    WebhookDelivery,
    WebhookEndpoint,
)
from backups.tests.helpers import clinica_tables, fake_backup, logged_in, make_token

pytestmark = pytest.mark.django_db

METHODS = ("HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")
BODY = "confirm=clinica&accept_emptied=on&national_id=X&fingerprint=0&reason=r&post=yes&action=delete_selected"


def console_routes() -> list[str]:
    """Every route of the clinic admin's backups app, from the tenant URLconf."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    return sorted(
        {
            route
            for route in walk(get_resolver("clinic_site.urls_tenant").url_patterns)
            if route.startswith("admin/backups/")
        }
    )


ROUTES = console_routes()


@pytest.fixture
def objects():
    name = f"clinics/clinica/console-{uuid.uuid4().hex}.respaldo"
    storage.store_bytes(name, b"bytes")
    backup = fake_backup(manifest={"tables": clinica_tables()}, storage_name=name)
    restore = Restore.objects.create(clinic=backup.clinic, backup=backup, status="succeeded", requested_by="admin")
    make_token()
    token = ApiToken.objects.filter(clinic=backup.clinic).latest("id")
    endpoint = WebhookEndpoint.objects.create(clinic=backup.clinic, url="https://hooks.example.com/x")
    entry = audit(AuditEntry.Action.DOWNLOADED, clinic_id=backup.clinic_id, backup_id=backup.pk)
    policy = BackupPolicy.objects.get_or_create(clinic=backup.clinic)[0]
    return {
        "backuppolicy": policy.pk,
        "backup": backup.pk,
        "restore": restore.pk,
        "apitoken": token.pk,
        "webhookendpoint": endpoint.pk,
        "auditentry": entry.pk,
    }


def fill(route: str, ids: dict[str, int]) -> str:
    model = route.split("/")[2]
    key = {"backup_id": "backup", "restore_id": "restore", "token_id": "apitoken", "endpoint_id": "webhookendpoint"}
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ids[key.get(m.group(1), model)]), route)


def state() -> tuple:
    return (
        list(Backup.objects.order_by("pk").values_list("pk", "status", "held_at", "note")),
        list(Restore.objects.order_by("pk").values_list("pk", "status")),
        AuditEntry.objects.count(),
        Download.objects.count(),
        list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
        list(WebhookEndpoint.objects.order_by("pk").values_list("pk", "url", "active")),
        list(BackupPolicy.objects.order_by("pk").values_list("pk", "enabled", "run_at", "keep_daily")),
        WebhookDelivery.objects.count(),
    )


def test_the_routes_are_found():
    assert {"admin/backups/backup/<int:backup_id>/restore/", "admin/backups/apitoken/<int:token_id>/revoke/"} <= set(
        ROUTES
    )


@pytest.mark.parametrize("route", ROUTES)
def test_no_method_but_post_changes_anything_in_the_console(objects, route):
    client = logged_in("admin", "admin")
    url = fill(route, objects)
    for method in METHODS:
        before = state()
        response = client.generic(method, url, BODY, content_type="application/x-www-form-urlencoded")
        assert response.status_code < 500, f"{method} {url}: {response.status_code}"
        assert state() == before, f"{method} {url} changed something"
