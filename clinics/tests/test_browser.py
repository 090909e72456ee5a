"""The admin in a real browser (headless Chromium driven by Playwright), as a clinic admin uses it."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import sync_playwright

from conftest import subprocess_env

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def web_server(live_db, tmp_path):
    """``manage.py runserver`` on the test database; yields its port."""
    port = free_port()
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
def browser():
    assert Path(CHROMIUM).exists(), "Debian package chromium is needed (make test installs it)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_clinic_admin_works_with_the_records_in_a_browser(web_server, browser, tmp_path):
    tmp_path = Path(__import__("os").environ.get("SCREENSHOT_DIR", str(tmp_path)))
    page = browser.new_page(locale="es-ES")
    base = f"http://clinica.localhost:{web_server}"
    log_in(page, f"{base}/admin/", "admin", "admin")
    assert page.locator("#site-name").inner_text().startswith("Clínica Dental Sonrisa")
    nav = page.locator("#content-main").inner_text()
    assert "Pacientes" in nav and "Facturas" in nav and "Clínicas" not in nav
    page.click('#content-main a[href="/admin/dental/patient/"]')
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 8
    page.screenshot(path=str(tmp_path / "clinic-patients.png"), full_page=True)
    assert (tmp_path / "clinic-patients.png").stat().st_size > 10_000

    page = browser.new_page()
    log_in(page, f"{base}/admin/", "recepcion", "recepcion")
    nav = page.locator("#content-main").inner_text()
    assert "Patients" in nav and "Users" not in nav and "Invoices" not in nav


def test_platform_admin_manages_clinics_in_a_browser(web_server, browser):
    page = browser.new_page()
    log_in(page, f"http://localhost:{web_server}/admin/", "superadmin", "superadmin")
    page.click('#content-main a[href="/admin/clinics/clinic/"]')
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody").inner_text()
    assert "Clínica Dental Sonrisa" in rows and "Bienestar Odontología" in rows
    response = page.goto(f"http://desconocida.localhost:{web_server}/admin/")
    assert response.status == 404


@pytest.fixture
def restoring_clinic(live_db):
    """clinica with a restore running: its row, and the clinic's job lock held as its worker would
    (no data moves: the page must show before any does)."""
    from backups.jobs import LOCK_NAMESPACE
    from backups.models import Backup, JobStatus, Restore
    from backups.postgres import connect_separately
    from clinics.models import Clinic

    clinic = Clinic.objects.get(schema_name="clinica")
    backup = Backup.objects.create(clinic=clinic, status=JobStatus.SUCCEEDED, storage_name="x", sha256="0" * 64)
    Restore.objects.create(clinic=clinic, backup=backup, status=JobStatus.RUNNING, started_at=backup.requested_at)
    with connect_separately(autocommit=True) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, clinic.pk])
        yield clinic


def test_a_clinic_under_restore_shows_a_clear_page(web_server, restoring_clinic, browser, tmp_path):
    tmp_path = Path(__import__("os").environ.get("SCREENSHOT_DIR", str(tmp_path)))
    page = browser.new_page(locale="es-ES")
    response = page.goto(f"http://clinica.localhost:{web_server}/admin/")
    assert response.status == 503 and response.headers["retry-after"] == "15"
    assert page.locator("h1").inner_text() == "Restauración en curso"
    assert "Clínica Dental Sonrisa" in page.locator("main").inner_text()
    page.screenshot(path=str(tmp_path / "restore-in-progress.png"))
    other = browser.new_page().goto(f"http://bienestar.localhost:{web_server}/admin/login/")
    assert other.status == 200
