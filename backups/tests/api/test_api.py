"""The JSON API (``/api/v1/``): tokens and sessions, the console's permissions and scoping, JSON errors.

Every response a test reads is also checked against the OpenAPI document the API serves.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context
from openapi_spec_validator import validate as validate_spec

from backups.models import AuditEntry, Backup, Download, JobStatus, Restore
from backups.services.api_tokens import token_digest, token_revoke
from backups.tests.api.openapi_check import SPEC, check, operation_ids
from backups.tests.helpers import API, api, error_of, fake_backup, logged_in, make_token
from clinics.models import Clinic

pytestmark = pytest.mark.django_db


class Calls:
    """A client whose every answer is checked against the OpenAPI document; remembers the operations used."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.used: set[str] = set()

    def __call__(self, method: str, path: str, body=None, **kwargs):
        send = getattr(self.client, method.lower())
        if "data" in kwargs:  # multipart
            response = send(path, kwargs.pop("data"), **kwargs)
        elif body is not None and method != "GET":
            kwargs.setdefault("content_type", "application/json")
            response = send(path, json.dumps(body), **kwargs)
        else:
            response = send(path, **kwargs)
        self.used.add(check(response, method, path))
        return response


@pytest.fixture
def viewer():
    """A clinica user who may only view backups (as in the console's tests)."""
    with schema_context("clinica"):
        user = User.objects.create_user("lector", password="lector-pass-1", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_backup", content_type__app_label="backups"))
    return make_token(username="lector")


def test_the_openapi_document_is_valid_and_served_publicly():
    validate_spec(SPEC)
    served = Client(HTTP_HOST="clinica.localhost").get(f"{API}/schema")
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(SPEC))
    assert {"listBackups", "createBackup", "restoreBackup", "uploadBackup", "getRestore"} <= operation_ids()


def test_without_credentials_every_route_is_401_json():
    calls = Calls(api(None))
    for method, path in [
        ("GET", f"{API}/backups/"),
        ("POST", f"{API}/backups/"),
        ("GET", f"{API}/backups/1/"),
        ("GET", f"{API}/restores/"),
    ]:
        response = calls(method, path, {} if method == "POST" else None)
        assert error_of(response) == (401, "api_not_authenticated")
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert error_of(api("rsp_0000_not-a-token").get(f"{API}/backups/")) == (401, "api_token_invalid")
    assert error_of(api("Basic abc").get(f"{API}/backups/")) == (401, "api_token_invalid")
    unknown = api(None).get(f"{API}/nothing/here")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "api_not_found"


def test_tokens_are_stored_hashed_and_work_only_for_their_clinic_until_revoked():
    secret = make_token()
    token = Clinic.objects.get(schema_name="clinica").api_tokens.get()
    assert token.digest == token_digest(secret) and secret not in json.dumps(list(token.__dict__.values()), default=str)
    assert api(secret).get(f"{API}/backups/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_address == "127.0.0.1"
    # the same token on another clinic's host is unknown there
    assert error_of(api(secret, host="bienestar.localhost").get(f"{API}/backups/")) == (401, "api_token_invalid")
    token_revoke(token=token, revoked_by="admin")
    assert error_of(api(secret).get(f"{API}/backups/")) == (401, "api_token_revoked")
    actions = list(AuditEntry.objects.filter(details__token=token.prefix).values_list("action", flat=True))
    assert sorted(actions) == ["token_created", "token_revoked"]


def test_a_token_stops_working_when_its_user_loses_the_console():
    secret = make_token(username="admin")
    with schema_context("clinica"):
        User.objects.filter(username="admin").update(is_staff=False)
    assert error_of(api(secret).get(f"{API}/backups/")) == (401, "api_token_user_inactive")


def test_another_clinics_ids_are_404_everywhere():
    theirs = fake_backup("bienestar")
    their_restore = Restore.objects.create(clinic=theirs.clinic, backup=theirs, status=JobStatus.SUCCEEDED)
    calls = Calls(api(make_token()))
    for method, path in [
        ("GET", f"{API}/backups/{theirs.pk}/"),
        ("GET", f"{API}/backups/{theirs.pk}/download/"),
        ("POST", f"{API}/backups/{theirs.pk}/link/"),
        ("GET", f"{API}/backups/{theirs.pk}/restore/"),
        ("POST", f"{API}/backups/{theirs.pk}/restore/"),
        ("GET", f"{API}/restores/{their_restore.pk}/"),
    ]:
        response = calls(method, path, {"confirm": "bienestar"} if method == "POST" else None)
        assert response.status_code == 404, (method, path)
        assert "bienestar" not in response.content.decode()
    assert theirs.pk not in [row["id"] for row in calls("GET", f"{API}/backups/?page_size=100").json()["results"]]
    assert not Download.objects.exists() and not Restore.objects.filter(backup__clinic__schema_name="clinica")


def test_a_view_only_user_and_a_read_only_token_get_403_on_every_action(viewer):
    mine = fake_backup()
    admin_read_only = make_token(read_only=True)
    actions = [
        ("POST", f"{API}/backups/", {"format": "pg"}),
        ("GET", f"{API}/backups/{mine.pk}/download/", None),
        ("POST", f"{API}/backups/{mine.pk}/link/", None),
        ("POST", f"{API}/backups/{mine.pk}/restore/", {"confirm": "clinica"}),
    ]
    for secret, code in ((viewer, "api_forbidden"), (admin_read_only, "api_read_only")):
        calls = Calls(api(secret))
        assert calls("GET", f"{API}/backups/").status_code == 200
        assert calls("GET", f"{API}/backups/{mine.pk}/").status_code == 200
        for method, path, body in actions:
            assert error_of(calls(method, path, body)) == (403, code), (secret, path)
        upload = api(secret).post(f"{API}/backups/upload/", {"file": io.BytesIO(b"[]")})
        assert error_of(upload) == (403, code)
    assert not Backup.objects.filter(clinic__schema_name="clinica").exclude(pk=mine.pk).exists()
    assert not Download.objects.exists() and not Restore.objects.exists()
    assert error_of(api(viewer).get(f"{API}/restores/")) == (403, "api_forbidden")  # not a restorer


def test_list_filters_and_pages_like_the_console():
    rows = [fake_backup(note=f"cierre {n}", payload_format="json" if n % 2 else "pg") for n in range(5)]
    failed = fake_backup(status=JobStatus.FAILED, storage_name="", error_code="dump_failed", note="roto")
    calls = Calls(api(make_token()))
    page = calls("GET", f"{API}/backups/?page_size=2").json()
    assert page["count"] >= 6 and page["page_size"] == 2 and len(page["results"]) == 2 and page["next"]
    second = calls("GET", page["next"].split("clinica.localhost")[1]).json()
    assert second["previous"] and {r["id"] for r in second["results"]}.isdisjoint({r["id"] for r in page["results"]})
    only_json = calls("GET", f"{API}/backups/?format=json&q=cierre").json()
    assert {r["id"] for r in only_json["results"]} == {row.pk for row in rows if row.payload_format == "json"}
    failures = calls("GET", f"{API}/backups/?status=failed").json()["results"]
    assert [r["id"] for r in failures] == [failed.pk]
    assert failures[0]["error"]["code"] == "dump_failed" and failures[0]["links"]["download"] is None
    for bad in ("status=lost", "page=0", "page_size=1000", "since=yesterday", "page=99"):
        assert error_of(calls("GET", f"{API}/backups/?{bad}")) == (400, "api_bad_parameter"), bad
    detail = calls("GET", f"{API}/backups/{rows[0].pk}/").json()
    assert detail["tables"] == {"dental_invoice": 0, "dental_patient": 8} and detail["stored"] is True


def test_create_backs_up_and_refuses_like_the_console(settings):
    settings.BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY = 1
    calls = Calls(api(make_token()))
    assert error_of(calls("POST", f"{API}/backups/", {"format": "tar"})) == (400, "api_invalid")
    created = calls("POST", f"{API}/backups/", {"format": "json", "note": "antes del cierre"})
    assert created.status_code == 202
    backup = Backup.objects.get(pk=created.json()["id"])
    assert (backup.payload_format, backup.note, backup.requested_by, backup.status) == (
        "json",
        "antes del cierre",
        "admin",
        "pending",
    )
    assert created["Location"].endswith(f"/api/v1/backups/{backup.pk}/")
    busy = calls("POST", f"{API}/backups/", {})
    assert error_of(busy) == (409, "clinic_busy")
    Backup.objects.filter(pk=backup.pk).update(status=JobStatus.FAILED)
    assert error_of(calls("POST", f"{API}/backups/", {})) == (429, "fair_use_backups")
    bad = api(make_token()).post(f"{API}/backups/", "{not json", content_type="application/json")
    assert error_of(bad) == (400, "api_bad_json")


def test_errors_speak_the_requests_language():
    theirs = fake_backup("bienestar")
    spanish = api(make_token(), language="es").get(f"{API}/backups/{theirs.pk}/")
    assert spanish.status_code == 404 and "Esta clínica no tiene" in spanish.json()["error"]["message"]
    english = api(None).get(f"{API}/backups/")
    assert "Log in to the clinic's console" in english.json()["error"]["message"]
    assert "Inicie sesión" in api(None, language="es").get(f"{API}/backups/").json()["error"]["message"]


def test_fair_use_limits_requests_per_user_whatever_the_credential(settings, viewer):
    settings.BACKUPS_API_REQUESTS_PER_MINUTE = 3
    client = api(make_token())
    assert [client.get(f"{API}/backups/").status_code for _ in range(3)] == [200, 200, 200]
    limited = client.get(f"{API}/backups/")
    assert error_of(limited) == (429, "api_rate_limited") and 1 <= int(limited["Retry-After"]) <= 61
    assert "whatever the token or session" in limited.json()["error"]["message"]
    # more tokens of the same user, or the user's session, buy nothing
    assert error_of(api(make_token()).get(f"{API}/backups/")) == (429, "api_rate_limited")
    assert error_of(logged_in("admin", "admin").get(f"{API}/backups/")) == (429, "api_rate_limited")
    assert api(viewer).get(f"{API}/backups/").status_code == 200  # another user has their own window


def test_fair_use_limits_a_clinics_users_together(settings, viewer):
    settings.BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE = 4
    assert [api(make_token()).get(f"{API}/backups/").status_code for _ in range(2)] == [200, 200]
    assert [api(viewer).get(f"{API}/backups/").status_code for _ in range(2)] == [200, 200]
    limited = api(viewer).get(f"{API}/backups/")
    assert error_of(limited) == (429, "api_rate_limited") and "from this clinic" in limited.json()["error"]["message"]
    bienestar = api(make_token("bienestar"), host="bienestar.localhost")
    assert bienestar.get(f"{API}/backups/").status_code == 200  # another clinic counts apart


def test_the_console_session_works_with_csrf():
    client = Client(HTTP_HOST="clinica.localhost", enforce_csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value
    assert client.post("/admin/login/", {"username": "admin", "password": "admin", "csrfmiddlewaretoken": token})
    assert client.get(f"{API}/backups/").status_code == 200
    refused = client.post(f"{API}/backups/", "{}", content_type="application/json")
    assert error_of(refused) == (403, "api_csrf_failed")
    token = client.cookies["csrftoken"].value
    accepted = client.post(f"{API}/backups/", "{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 202 and Backup.objects.filter(pk=accepted.json()["id"], requested_by="admin")
    # a session of another clinic is not one here
    other = logged_in("admin", "admin", host="bienestar.localhost")
    assert other.get(f"{API}/backups/", HTTP_HOST="clinica.localhost").status_code == 401


@pytest.mark.usefixtures("live_db")
def test_download_link_restore_and_upload_of_a_real_backup(settings):
    """One tour of every operation, on a real stored backup of clinica (pg), each answer checked."""
    from backups.tests.helpers import make_backup

    backup = make_backup("clinica")
    calls = Calls(api(make_token()))
    calls("GET", f"{API}/backups/")
    detail = calls("GET", f"{API}/backups/{backup.pk}/").json()
    assert detail["sha256"] == backup.sha256 and detail["tables"]["dental_patient"] > 0

    assert api(make_token()).head(f"{API}/backups/{backup.pk}/").status_code == 200
    assert api(make_token()).head(f"{API}/backups/{backup.pk}/download/").status_code == 405  # not recorded
    assert not Download.objects.filter(backup=backup).exists()
    downloaded = calls("GET", detail["links"]["download"].split("clinica.localhost")[1])
    data = b"".join(downloaded.streaming_content)
    assert hashlib.sha256(data).hexdigest() == backup.sha256 == downloaded["X-Respaldo-SHA256"]

    link = calls("POST", f"{API}/backups/{backup.pk}/link/").json()
    path = link["url"].split("clinica.localhost")[1]
    by_link = Calls(Client(HTTP_HOST="clinica.localhost"))  # no credentials: the signature is one
    got = by_link("GET", path)
    assert hashlib.sha256(b"".join(got.streaming_content)).hexdigest() == backup.sha256
    assert error_of(by_link("GET", path)) == (410, "api_link_used")  # one use
    assert error_of(by_link("GET", path[:-3] + "xyz")) == (410, "api_link_expired")
    assert Client(HTTP_HOST="bienestar.localhost").get(path).status_code == 410  # another clinic's host
    other_id = path.replace(f"/{backup.pk}/file/", f"/{backup.pk + 1000}/file/")
    assert error_of(by_link("GET", other_id)) == (410, "api_link_expired")  # the link names its backup
    assert Download.objects.filter(backup=backup).count() == 2

    preview = calls("GET", f"{API}/backups/{backup.pk}/restore/").json()
    assert preview["confirm"] == "clinica" and preview["needs_accept_emptied"] is False
    wrong = calls("POST", f"{API}/backups/{backup.pk}/restore/", {"confirm": "Clinica"})
    assert error_of(wrong) == (400, "api_invalid")
    assert wrong.json()["error"]["field_codes"] == {"confirm": "restore_not_confirmed"}
    assert not Restore.objects.filter(backup=backup).exists()

    # the very file of a stored backup: that backup (200), not a second copy
    rows = Backup.objects.count()
    same = calls("POST", f"{API}/backups/upload/", None, data={"file": io.BytesIO(data)})
    assert same.status_code == 200 and same.json()["id"] == backup.pk and same.json()["kind"] == "manual"
    assert same["Location"].endswith(f"{API}/backups/{backup.pk}/") and Backup.objects.count() == rows
    Backup.objects.filter(pk=backup.pk).update(expired_at=timezone.now())  # retention removed it: kept again
    uploaded = calls("POST", f"{API}/backups/upload/", None, data={"file": io.BytesIO(data)})
    assert uploaded.status_code == 201 and uploaded.json()["kind"] == "uploaded"
    Backup.objects.filter(pk=backup.pk).update(expired_at=None)
    settings.BACKUPS_MAX_UPLOAD_BYTES = 1000
    too_big = calls("POST", f"{API}/backups/upload/", None, data={"file": io.BytesIO(data)})
    assert error_of(too_big) == (413, "too_large")
    settings.BACKUPS_MAX_UPLOAD_BYTES = 10**9
    junk = calls("POST", f"{API}/backups/upload/", None, data={"file": io.BytesIO(b"hello")})
    assert junk.status_code == 400 and junk.json()["error"]["code"] in {"not_recognized", "sql", "empty"}
    assert error_of(calls("POST", f"{API}/backups/upload/", None, data={})) == (400, "api_no_file")

    started = calls("POST", f"{API}/backups/{backup.pk}/restore/", {"confirm": "clinica"})
    assert started.status_code == 202
    restore = Restore.objects.get(pk=started.json()["id"])
    assert (restore.backup_id, restore.requested_by, restore.status) == (backup.pk, "admin", "pending")
    assert calls("GET", f"{API}/restores/{restore.pk}/").json()["status"] == "pending"
    assert calls("GET", f"{API}/restores/?status=pending").json()["results"][0]["id"] == restore.pk
    Restore.objects.filter(pk=restore.pk).update(status=JobStatus.FAILED)  # never ran: nothing to undo
    bienestar = Calls(api(make_token("bienestar")))
    unknown_link = bienestar("GET", f"{API}/backups/{backup.pk}/file/?sig=x")
    assert unknown_link.status_code == 410
    assert error_of(calls("POST", f"{API}/backups/", {"format": "tar"})) == (400, "api_invalid")  # nothing queued
    assert calls.used | by_link.used == operation_ids()


def test_during_a_restore_reads_work_writes_are_503_json_and_the_swap_closes_everything(running_restore):  # noqa: F811
    from backups.services.restore import PHASE_SWAPPING

    client = api(make_token())
    restore = running_restore("restoring")
    before = Backup.objects.count()
    assert client.get(f"{API}/backups/").status_code == 200
    paused = client.post(f"{API}/backups/", "{}", content_type="application/json")
    assert error_of(paused) == (503, "restore_in_progress") and paused["Retry-After"] == "15"
    assert f"restore #{restore.pk}" in paused.json()["error"]["message"]
    assert Backup.objects.count() == before
    Restore.objects.filter(pk=restore.pk).update(progress_phase=PHASE_SWAPPING)
    assert error_of(client.get(f"{API}/backups/")) == (503, "restore_in_progress")


def test_a_download_link_works_once_and_dies_with_its_token():
    from backups import storage
    from backups.models import ApiToken

    name = f"clinics/clinica/link-{hashlib.sha256(str(id(object())).encode()).hexdigest()[:12]}.respaldo"
    storage.store_bytes(name, b"the archive's bytes")
    backup = fake_backup(storage_name=name, size=19)
    token = make_token()
    path = api(token).post(f"{API}/backups/{backup.pk}/link/").json()["url"].split("clinica.localhost")[1]
    token_revoke(token=ApiToken.objects.get(digest=token_digest(token)), revoked_by="admin")
    by_link = Client(HTTP_HOST="clinica.localhost")
    assert error_of(by_link.get(path)) == (410, "api_link_revoked")
    path = api(make_token()).post(f"{API}/backups/{backup.pk}/link/").json()["url"].split("clinica.localhost")[1]
    assert b"".join(by_link.get(path).streaming_content) == b"the archive's bytes"
    assert error_of(by_link.get(path)) == (410, "api_link_used")
    assert Download.objects.filter(backup=backup, link_used_at__isnull=False).count() == 1
