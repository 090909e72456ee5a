"""Who stays signed in across a real restore (and its Undo), and what a person signed out by one is told.

The clinic's sessions live in its schema: a pg restore replaces them with the backup's. The
live ones are carried into the restored data instead, and Django's own check (the user exists,
is active, and the session's hash matches the password hash) decides who stays signed in; a
session the restore signs out says so on the login page and leads back to the restore.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django_tenants.utils import schema_context

from backups.models import JobStatus, Restore
from backups.services import restore as restores
from backups.services.sessions import SIGNED_OUT_KEY
from backups.tests.helpers import SCHEMA, make_backup
from conftest import host_client

HOST = f"{SCHEMA}.localhost"
ADMIN_INDEX = "/admin/"


def make_admin(username: str, password: str) -> None:
    with schema_context(SCHEMA):
        User.objects.create_superuser(username, f"{username}@example.com", password)
    connection.set_schema_to_public()


def set_password(username: str, password: str) -> None:
    with schema_context(SCHEMA):
        user = User.objects.get(username=username)
        user.set_password(password)
        user.save()
    connection.set_schema_to_public()


def signed_in_client(username: str, password: str):
    """A browser-like client signed in through the clinic's real login form."""
    client = host_client(HOST)
    response = client.post("/admin/login/", {"username": username, "password": password, "next": ADMIN_INDEX})
    assert response.status_code == 302 and response["Location"] == ADMIN_INDEX, response.content[:500]
    assert is_signed_in(client)
    return client


def is_signed_in(client) -> bool:
    response = client.get(ADMIN_INDEX)
    connection.set_schema_to_public()
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and "/admin/login/" in response["Location"], response.status_code
    return False


def restore_from(backup_id: int) -> Restore:
    restore = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=backup_id, enqueue=False).pk
    )
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    return restore


def test_the_admin_who_restores_stays_signed_in_through_the_restore_and_its_undo(scratch_clinic):
    make_admin("duena", "duena-pass-1")
    backup = make_backup()  # taken before the admin signs in: it holds no session of theirs
    client = signed_in_client("duena", "duena-pass-1")

    restore = restore_from(backup.pk)
    assert is_signed_in(client)
    assert client.get(f"/admin/backups/restore/{restore.pk}/progress/").status_code == 200

    undo = restore_from(restore.safety_backup_id)
    assert undo.backup_id == restore.safety_backup_id
    assert is_signed_in(client)


def test_someone_the_restored_data_does_not_know_is_signed_out_and_told_why(scratch_clinic):
    make_admin("duena", "duena-pass-1")
    make_admin("cambia", "old-pass-1")
    backup = make_backup()
    make_admin("nueva", "nueva-pass-1")  # created after the backup: gone once it is restored
    set_password("cambia", "new-pass-2")  # the backup has the old password
    stays = signed_in_client("duena", "duena-pass-1")
    gone = signed_in_client("nueva", "nueva-pass-1")
    changed = signed_in_client("cambia", "new-pass-2")

    restore = restore_from(backup.pk)

    assert is_signed_in(stays)
    for client in (gone, changed):
        assert not is_signed_in(client)
        login = client.get(f"/admin/login/?next={ADMIN_INDEX}")
        connection.set_schema_to_public()
        text = login.content.decode()
        assert f"The clinic was restored from backup #{backup.pk}" in text
        progress = f"/admin/backups/restore/{restore.pk}/progress/"
        assert f'name="next" value="{progress}"' in text
    # Signing in again (as someone the restored data knows) leads back to the restore, with its Undo.
    response = changed.post("/admin/login/", {"username": "cambia", "password": "old-pass-1", "next": progress})
    assert response.status_code == 302 and response["Location"] == progress
    page = changed.get(progress)
    connection.set_schema_to_public()
    assert f"/admin/backups/backup/{restore.safety_backup_id}/restore/" in page.content.decode()  # Undo
    assert SIGNED_OUT_KEY not in changed.session  # said once signed in: not again
    assert "restored from backup" not in changed.get("/admin/login/").content.decode()
    connection.set_schema_to_public()

    # The Undo treats sessions the same way: whoever the data it brings back still knows stays
    # signed in; cambia's password there is the new one again, so that session is signed out.
    undo = restore_from(restore.safety_backup_id)
    assert is_signed_in(stays)
    assert not is_signed_in(changed)
    text = changed.get("/admin/login/").content.decode()
    connection.set_schema_to_public()
    assert f"The clinic was restored from backup #{restore.safety_backup_id}" in text
    assert f'name="next" value="/admin/backups/restore/{undo.pk}/progress/"' in text


def test_a_session_signed_out_since_the_backup_does_not_come_back_with_it(scratch_clinic):
    make_admin("duena", "duena-pass-1")
    old = signed_in_client("duena", "duena-pass-1")
    cookie = old.cookies["sessionid"].value
    backup = make_backup()  # holds that session, still signed in
    old.post("/admin/logout/")
    connection.set_schema_to_public()
    assert not is_signed_in(old)

    restore_from(backup.pk)

    stolen = host_client(HOST)
    stolen.cookies["sessionid"] = cookie  # the cookie as it was when the backup was taken
    assert not is_signed_in(stolen)


@pytest.mark.parametrize("json_apps", [None, ["django.contrib.sessions", "dental"]])
def test_a_json_restore_keeps_the_admin_signed_in(scratch_clinic, settings, json_apps):
    """The default json payload holds no sessions; one that does carries the live ones as pg does."""
    settings.BACKUPS_JSON_APPS = json_apps
    make_admin("duena", "duena-pass-1")
    backup = make_backup(payload_format="json")
    client = signed_in_client("duena", "duena-pass-1")

    restore = restore_from(backup.pk)
    assert restore.outcome == Restore.Outcome.RESTORED
    assert is_signed_in(client)


def test_a_finished_restore_shows_no_current_phase_and_ticks_only_what_it_did(scratch_clinic):
    """A json restore loads in place (no switch) and needs no migration: those boxes get no tick."""
    make_admin("duena", "duena-pass-1")
    restore = restore_from(make_backup(payload_format="json").pk)
    client = signed_in_client("duena", "duena-pass-1")
    page = client.get(f"/admin/backups/restore/{restore.pk}/progress/").content.decode()
    connection.set_schema_to_public()
    strip = page[page.index('<ol class="respaldo-phases"') : page.index("</ol>")]
    assert "▶" not in strip and "(now)" not in strip and 'class="current"' not in strip
    for phase in ("verifying", "safety backup", "restoring", "checking"):
        assert f'<li data-phase="{phase}" class="done"><span class="respaldo-phase-mark" aria-hidden="true">✓' in strip
    for phase in ("swapping", "migrating"):
        assert (
            f'<li data-phase="{phase}" class="skipped"><span class="respaldo-phase-mark" aria-hidden="true"></span>'
            in strip
        )
    assert strip.count("(done)") == 4 and strip.count("(not needed)") == 2
