"""Every route of the OpenAPI document × every HTTP method × every kind of caller.

Generated from the document the API serves: for each path and each of GET, HEAD, POST, PUT,
PATCH, DELETE and OPTIONS, the request is sent (always with the JSON body of an attack:
``{"confirm": "clinica", ...}``) by nobody, a read-only token, a full token, a session without
its CSRF token and a session with it. The answer's status must be the one the rules give, and
wherever the answer is not a success (or the operation only reads) nothing may have changed:
no backup or restore row, no audit entry, no download recorded. Each case runs in a savepoint
that is rolled back, so every caller meets the same clinic.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import transaction
from django.test import Client

from backups import storage
from backups.models import AuditEntry, Backup, Download, Restore
from backups.tests.api.openapi_check import SPEC
from backups.tests.helpers import API, api, clinica_tables, fake_backup, make_token

pytestmark = pytest.mark.django_db

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CALLERS = ("nobody", "read_only_token", "full_token", "session_without_csrf", "session_with_csrf")
# GET operations that record something (a download): HEAD is not answered there
RECORDING_GETS = {"downloadBackup", "downloadBackupByLink"}
ATTACK_BODY = {"confirm": "clinica", "format": "pg", "note": "matrix", "accept_emptied": True}
CASES = [(path, method) for path in SPEC["paths"] for method in METHODS]


def operation(path: str, method: str) -> dict | None:
    """The OpenAPI operation of ``method`` on ``path`` (HEAD: the GET's, where GET only reads)."""
    item = SPEC["paths"][path]
    if method == "HEAD":
        get = item.get("get")
        return get if get and get["operationId"] not in RECORDING_GETS else None
    return item.get(method.lower())


def is_action(op: dict, method: str) -> bool:
    return method not in ("GET", "HEAD") or op["operationId"] in RECORDING_GETS


def expected_allow(path: str) -> set[str]:
    documented = {method for method in METHODS if operation(path, method) is not None}
    return documented | {"OPTIONS"}


def expected(path: str, method: str, caller: str) -> tuple[int, str | None]:
    """(status, error code) the rules give; a 2xx status is the operation's documented success."""
    if method == "OPTIONS":
        return 204, None
    op = operation(path, method)
    if op is None:
        return 405, "api_method_not_allowed"
    if op.get("security") == []:  # the signed link: the request carries no valid signature
        return 410, "api_link_expired"
    if caller == "nobody":
        return 401, "api_not_authenticated"
    if caller == "session_without_csrf" and method not in ("GET", "HEAD"):
        return 403, "api_csrf_failed"
    if caller == "read_only_token" and is_action(op, method):
        return 403, "api_read_only"
    if op["operationId"] == "uploadBackup":  # a JSON body holds no file
        return 400, "api_no_file"
    success = min(int(code) for code in op["responses"] if code.startswith("2"))
    return success, None


@pytest.fixture
def world(settings):
    """A stored backup (and a finished restore) of clinica, and a client per kind of caller."""
    settings.BACKUPS_API_REQUESTS_PER_MINUTE = settings.BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE = 10_000
    name = f"clinics/clinica/matrix-{uuid.uuid4().hex}.respaldo"
    storage.store_bytes(name, b"bytes of a stored backup")
    backup = fake_backup(manifest={"tables": clinica_tables()}, storage_name=name)
    restore = Restore.objects.create(clinic=backup.clinic, backup=backup, status="succeeded", requested_by="admin")
    session = Client(HTTP_HOST="clinica.localhost", enforce_csrf_checks=True)
    session.get("/admin/login/")
    login = {"username": "admin", "password": "admin", "csrfmiddlewaretoken": session.cookies["csrftoken"].value}
    assert session.post("/admin/login/", login).status_code == 302
    callers = {
        "nobody": (api(None), {}),
        "read_only_token": (api(make_token(read_only=True)), {}),
        "full_token": (api(make_token()), {}),
        "session_without_csrf": (session, {}),
        "session_with_csrf": (session, {"HTTP_X_CSRFTOKEN": session.cookies["csrftoken"].value}),
    }
    return {"backup": backup, "restore": restore, "callers": callers}


def counts() -> dict[str, int]:
    return {
        "backups": Backup.objects.count(),
        "restores": Restore.objects.count(),
        "audit": AuditEntry.objects.count(),
        "downloads": Download.objects.count(),
    }


@pytest.mark.parametrize(("path", "method"), CASES, ids=[f"{m} {p}" for p, m in CASES])
def test_every_route_every_method_every_caller(world, path, method):
    url = path.replace("{backup_id}", str(world["backup"].pk)).replace("{restore_id}", str(world["restore"].pk))
    for caller in CALLERS:
        client, headers = world["callers"][caller]
        status, code = expected(path, method, caller)
        with transaction.atomic():
            before = counts()
            response = client.generic(method, url, json.dumps(ATTACK_BODY), content_type="application/json", **headers)
            after = counts()
            transaction.set_rollback(True)
        where = f"{method} {url} as {caller}"
        assert response.status_code == status, f"{where}: {response.status_code} {response.content[:300]!r}"
        if code is not None and method != "HEAD":  # a HEAD answer has no body to read the code from
            assert response.json()["error"]["code"] == code, where
        if status == 405 or method == "OPTIONS":
            assert set(response["Allow"].split(", ")) == expected_allow(path), where
        op = operation(path, method)
        if not 200 <= status < 300 or op is None or not is_action(op, method):
            assert after == before, f"{where} changed {before} -> {after}"
        else:
            assert after != before, f"{where} succeeded and recorded nothing"
        if method == "HEAD":
            assert response.content == b"", where


def test_head_with_a_body_and_a_read_only_token_never_restores(world):
    """The reported attack, exactly: HEAD /restore/ with a confirm body and a read-only token."""
    client, _headers = world["callers"]["read_only_token"]
    url = f"{API}/backups/{world['backup'].pk}/restore/"
    response = client.generic("HEAD", url, json.dumps({"confirm": "clinica"}), content_type="application/json")
    assert response.status_code == 200 and response.content == b""
    assert not Restore.objects.filter(backup=world["backup"]).exclude(pk=world["restore"].pk).exists()
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.RESTORE_REQUESTED).exists()


def test_api_actions_name_their_token_in_the_audit(world):
    token = make_token()
    prefix = token.split("_")[1]
    client = api(token)
    backup = world["backup"]
    assert client.post(f"{API}/backups/{backup.pk}/link/").status_code == 201
    assert client.post(f"{API}/backups/", {}, content_type="application/json").status_code == 202
    downloaded = AuditEntry.objects.filter(action=AuditEntry.Action.DOWNLOADED).latest("id")
    requested = AuditEntry.objects.filter(action=AuditEntry.Action.BACKUP_REQUESTED).latest("id")
    assert downloaded.details["token"] == prefix == requested.details["token"]
    Backup.objects.filter(pk=requested.backup_id_ref).delete()
    started = client.post(
        f"{API}/backups/{backup.pk}/restore/", {"confirm": "clinica"}, content_type="application/json"
    )
    assert started.status_code == 202, started.content
    assert AuditEntry.objects.get(restore_id_ref=started.json()["id"]).details["token"] == prefix
    # a session's actions name no token
    session, headers = world["callers"]["session_with_csrf"]
    Restore.objects.filter(pk=started.json()["id"]).update(status="failed")
    assert session.post(f"{API}/backups/", "{}", content_type="application/json", **headers).status_code == 202
    assert "token" not in AuditEntry.objects.filter(action=AuditEntry.Action.BACKUP_REQUESTED).latest("id").details
