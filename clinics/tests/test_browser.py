"""The admin in a real browser (headless Chromium driven by Playwright), as a clinic admin uses it."""

from pathlib import Path

import pytest

from conftest import log_in


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
    Restore.objects.create(
        clinic=clinic,
        backup=backup,
        status=JobStatus.RUNNING,
        started_at=backup.requested_at,
        progress_phase="restoring",
    )
    with connect_separately(autocommit=True) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, clinic.pk])
        yield clinic


def test_a_clinic_under_restore_shows_a_clear_page(web_server, restoring_clinic, browser, tmp_path):
    from backups.postgres import connect_separately

    tmp_path = Path(__import__("os").environ.get("SCREENSHOT_DIR", str(tmp_path)))
    page = browser.new_page(locale="es-ES")
    # While the new data is built apart from the live clinic, its pages stay readable.
    response = page.goto(f"http://clinica.localhost:{web_server}/admin/login/")
    assert response.status == 200
    # Only the final swap closes them, with a clear page. (The phase is written on a connection of
    # its own, as the restore does: Django's connection here would be another one, left open by
    # Playwright's greenlet, and the test database could not be dropped.)
    with connect_separately(autocommit=True) as worker:
        worker.execute(
            "UPDATE backups_restore SET progress_phase = 'swapping' WHERE clinic_id = %s AND status = 'running'",
            [restoring_clinic.pk],
        )
    response = page.goto(f"http://clinica.localhost:{web_server}/admin/")
    assert response.status == 503 and response.headers["retry-after"] == "15"
    assert page.locator("h1").inner_text() == "Restauración en curso"
    assert "Clínica Dental Sonrisa" in page.locator("main").inner_text()
    page.screenshot(path=str(tmp_path / "restore-in-progress.png"))
    other = browser.new_page().goto(f"http://bienestar.localhost:{web_server}/admin/login/")
    assert other.status == 200
