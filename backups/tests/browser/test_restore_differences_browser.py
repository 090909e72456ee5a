"""The restore confirmation in a real browser, in English and Spanish: the net counts at once, then,
when a real django-q2 worker has compared the backup with the clinic record by record, the page's
script shows what restoring would remove, bring back and change, and offers "Restore one patient…"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from backups.tests.browser.helpers import Shots
from backups.tests.helpers import SCHEMA, change_the_clinic_since, make_backup
from conftest import log_in

WORDS = {
    "en-US": {
        "comparing": "Comparing the backup with the clinic record by record",
        "removed": "1 record added since the backup is removed.",
        "back": "1 record deleted since comes back.",
        "changed": "1 record edited since goes back to how it was",
        "pick": "Restore one patient…",
        "row": "Appointments\t",
    },
    "es-ES": {
        "comparing": "Comparando el respaldo con la clínica registro a registro",
        "removed": "1 registro añadido después del respaldo se elimina.",
        "back": "1 registro borrado desde entonces vuelve.",
        "changed": "1 registro editado desde entonces vuelve a como estaba",
        "pick": "Restaurar un paciente…",
        "row": "Citas\t",
    },
}


@pytest.mark.usefixtures("jefa")
@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_the_confirmation_shows_what_a_restore_removes_brings_back_and_changes(web_server, browser, cluster, language):
    words = WORDS[language]
    backup = make_backup(SCHEMA)
    ids = change_the_clinic_since(backup.pk)
    appointments = backup.manifest["tables"]["dental_appointment"]
    base = f"http://{SCHEMA}.localhost:{web_server}"
    shots = Shots(language)
    context = browser.new_context(locale=language, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, f"{base}/admin/", "jefa", "jefa-pass-1")
        page.goto(f"{base}/admin/backups/backup/{backup.pk}/restore/")
        row = page.locator("#respaldo-differences tbody tr").filter(has_text=words["row"].strip()).first
        net = row.locator("td").all_inner_texts()[:3]
        assert net == [str(appointments), str(appointments), "0"]  # net: nothing to see yet
        assert words["comparing"] in page.inner_text("#respaldo-differences")

        cluster()  # a real worker picks the comparison the page asked for
        page.wait_for_selector(".respaldo-differences-summary", timeout=90_000)
        summary = " ".join(page.inner_text(".respaldo-differences-summary").split())
        for key in ("removed", "back", "changed", "pick"):
            assert words[key] in summary, (key, summary)
        assert ids["gone_patient"] in summary and ids["edited_patient"] in summary
        assert words["comparing"] not in page.inner_text("body")
        row = page.locator("#respaldo-differences tbody tr").filter(has_text=words["row"].strip()).first
        assert row.locator("td").all_inner_texts() == [str(appointments), str(appointments), "0", "1", "1", "0"]
        shots(page, "restore-confirm-differences")
        shutil.copy(
            sorted(shots.folder.glob("*-restore-confirm-differences.png"))[-1],
            Path(settings.BASE_DIR) / f"docs/screenshots/restore-confirm-differences-{language[:2]}.png",
        )

        page.click(f"a[href$='/pick/?national_id={ids['edited_patient']}']")
        page.wait_for_url("**/pick/?national_id=*")
        assert ids["edited_patient"] in page.inner_text("body")  # the selective restore's preview of that patient
    finally:
        context.close()
        connection.set_schema_to_public()
