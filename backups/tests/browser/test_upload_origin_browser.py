"""Uploading a downloaded backup file in a real browser (Debian's Chromium via Playwright), in
English and Spanish: the very file of a stored backup leads to that backup ("the same file as
backup #N", nothing stored twice); once retention has removed it, the uploaded copy is kept and
its list row, page and restore confirmation say when its data was backed up, not when it came in.

Screenshots: ``.local/screenshots/<language>/`` (or ``$SCREENSHOT_DIR``); the confirmation is
copied to ``docs/screenshots/upload-original-date-<en|es>.png``.
"""

from __future__ import annotations

import hashlib
import shutil
import zoneinfo
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from backups.models import Backup, JobStatus
from backups.services.backup import backup_request, backup_run
from backups.tests.browser.helpers import Shots
from clinics.models import Clinic
from conftest import log_in

CLINIC = "clinica"
LIST = "/admin/backups/backup/"
NOTE = "antes de migrar"

WORDS = {
    "en-US": {
        "same": "the same file as backup #{id}",
        "backed_up": "backed up {when} (manual, note “antes de migrar”)",
        "kept": "not stored a second time",
    },
    "es-ES": {
        "same": "el mismo archivo que el respaldo #{id}",
        "backed_up": "respaldado el {when} (manual, nota “antes de migrar”)",
        "kept": "no se guardó por segunda vez",
    },
}


def shown_date(iso: str, language: str) -> str:
    """The manifest's creation time in the clinic's time zone, as a reader of ``language`` sees it."""
    zone = zoneinfo.ZoneInfo(Clinic.objects.get(schema_name=CLINIC).time_zone)
    value = datetime.fromisoformat(iso).astimezone(zone)
    return f"{value:%Y-%m-%d %H:%M}"  # the console's one format, whatever the language


@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_uploading_a_downloaded_backup_shows_its_original_date_and_the_same_file(
    language, web_server, browser, live_db, tmp_path
):
    words = WORDS[language]
    request = backup_request(clinic=CLINIC, note=NOTE, requested_by="admin", enqueue=False)
    original = backup_run(backup_id=request.pk)
    assert original.status == JobStatus.SUCCEEDED, original.error
    backed_up = words["backed_up"].format(when=shown_date(original.manifest["created_at"], language))
    same = words["same"].format(id=original.pk)
    shots = Shots(language)
    context = browser.new_context(locale=language, accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    base = f"http://{CLINIC}.localhost:{web_server}"
    log_in(page, f"{base}/admin/", "admin", "admin")

    # download the backup, as a clinic keeps a copy of its own
    page.goto(f"{base}{LIST}")
    with page.expect_download() as download:
        page.click(f'a[href="{LIST}{original.pk}/download/"]')
    saved: Path = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == original.sha256
    rows = Backup.objects.count()

    # upload it while the catalog still has it: that backup, not a second copy
    page.goto(f"{base}{LIST}upload/")
    page.set_input_files("#id_file", str(saved))
    page.click("input[type=submit]")
    page.wait_for_url(f"**{LIST}{original.pk}/restore/")
    message = page.locator(".messagelist").inner_text()
    assert same in message and words["kept"] in message
    assert Backup.objects.count() == rows
    shots(page, "upload-same-file")

    # retention removed it (the row stays); the same file uploaded now is kept, and tells its origin
    Backup.objects.filter(pk=original.pk).update(expired_at=timezone.now())
    page.goto(f"{base}{LIST}upload/")
    page.set_input_files("#id_file", str(saved))
    page.click("input[type=submit]")
    page.wait_for_url(f"**{LIST}*/restore/")
    copy = Backup.objects.get(kind=Backup.Kind.UPLOADED, sha256=original.sha256)
    assert page.url.endswith(f"{LIST}{copy.pk}/restore/")
    facts = page.locator("table.respaldo-facts").inner_text()
    assert backed_up in facts and same in facts and f"({CLINIC})" in facts
    shots(page, "upload-original-date")
    destination = Path(settings.BASE_DIR) / "docs" / "screenshots" / f"upload-original-date-{language[:2]}.png"
    shutil.copyfile(shots.folder / f"{shots.count:02d}-upload-original-date.png", destination)

    page.goto(f"{base}{LIST}")
    row = page.locator("tr", has=page.locator(f'a[href="{LIST}{copy.pk}/change/"]')).inner_text()
    assert backed_up in row and same in row
    shots(page, "upload-original-date-list")

    page.goto(f"{base}{LIST}{copy.pk}/change/")
    origin = page.locator(".field-origin_display").inner_text()
    assert backed_up in origin and same in origin
    shots(page, "upload-original-date-page")
    context.close()
