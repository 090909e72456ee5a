"""The README's walkthrough, "The clinic console: back up, break, restore in five minutes",
followed as written in a real browser (Chromium through Playwright) with a real worker, in
English and in Spanish.

The steps are read from README.md: each step the test takes must still be there, saying what
the test does (a step rewritten in the README breaks this test until it follows the new text).
The patient is deleted through the admin's own pages, as a person would (the demo's new
patients have no invoices, which would protect them). The name is typed as the confirmation
page shows it. Screenshots: ``docs/screenshots/walkthrough-<en|es>.png`` (the confirmation,
filled in) and ``.local/screenshots/walkthrough-<en|es>/`` (every page).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from backups.models import Backup, JobStatus, Restore
from backups.tests.browser.helpers import CLINIC, Shots, wait_for_badge
from backups.tests.helpers import LIST
from conftest import log_in
from dental.models import Patient

SECTION = "## The clinic console: back up, break, restore in five minutes"
WORDS = {
    "en-US": {"backups": "Backups", "back_up_now": "Back up now", "delete": "Delete", "restore": "Restore…"},
    "es-ES": {"backups": "Respaldos", "back_up_now": "Respaldar ahora", "delete": "Eliminar", "restore": "Restaurar…"},
}


def walkthrough_steps() -> dict[int, str]:
    """The numbered steps of the README's walkthrough section, each as one line of text."""
    text = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, "the README's walkthrough section is gone"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    steps: dict[int, str] = {}
    for match in re.finditer(r"^(\d+)\. (.*?)(?=^\d+\. |^\S|\Z)", section, re.M | re.S):
        steps[int(match.group(1))] = " ".join(match.group(2).split())
    return steps


def step(steps: dict[int, str], number: int, *phrases: str) -> None:
    """Step ``number`` of the README says each of ``phrases``: the test is about to do it."""
    for phrase in phrases:
        assert phrase in steps[number], f"README step {number} no longer says {phrase!r}: {steps[number]}"


@pytest.mark.usefixtures("clinica_put_back")
@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_the_readme_walkthrough_as_written(language, web_server, browser, cluster, tmp_path):
    steps = walkthrough_steps()
    words = WORDS[language]
    shots = Shots(language)
    shots.folder = shots.folder.parent / f"walkthrough-{language[:2]}"  # not among the other tests' shots
    shots.folder.mkdir(parents=True, exist_ok=True)
    cluster()
    context = browser.new_context(locale=language, accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # 1. Open http://clinica.localhost:8000/admin/ and log in as admin / admin.
    step(steps, 1, "http://clinica.localhost:8000/admin/", "`admin` / `admin`")
    base = f"http://{CLINIC}.localhost:{web_server}"
    log_in(page, f"{base}/admin/", "admin", "admin")
    page.wait_for_selector("#user-tools")
    shots(page, "index")

    # 2. Backups lists the backups; Back up now: PostgreSQL, a note; the row turns green.
    step(steps, 2, "**Backups** (*Respaldos*)", "**Back up now**", "PostgreSQL", '"before year-end closing"', "✓ green")
    link = page.locator(f'#content-main th a[href="{LIST}"]')
    assert link.inner_text().strip() == words["backups"]
    link.click()
    page.wait_for_url(f"**{LIST}")
    page.click(f"a:text-is('{words['back_up_now']}')")
    page.check("input[name=payload_format][value=pg]")
    page.fill("#id_note", "before year-end closing")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{LIST}")
    backup = Backup.objects.get(clinic__schema_name=CLINIC, note="before year-end closing")
    wait_for_badge(page, backup.pk, "succeeded")
    assert "✓" in page.locator(f'.respaldo-badge[data-job="{backup.pk}"]').inner_text()
    shots(page, "backed-up")

    # 3. Download gives clinica-<yyyy-mm-dd-hhmm>-<id>.respaldo, recorded on the backup's page.
    step(steps, 3, "**Download**", "`clinica-<yyyy-mm-dd-hhmm>-<id>.respaldo`", "shown on the backup's page")
    with page.expect_download() as download:
        page.click(f'a[href="{LIST}{backup.pk}/download/"]')
    assert re.fullmatch(rf"clinica-\d{{4}}-\d\d-\d\d-\d{{4}}-{backup.pk}\.respaldo", download.value.suggested_filename)
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    page.goto(f"{base}{LIST}{backup.pk}/change/")
    assert "admin" in page.locator(".field-downloads_display").inner_text()
    shots(page, "backup-page")

    # 4. Break something: delete a patient under Patients (open one, Delete, confirm).
    step(steps, 4, "delete a patient under *Patients*", "open one, **Delete**, confirm")
    with schema_context(CLINIC):
        victim = Patient.objects.filter(invoices__isnull=True).order_by("pk").first()
        assert victim is not None, "the demo has no patient that can be deleted"
        identity = (victim.pk, victim.national_id)
    connection.set_schema_to_public()
    page.goto(f"{base}/admin/dental/patient/")
    page.click(f'#result_list a[href="/admin/dental/patient/{identity[0]}/change/"]')
    page.click(f"a.deletelink:text-is('{words['delete']}')")
    page.wait_for_url(f"**/admin/dental/patient/{identity[0]}/delete/")
    shots(page, "delete-patient")
    page.click("#content form input[type=submit]")
    page.wait_for_url("**/admin/dental/patient/")
    with schema_context(CLINIC):
        assert not Patient.objects.filter(pk=identity[0]).exists()
    connection.set_schema_to_public()

    # 5. Restore… on the backup; type the clinic's name as shown; phases; result; Undo; patient back.
    step(steps, 5, "**Restore…**", "type the clinic's name as it shows it", "**Undo this restore**", "patient is back")
    page.goto(f"{base}{LIST}")
    page.click(f'a[href="{LIST}{backup.pk}/restore/"]:text-is("{words["restore"]}")')
    page.wait_for_url(f"**{LIST}{backup.pk}/restore/")
    assert page.locator("table.respaldo-counts").count() >= 1
    shown = page.locator("#content-main .help strong").first.inner_text()
    assert shown == "Clínica Dental Sonrisa"
    assert shown in page.locator("#site-name").inner_text()  # the very name the page's header shows
    page.fill("#id_confirm", shown)
    shots(page, "restore-confirm")
    shutil.copy(shots.folder / f"{shots.count:02d}-restore-confirm.png", docs_shot(language))
    page.click("#content-main input[type=submit]")
    page.wait_for_url("**/admin/backups/restore/*/progress/**")
    page.wait_for_selector(".respaldo-done, .respaldo-error", timeout=180_000)
    restore = Restore.objects.order_by("-pk").first()
    assert restore.backup_id == backup.pk and restore.status == JobStatus.SUCCEEDED, restore.error_message()
    assert page.locator(f'a.button[href="{LIST}{restore.safety_backup_id}/restore/"]').count() == 1  # Undo
    shots(page, "restored")
    page.goto(f"{base}/admin/dental/patient/{identity[0]}/change/")
    assert page.locator("#id_national_id").input_value() == identity[1]

    # 6. Upload a backup file to restore: the same file as a stored backup leads to that backup.
    step(steps, 6, "**Upload a backup file to restore**", "the same file as backup #3")
    page.goto(f"{base}{LIST}upload/")
    page.set_input_files("#id_file", str(saved))
    page.click("#content-main input[type=submit]")
    page.wait_for_url(f"**{LIST}{backup.pk}/restore/")
    assert f"#{backup.pk}" in page.locator(".messagelist").inner_text()
    shots(page, "upload-same-file")
    context.close()


def docs_shot(language: str) -> Path:
    folder = Path(settings.BASE_DIR) / "docs" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"walkthrough-{language[:2]}.png"
