"""While a restore runs, the clinic stays readable; its changes are paused; only the swap closes it.

Real PostgreSQL, real locks, no mocks. The first tests put a running restore row in place
with the clinic's job lock really held on another connection (what ``restore_in_progress``
checks), and drive the admin through Django's test client. The last one runs a REAL pg
restore of a clinic with a big table and holds it with real locks: once while it has
built the new data (phase "restoring", its transaction open), when another session and
the admin read the live clinic with ``lock_timeout = 2s`` (a wait fails instead of
hanging), and once in its swap, when the pages answer 503.
"""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django_tenants.utils import schema_context

from backups.models import Backup, JobStatus, Restore
from backups.services import restore as restores
from backups.tests.helpers import (
    FILLER_ROWS,
    SCHEMA,
    add_filler,
    damage_clinic,
    make_backup,
    other_connection,
    table_checksums,
    wait_for,
)
from clinics.models import Clinic
from conftest import host_client
from dental.models import Patient

PAUSED = (
    "A restore of this clinic is in progress; changes are paused. Nothing was saved. "
    "Go back and try again when it has finished."
)
CLOSED = "pages are unavailable until it finishes"  # the "restore in progress" page


def logged_in(host: str) -> Client:
    """A test client logged in as the clinic's ``admin`` (password ``admin``)."""
    client = host_client(host)
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "admin"})
    assert response.status_code == 302, f"admin could not log in at {host}"
    return client


def first_patient(schema: str = "clinica") -> Patient:
    with schema_context(schema):
        return Patient.objects.order_by("pk").first()


def patient_form(patient: Patient, **changes: str) -> dict[str, str]:
    """What the admin's change form of ``patient`` posts, with ``changes``."""
    fields = {
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "national_id": patient.national_id,
        "birth_date": patient.birth_date.isoformat() if patient.birth_date else "",
        "phone": patient.phone,
        "email": patient.email,
        "allergies": json.dumps(patient.allergies),
        "notes": patient.notes,
    }
    return {**fields, **changes}


# --- The rule, through the admin ----------------------------------------------------------


def test_the_clinic_is_read_while_the_new_data_is_built(running_restore):
    client = logged_in("clinica.localhost")
    restore = running_restore("restoring")
    response = client.get("/admin/dental/patient/")
    assert response.status_code == 200
    assert "8 patients" in response.content.decode()
    assert response.wsgi_request.restore_in_progress == restore
    assert response.context["restore_in_progress"] == restore  # the context processor, for the banner
    assert response.context["restore_phase"] == "restoring"
    assert client.head("/admin/dental/patient/").status_code == 200
    assert client.options("/admin/dental/patient/").status_code == 200


def test_the_banner_says_what_is_going_on(running_restore):
    client = logged_in("clinica.localhost")
    restore = running_restore("checking")
    request = client.get("/admin/dental/patient/").wsgi_request
    banner = render_to_string("backups/restore_banner.html", request=request)
    assert 'role="status"' in banner
    assert "A restore of this clinic is in progress (phase: checking)." in banner
    assert "You can read; changes are paused until it finishes." in banner
    assert f'href="/admin/backups/restore/{restore.pk}/progress/"' in banner and "Follow the restore" in banner
    calm = logged_in("bienestar.localhost").get("/admin/dental/patient/").wsgi_request
    assert calm.restore_in_progress is None
    assert render_to_string("backups/restore_banner.html", request=calm).strip() == ""


def test_a_change_is_refused_and_nothing_is_written(running_restore):
    client = logged_in("clinica.localhost")
    running_restore("restoring")
    patient = first_patient()
    before = (patient.first_name, patient.notes)
    url = f"/admin/dental/patient/{patient.pk}/change/"
    response = client.post(
        url, patient_form(patient, first_name="Cambiado"), HTTP_REFERER=f"http://clinica.localhost{url}"
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "15" and response["Cache-Control"] == "no-store"
    page = response.content.decode()
    assert PAUSED in page
    assert f'<a href="http://clinica.localhost{url}">Go back</a>' in page
    assert 'http-equiv="refresh"' not in page  # a refused change is not sent again by itself
    after = first_patient()
    assert (after.first_name, after.notes) == before
    elsewhere = client.post(url, patient_form(patient, first_name="Otra"), HTTP_REFERER="https://evil.example/phish")
    assert elsewhere.status_code == 503 and '<a href="/admin/">Go back</a>' in elsewhere.content.decode()
    for method in (client.put, client.patch, client.delete):
        assert method(url).status_code == 503
    assert client.post(f"/admin/dental/patient/{patient.pk}/delete/", {"post": "yes"}).status_code == 503
    with schema_context("clinica"):
        assert Patient.objects.filter(pk=patient.pk, first_name=before[0]).exists()


def test_logging_in_and_out_still_works(running_restore):
    running_restore("restoring")
    client = logged_in("clinica.localhost")  # a POST to /admin/login/
    assert client.get("/admin/").status_code == 200
    assert client.post("/admin/logout/").status_code == 200
    assert client.get("/admin/").status_code == 302  # logged out: to the login page


def test_the_swap_closes_the_pages_to_readers_too(running_restore):
    client = logged_in("clinica.localhost")
    running_restore("swapping")
    for path in ["/admin/dental/patient/", "/admin/login/"]:
        response = client.get(path)
        assert response.status_code == 503 and response["Retry-After"] == "15"
        assert response["Cache-Control"] == "no-store"
        assert "Restore in progress" in response.content.decode() and CLOSED in response.content.decode()
    assert client.post("/admin/login/", {"username": "admin", "password": "admin"}).status_code == 503


@pytest.mark.parametrize(
    ("payload_format", "phase", "status"),
    [
        ("json", "restoring", 503),  # loads IN PLACE: readers would wait on its locks
        ("json", "checking", 503),
        ("json", "safety backup", 200),
        ("json", "migrating", 200),
        ("pg", "verifying", 200),
        ("pg", "safety backup", 200),
        ("pg", "restoring", 200),  # builds <clinic>__restoring apart
        ("pg", "checking", 200),
        ("pg", "migrating", 200),
    ],
)
def test_which_phases_close_the_pages(running_restore, payload_format, phase, status):
    client = logged_in("clinica.localhost")
    restore = running_restore(phase, payload_format)
    assert restores.restore_blocks_readers(restore) == (status == 503)
    response = client.get("/admin/dental/patient/")
    assert response.status_code == status
    if status == 503:
        assert CLOSED in response.content.decode()


def test_another_clinic_is_unaffected(running_restore):
    running_restore("swapping")
    client = logged_in("bienestar.localhost")
    response = client.get("/admin/dental/patient/")
    assert response.status_code == 200 and response.wsgi_request.restore_in_progress is None
    patient = first_patient("bienestar")
    response = client.post(f"/admin/dental/patient/{patient.pk}/change/", patient_form(patient, first_name="Cambiado"))
    assert response.status_code == 302
    assert first_patient("bienestar").first_name == "Cambiado"
    assert host_client("localhost").get("/admin/login/").status_code == 200


def test_a_dead_restore_pauses_nothing(db):
    """A running row without its worker's lock changes nothing any more: the clinic is fully open."""
    clinic = Clinic.objects.get(schema_name="clinica")
    backup = Backup.objects.create(clinic=clinic, status=JobStatus.SUCCEEDED, storage_name="x", sha256="0" * 64)
    Restore.objects.create(clinic=clinic, backup=backup, status=JobStatus.RUNNING, progress_phase="swapping")
    client = logged_in("clinica.localhost")
    assert client.get("/admin/dental/patient/").wsgi_request.restore_in_progress is None


# --- The experiment: a real pg restore, and readers meanwhile ---------------------------------


def restore_backend(restore_id: int) -> tuple[int, str | None, str] | None:
    """(pid, wait_event_type, state) of the session running the restore's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, wait_event_type, state FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [f"respaldo-restore-{restore_id}"],
        )
        return cursor.fetchone()


def waits_on_a_lock(restore_id: int) -> bool:
    backend = restore_backend(restore_id)
    return backend is not None and backend[1] == "Lock"


def phase_write_waits() -> bool:
    """The restore's worker (Django's connection) waits to write its next phase on the row we locked."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND query LIKE 'UPDATE %%backups_restore%%' AND query LIKE %s)",
            ["%checking%"],
        )
        return bool(cursor.fetchone()[0])


def live_reader() -> psycopg.Connection:
    """Another session reading the live clinic; a wait on a lock fails it after 2 s."""
    reader = other_connection()
    reader.execute("SET lock_timeout = '2s'")
    reader.execute(f"SET search_path TO {SCHEMA}, public")  # as django-tenants does
    return reader


def locks_on_live(pid: int) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.mode, coalesce(c.relname, l.locktype) FROM pg_locks l "
            "LEFT JOIN pg_class c ON l.locktype = 'relation' AND c.oid = l.relation "
            "WHERE l.pid = %s AND (c.relnamespace = %s::regnamespace "
            "OR (l.locktype = 'object' AND l.objid = %s::regnamespace))",
            [pid, SCHEMA, SCHEMA],
        )
        return cursor.fetchall()


def read_the_live_clinic(client: Client, patients: int) -> None:
    """Another session and the admin read the live clinic; neither may wait on a lock (2 s)."""
    with live_reader() as reader:
        assert reader.execute("SELECT count(*) FROM dental_patient").fetchone()[0] == patients
        assert reader.execute("SELECT count(*) FROM filler").fetchone()[0] == FILLER_ROWS
        assert len(reader.execute("SELECT * FROM dental_patient ORDER BY last_name LIMIT 20").fetchall()) == 20
        assert reader.execute("SELECT note FROM filler WHERE id = 4242").fetchone()[0].startswith("row 4242 ")
    with connection.cursor() as cursor:  # the test client's requests run on this connection
        cursor.execute("SET lock_timeout = '2s'")
    try:
        response = client.get("/admin/dental/patient/")
        assert response.status_code == 200
        assert f"{patients} patients" in response.content.decode()
        patient = first_patient(SCHEMA)
        assert client.get(f"/admin/dental/patient/{patient.pk}/change/").status_code == 200
        form = patient_form(patient, first_name="Cambiado")
        refused = client.post(f"/admin/dental/patient/{patient.pk}/change/", form)
        assert refused.status_code == 503 and PAUSED in refused.content.decode()
        assert first_patient(SCHEMA).first_name == patient.first_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def run_in_thread(restore_id: int, outcome: dict) -> threading.Thread:
    def run() -> None:
        try:
            outcome["restore"] = restores.restore_run(restore_id=restore_id)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def begin(conn: psycopg.Connection, statement: str, params: list | None = None) -> None:
    conn.execute("BEGIN")
    conn.execute(statement, params)


def test_a_real_pg_restore_leaves_the_live_clinic_readable_until_the_swap(scratch_clinic, settings):
    settings.BACKUPS_RESTORE_LOCK_TIMEOUT_MS = 120_000  # our holds must not make the restore give up
    add_filler()
    with schema_context(SCHEMA):
        get_user_model().objects.create_superuser("admin", "admin@restaura.example", "admin")
    connection.set_schema_to_public()
    original = table_checksums(SCHEMA)
    backup = make_backup()
    damage_clinic()
    with schema_context(SCHEMA):
        patients = Patient.objects.count()
    connection.set_schema_to_public()
    client = logged_in(f"{SCHEMA}.localhost")
    staging, row_lock, swap_lock = other_connection(), other_connection(), other_connection()
    outcome: dict = {}
    thread = None
    try:
        # 1. An uncommitted schema of the staging name: the restore's CREATE SCHEMA waits on it.
        begin(staging, f"CREATE SCHEMA {SCHEMA}{restores.STAGING_SUFFIX}")
        restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)
        thread = run_in_thread(restore.pk, outcome)
        wait_for(
            lambda: Restore.objects.get(pk=restore.pk).progress_phase == "restoring" and waits_on_a_lock(restore.pk),
            what="the restore to start restoring",
        )
        # 2. Its next phase write will wait on this row lock: it then holds the built data, uncommitted.
        begin(row_lock, "SELECT id FROM public.backups_restore WHERE id = %s FOR UPDATE", [restore.pk])
        staging.execute("ROLLBACK")
        wait_for(phase_write_waits, what="the restore to have built the new data")
        pid, _, state = restore_backend(restore.pk)
        assert state == "idle in transaction"  # the whole payload loaded, not committed
        assert Restore.objects.get(pk=restore.pk).progress_phase == "restoring"
        assert restores.restore_in_progress(scratch_clinic.pk).pk == restore.pk

        read_the_live_clinic(client, patients)
        assert locks_on_live(pid) == []  # the restore has not touched the live clinic

        # 3. Someone still reading when the swap comes: the swap waits, and the pages close meanwhile.
        begin(swap_lock, f"SELECT count(*) FROM {SCHEMA}.dental_patient")
        row_lock.execute("ROLLBACK")
        wait_for(
            lambda: Restore.objects.get(pk=restore.pk).progress_phase == "swapping" and waits_on_a_lock(restore.pk),
            what="the restore to wait for its swap",
        )
        closed = client.get("/admin/dental/patient/")
        assert closed.status_code == 503 and CLOSED in closed.content.decode()
        swap_lock.execute("ROLLBACK")
        thread.join(300)
        assert not thread.is_alive()
    finally:
        for conn in (staging, row_lock, swap_lock):
            conn.close()
        if thread is not None:
            thread.join(300)
    if "error" in outcome:
        raise outcome["error"]
    restore.refresh_from_db()
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert restore.outcome == Restore.Outcome.RESTORED
    # Every table as in the backup, but the sessions: the live ones are carried over
    # (backups.services.sessions), so the reader who signed in after the backup still is.
    assert {t: s for t, s in table_checksums(SCHEMA).items() if t != "django_session"} == {
        t: s for t, s in original.items() if t != "django_session"
    }
    after = client.get("/admin/dental/patient/")
    assert after.status_code == 200 and after.wsgi_request.restore_in_progress is None
