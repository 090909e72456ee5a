"""The hints a clinic administrator reads before acting, in a real browser in English and Spanish: a
clinic without backups says when its first daily backup runs, and Back up now says how much of the
manual-backup limit is used."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from backups.models import Backup
from backups.tests.browser.helpers import Shots
from conftest import log_in

CLINIC = "clinica"
LIST = "/admin/backups/backup/"
WORDS = {
    "en-US": {"first": "the first daily backup", "used": "Manual backups in the last 24 hours"},
    "es-ES": {"first": "el primer respaldo diario", "used": "Respaldos manuales en las últimas 24 horas"},
}


@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_a_new_clinic_says_when_it_is_first_backed_up_and_back_up_now_shows_the_limit(
    language, web_server, browser, live_db
):
    assert not Backup.objects.filter(clinic__schema_name=CLINIC).exists()  # the demo clinic, never backed up here
    base = f"http://{CLINIC}.localhost:{web_server}"
    shots = Shots(language)
    context = browser.new_context(locale=language, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, f"{base}/admin/", "admin", "admin")
        page.goto(f"{base}{LIST}")
        assert WORDS[language]["first"] in page.inner_text("#respaldo-first-backup")
        shots(page, "first-backup")
        page.goto(f"{base}{LIST}now/")
        assert WORDS[language]["used"] in page.inner_text("#respaldo-fair-use")
        assert page.locator("input[type=submit][disabled]").count() == 0
        shots(page, "backup-now-limit")
        docs = Path(settings.BASE_DIR) / "docs" / "screenshots"
        shutil.copy(sorted(shots.folder.glob("*-backup-now-limit.png"))[-1], docs / f"backup-now-{language[:2]}.png")
        shutil.copy(sorted(shots.folder.glob("*-first-backup.png"))[-1], docs / f"first-backup-{language[:2]}.png")
    finally:
        context.close()
