"""The platform console in a real browser (Chromium) against runserver and a real django-q2
worker: a failed and a stale clinic highlighted on the overview, backed up from the clinics
list and turning green; a clinic cloned and logged into; the catalog exported as XLSX."""

from __future__ import annotations

import io
import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

import openpyxl
from django.conf import settings
from django.db import connection
from django.utils import timezone

from backups.models import Backup, CloneJob, JobStatus
from backups.tests.helpers import SCHEMA, make_backup
from clinics.models import Clinic, Domain
from conftest import log_in

CLONE = "clinica_formacion"
CLONE_HOST = "clinica-formacion.localhost"


def _stale_and_failed(clinic: Clinic) -> None:
    """The scratch clinic: created three days ago, never backed up, and a backup failed an hour ago."""
    Clinic.objects.filter(pk=clinic.pk).update(created_at=timezone.now() - timedelta(days=3))
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Backup.objects.create(clinic=clinic, status=JobStatus.FAILED, requested_at=an_hour_ago, failed_at=an_hour_ago)


def _until(check, *, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_a_failed_and_stale_clinic_is_highlighted_backed_up_from_the_list_and_turns_green(
    web_server, browser, cluster, scratch_clinic
):
    _stale_and_failed(scratch_clinic)
    cluster()
    base = f"http://localhost:{web_server}"
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(page, f"{base}/admin/", "superadmin", "superadmin")

    overview = page.locator("#content-main").inner_text()
    assert "past their backup threshold" in overview or "past its backup threshold" in overview
    page.click("a[href*='stale=yes']")
    page.wait_for_url("**/clinics/clinic/?stale=yes")
    row = page.locator("#result_list tr", has_text="Clínica Restaura")
    assert "overdue" in row.inner_text()  # said in words, not only in red
    page.goto(f"{base}/admin/")
    page.click("a[href*='failed=24h']")
    page.wait_for_url("**/clinics/clinic/?failed=24h")
    assert page.locator("#result_list tr", has_text="Clínica Restaura").count() == 1

    page.goto(f"{base}/admin/clinics/clinic/?stale=yes")
    page.locator("#result_list tr", has_text="Clínica Restaura").locator("input.action-select").check()
    page.select_option("select[name=action]", "backup_selected")
    page.click("button[name=index], .actions button")
    page.wait_for_selector("#content form [type=submit]")
    assert "Clínica Restaura" in page.locator("#content").inner_text()  # the confirmation page names it
    page.click("#content form [type=submit]")
    _until(
        lambda: Backup.objects.filter(clinic=scratch_clinic, status=JobStatus.SUCCEEDED).exists(),
        what="the worker's backup of the stale clinic",
    )
    page.goto(f"{base}/admin/clinics/clinic/?q={SCHEMA}")
    row = page.locator("#result_list tr", has_text="Clínica Restaura").inner_text()
    assert "overdue" not in row and "Succeeded" in row
    page.goto(f"{base}/admin/clinics/clinic/?stale=yes")
    assert page.locator("#result_list tr", has_text="Clínica Restaura").count() == 0


def _drop_clone() -> None:
    """The clone's clinic, domain, schema and media folder (a second run must find the name free)."""
    shutil.rmtree(Path(settings.MEDIA_ROOT) / CLONE, ignore_errors=True)
    connection.set_schema_to_public()
    made = list(CloneJob.objects.exclude(clinic=None).values_list("clinic_id", flat=True))
    CloneJob.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{CLONE}" CASCADE')
    Domain.objects.filter(tenant_id__in=made).delete()
    Clinic.objects.filter(pk__in=made).delete()


def test_clinica_is_cloned_into_a_training_copy_and_its_admin_logs_in(web_server, browser, cluster, live_db):
    _drop_clone()  # what an interrupted earlier run may have left
    make_backup("clinica")
    cluster()
    base = f"http://localhost:{web_server}"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, f"{base}/admin/", "superadmin", "superadmin")
        page.goto(f"{base}/admin/backups/clonejob/")
        page.click("text=Clone a clinic")
        page.select_option("#id_source", label="Clínica Dental Sonrisa")
        page.fill("#id_schema_name", CLONE)
        page.fill("#id_name", "Clínica de formación")
        page.click("input[type=submit][value='Clone the clinic']")
        page.wait_for_selector(".messagelist, .errornote")
        assert page.locator(".errornote").count() == 0, page.locator(".errornote").inner_text()
        assert "asked" in page.locator(".messagelist").inner_text()
        page.wait_for_selector("text=Open the new clinic's admin", timeout=180_000)  # the page follows the job
        page.click("text=Open the new clinic's admin")
        assert page.url.startswith(f"http://{CLONE_HOST}:{web_server}/admin/")
        log_in(page, page.url, "admin", "admin")
        assert "Clínica de formación" in page.locator("#header").inner_text()
        assert Clinic.objects.get(schema_name=CLONE).domains.get().domain == CLONE_HOST
    finally:
        context.close()
        _drop_clone()


def test_the_catalog_is_exported_as_xlsx_from_the_browser(web_server, browser, live_db):
    make_backup("bienestar")
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    base = f"http://localhost:{web_server}"
    log_in(page, f"{base}/admin/", "superadmin", "superadmin")
    page.goto(f"{base}/admin/backups/backup/")
    page.click("a.export_link, a:has-text('Export')")
    page.select_option("#id_format", label="xlsx")
    with page.expect_download() as info:
        page.click("#content form [type=submit]")
    download = info.value
    assert re.search(r"\.xlsx$", download.suggested_filename)
    sheet = openpyxl.load_workbook(io.BytesIO(Path(download.path()).read_bytes())).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:3] == ("id", "clinic_schema", "clinic_name")
    assert {row[0] for row in rows[1:]} == set(Backup.objects.values_list("pk", flat=True))
    context.close()
