"""The clinic console's API tokens page (``backups/admin/clinic_tokens.py``) through the test client.

The token is shown once, on the page that answers the form, and never again; only its
SHA-256 is kept. Who lacks ``delete_apitoken`` sees and revokes only their own tokens;
another clinic's token id is a 404 on every page.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib.auth.models import Permission, User
from django_tenants.utils import schema_context

from backups.models import ApiToken, AuditEntry
from backups.services.api_tokens import token_create
from backups.tests.helpers import logged_in
from clinics.models import Clinic

pytestmark = pytest.mark.django_db

TOKENS = "/admin/backups/apitoken/"
SECRET = re.compile(r"rsp_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}")


def clinic_user(username: str, *codenames: str, schema: str = "clinica") -> User:
    """A staff user of ``schema`` holding the backups permissions ``codenames``."""
    with schema_context(schema):
        user = User.objects.create_user(username, password=f"{username}-pass-1", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="backups", codename__in=codenames))
    return user


def token_of(username: str, name: str, schema: str = "clinica") -> ApiToken:
    """A token made by the service for ``username`` of ``schema``."""
    clinic = Clinic.objects.get(schema_name=schema)
    with schema_context(schema):
        user = User.objects.get(username=username)
        return token_create(clinic=clinic, user=user, name=name).token


def test_creating_shows_the_token_once_and_keeps_only_its_digest():
    client = logged_in("admin", "admin")
    response = client.post(f"{TOKENS}add/", {"name": "front desk app", "read_only": "on"})
    assert response.status_code == 200, "the token's page answers the form, not a redirect"
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    secret = SECRET.search(page).group(0)
    assert "will not be shown again" in page
    assert "Authorization: Bearer" in page and "http://clinica.localhost/api/v1/backups/" in page
    assert "/api/v1/schema" in page
    token = ApiToken.objects.get(name="front desk app")
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(f"rsp_{token.prefix}_")
    with schema_context("clinica"):
        admin = User.objects.get(username="admin")
    assert (token.user_id, token.username, token.read_only) == (admin.pk, "admin", True)
    assert token.clinic.schema_name == "clinica"
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(secret not in str(value) for value in stored.values()), "the token itself is never stored"
    assert AuditEntry.objects.filter(action="token_created", details__token=token.prefix, actor="admin").exists()


def test_the_tokens_page_later_never_shows_the_secret():
    client = logged_in("admin", "admin")
    created = client.post(f"{TOKENS}add/", {"name": "agenda"}).content.decode()
    secret = SECRET.search(created).group(0)
    token = ApiToken.objects.get(name="agenda")
    for url in (f"{TOKENS}{token.pk}/change/", TOKENS, f"{TOKENS}{token.pk}/revoke/"):
        page = client.get(url).content.decode()
        assert secret not in page and secret[len(f"rsp_{token.prefix}_") :] not in page
        assert f"rsp_{token.prefix}_…" in page
    change = client.get(f"{TOKENS}{token.pk}/change/").content.decode()
    assert 'name="name"' not in change, "a token's page has no form to edit it"


def test_the_form_needs_a_name_and_makes_nothing_without_one():
    client = logged_in("admin", "admin")
    response = client.post(f"{TOKENS}add/", {"name": "  "})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert not SECRET.search(response.content.decode())
    assert not ApiToken.objects.exists()


def test_a_user_without_add_permission_gets_403_and_no_token():
    clinic_user("mirona", "view_apitoken")
    client = logged_in("mirona", "mirona-pass-1")
    assert client.get(TOKENS).status_code == 200
    assert client.get(f"{TOKENS}add/").status_code == 403
    assert client.post(f"{TOKENS}add/", {"name": "sneaky"}).status_code == 403
    assert not ApiToken.objects.exists()
    assert logged_in("recepcion", "recepcion").get(TOKENS).status_code == 403


def test_a_user_who_is_not_a_manager_sees_and_revokes_only_their_own_tokens():
    clinic_user("ana", "view_apitoken", "add_apitoken")
    client = logged_in("ana", "ana-pass-1")
    own = token_of("ana", "ana's script")
    others = token_of("admin", "admin's script")
    page = client.get(TOKENS).content.decode()
    assert "ana&#x27;s script" in page and "admin&#x27;s script" not in page
    assert client.get(f"{TOKENS}{others.pk}/change/").status_code == 404
    assert client.get(f"{TOKENS}{others.pk}/revoke/").status_code == 404
    assert client.post(f"{TOKENS}{others.pk}/revoke/").status_code == 404
    action = {"action": "revoke_selected", "_selected_action": [others.pk], "post": "yes"}
    client.post(TOKENS, action)
    others.refresh_from_db()
    assert others.active, "another user's token stays active"
    assert client.post(f"{TOKENS}{own.pk}/revoke/").status_code == 302
    own.refresh_from_db()
    assert not own.active and own.revoked_by == "ana"


def test_a_manager_sees_every_token_of_the_clinic_and_revokes_them():
    clinic_user("ana", "view_apitoken", "add_apitoken")
    anas = token_of("ana", "ana's script")
    client = logged_in("admin", "admin")
    assert "ana&#x27;s script" in client.get(TOKENS).content.decode()
    assert (
        f'href="/admin/backups/apitoken/{anas.pk}/revoke/"' in client.get(f"{TOKENS}{anas.pk}/change/").content.decode()
    )
    client.post(f"{TOKENS}{anas.pk}/revoke/")
    anas.refresh_from_db()
    assert anas.revoked_by == "admin"


def test_revoke_asks_first_then_revokes_on_post_and_audits():
    client = logged_in("admin", "admin")
    token = token_of("admin", "old app")
    confirm = client.get(f"{TOKENS}{token.pk}/revoke/")
    assert confirm.status_code == 200 and "Yes, revoke it" in confirm.content.decode()
    token.refresh_from_db()
    assert token.active, "GET only asks"
    assert not AuditEntry.objects.filter(action="token_revoked").exists()
    done = client.post(f"{TOKENS}{token.pk}/revoke/", follow=True).content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == "admin"
    assert "was revoked" in done and "revoked " in done and "Revoke…" not in done
    entry = AuditEntry.objects.get(action="token_revoked")
    assert (entry.actor, entry.details["token"], entry.clinic.schema_name) == ("admin", token.prefix, "clinica")
    assert ApiToken.objects.filter(pk=token.pk).exists(), "revoked tokens stay as history"
    assert client.post(f"{TOKENS}{token.pk}/delete/", {"post": "yes"}).status_code == 403


def test_the_list_action_confirms_then_revokes_the_selected_tokens():
    client = logged_in("admin", "admin")
    first, second, _kept = (token_of("admin", name) for name in ("uno", "dos", "tres"))
    selected = {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]}
    confirm = client.post(TOKENS, selected)
    assert confirm.status_code == 200 and "Yes, revoke them" in confirm.content.decode()
    assert ApiToken.objects.filter(revoked_at=None).count() == 3
    client.post(TOKENS, {**selected, "post": "yes"})
    assert set(ApiToken.objects.filter(revoked_at=None).values_list("name", flat=True)) == {"tres"}
    assert AuditEntry.objects.filter(action="token_revoked").count() == 2
    revoked = client.get(f"{TOKENS}?status=revoked").content.decode()
    assert "uno" in revoked and "dos" in revoked and ">tres<" not in revoked


def test_another_clinics_token_is_404_everywhere():
    other = token_of("admin", "bienestar's app", schema="bienestar")
    client = logged_in("admin", "admin")
    assert "bienestar" not in client.get(TOKENS).content.decode()
    for page in ("change", "revoke", "history", "delete"):
        assert client.get(f"{TOKENS}{other.pk}/{page}/").status_code == 404
    assert client.post(f"{TOKENS}{other.pk}/revoke/").status_code == 404
    client.post(TOKENS, {"action": "revoke_selected", "_selected_action": [other.pk], "post": "yes"})
    other.refresh_from_db()
    assert other.active


def test_the_list_columns_search_and_filters():
    client = logged_in("admin", "admin")
    used = token_of("admin", "nightly sync")
    ApiToken.objects.filter(pk=used.pk).update(last_used_address="192.0.2.7", last_used_at=used.created_at)
    token_of("admin", "unused app")
    page = client.get(TOKENS).content.decode()
    assert "from 192.0.2.7" in page and "never" in page and "active" in page
    found = client.get(TOKENS, {"q": f"rsp_{used.prefix}_…"}).content.decode()
    assert "nightly sync" in found and "unused app" not in found


def test_the_pages_speak_spanish():
    client = logged_in("admin", "admin", language="es")
    token = token_of("admin", "agenda")
    listing = client.get(TOKENS).content.decode()
    assert "<h1>Tokens de API</h1>" in listing and "Revocar los tokens seleccionados" in listing
    assert "último uso" in listing.lower() and "nunca" in listing and "activo" in listing
    confirm = client.get(f"{TOKENS}{token.pk}/revoke/").content.decode()
    assert "¿Revocar el token de API «agenda»?" in confirm and "Sí, revocarlo" in confirm
    form = client.get(f"{TOKENS}add/").content.decode()
    assert "Solo lectura" in form and "nunca respaldar, descargar, restaurar ni subir" in form
    created = client.post(f"{TOKENS}add/", {"name": "app"}).content.decode()
    assert "no se volverá a mostrar" in created and "Copiar" in created
    assert "Authorization: Bearer" in created
