"""Test fixtures shared by every app.

The test database is a real PostgreSQL (embedded, or ``DATABASE_URL``). At session start
it gets the demo platform and two small demo clinics, committed, so tests can use them
inside their own rolled-back transactions.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.utils import translation

from clinics.demo import seed_demo

DEMO_PATIENTS = 8


@pytest.fixture(scope="session", autouse=True)
def _private_backup_storage(tmp_path_factory):
    """Backups and archive keys of the test session live in a temporary folder."""
    root = tmp_path_factory.mktemp("respaldo")
    storages = {**settings.STORAGES}
    storages["backups"] = {
        "BACKEND": "backups.storage.local.BackupLocalStorage",
        "OPTIONS": {
            "location": str(root / "backups"),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    }
    override = override_settings(
        STORAGES=storages,
        BACKUPS_LOCAL_DIR=root / "backups",
        BACKUPS_AGE_IDENTITIES=[],
        BACKUPS_AGE_IDENTITY=None,
        BACKUPS_AGE_IDENTITY_FILE=str(root / "backup-keys.txt"),
        BACKUPS_AGE_OLD_IDENTITIES=[],
        BACKUPS_GENERATE_DEV_KEY=True,
    )
    override.enable()
    yield root
    override.disable()


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker):
    """Create the test database for every run (also one whose tests only use ``live_db``),
    with the demo platform and clinics committed in it."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=request.config.option.verbose, interactive=False, aliases={"default"})
        seed_demo(clinics=2, patients=DEMO_PATIENTS)
        _give_demo_clinics_their_keys()
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=request.config.option.verbose)


def _give_demo_clinics_their_keys() -> None:
    """Each demo clinic's archive key, committed once: archives a test makes (and caches for the
    session) stay readable after that test's transaction is rolled back."""
    from backups.keys.clinic import writing_identity
    from clinics.models import Clinic

    for clinic in Clinic.objects.exclude(schema_name="public"):
        writing_identity(clinic)


@pytest.fixture(autouse=True)
def _default_language_after_test():
    """A test request in Spanish leaves Spanish active in this thread (LocaleMiddleware activates a
    language per request and never resets it): the next test starts in the default language."""
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _public_schema_after_test():
    """A test that enters a clinic's schema must not leak it into the next test."""
    yield
    if connection.connection is not None:
        connection.set_schema_to_public()


def host_client(host: str) -> Client:
    """A test client whose requests go to ``host`` (a clinic's domain or the platform's)."""
    return Client(HTTP_HOST=host)


@pytest.fixture
def clinic_client(db):
    """Client for the ``clinica`` demo clinic."""
    return host_client("clinica.localhost")


@pytest.fixture
def platform_client(db):
    """Client for the platform (public schema)."""
    return host_client("localhost")


def database_url() -> str:
    """A DATABASE_URL for the test database, for processes the tests start."""
    db = connection.settings_dict
    if db.get("HOST", "").startswith("/"):
        return f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}&port={db['PORT']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgresql://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a manage.py process working on the test database and test storage."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        BACKUPS_LOCAL_DIR=str(settings.BACKUPS_LOCAL_DIR),
        BACKUPS_AGE_IDENTITY_FILE=str(settings.BACKUPS_AGE_IDENTITY_FILE),
        BACKUPS_AGE_IDENTITY="",
        BACKUPS_AGE_IDENTITIES="",
        BACKUPS_AGE_OLD_IDENTITIES=",".join(settings.BACKUPS_AGE_OLD_IDENTITIES),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``manage.py`` in a separate process against the test database."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(settings.BASE_DIR),
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def live_db(django_db_setup, django_db_blocker):
    """Committed database access (for work done by other processes); backups made are removed after."""
    from backups.models import Backup, Download, Restore

    assert connection.settings_dict["NAME"].startswith("test_"), "live_db must run on the test database"
    with django_db_blocker.unblock():
        before = set(Backup.objects.values_list("pk", flat=True))
        before_restores = set(Restore.objects.values_list("pk", flat=True))
        yield
        connection.set_schema_to_public()
        Restore.objects.exclude(pk__in=before_restores).delete()
        Download.objects.exclude(backup_id__in=before).delete()
        Backup.objects.exclude(pk__in=before).delete()


@pytest.fixture
def scratch_clinic(live_db):
    """A committed clinic of its own (schema ``restaura``), dropped after the test."""
    from django_tenants.utils import schema_context

    from clinics.demo import ensure_clinic, ensure_clinic_groups, ensure_records

    clinic = ensure_clinic("restaura", "Clínica Restaura")
    with schema_context("restaura"):
        ensure_clinic_groups()
        ensure_records(patients=30, seed="restaura")
    connection.set_schema_to_public()
    yield clinic
    connection.set_schema_to_public()
    from backups.models import Backup, Restore

    Restore.objects.filter(clinic=clinic).delete()
    Backup.objects.filter(clinic=clinic).delete()
    clinic.delete(force_drop=True)


# --- Browser tests --------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def web_server(live_db, tmp_path):
    """``manage.py runserver`` on the test database; yields its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "runserver.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=settings.BASE_DIR,
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("runserver did not start: " + Path(log.name).read_text())
    yield port
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture
def browser(monkeypatch):
    """Headless Chromium from Debian's package, driven by Playwright (no browser download).

    Playwright's sync API keeps an event loop in the test's thread; the test still talks to the
    database synchronously (nothing else runs in that loop), so Django is told it may. Django
    keys its connections on that context, so the ones opened meanwhile are closed here (or the
    test database could not be dropped at the end).
    """
    from django.db import connections
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")

    assert Path(CHROMIUM).exists(), "Debian package chromium is needed (make test installs it)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()
        connections.close_all()


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
