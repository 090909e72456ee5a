"""The platform's offboard and bring-back pages, and a clinic's policy page, in a real browser
(Debian's Chromium driven by Playwright), in English and in Spanish.

Offboarding drops a schema: only the ``scratch_clinic`` (schema ``restaura``) is offboarded
here, never the demo clinics. Screenshots go to ``.local/screenshots/<language>/`` (copies of
the main ones in ``docs/screenshots/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from backups.models import AuditEntry
from backups.tests.browser.helpers import Shots
from backups.tests.helpers import SCHEMA, schemas
from clinics.models import Clinic
from conftest import log_in

WORDS = {
    "en-US": {
        "mistyped": f"Type the clinic's name exactly as shown ({SCHEMA}) to offboard it.",
        "offboarded": "Offboarded on",
        "bring_back": "Bring these clinics back?",
        "back": "is back, with the data of backup",
        "time": "Time zone",
    },
    "es-ES": {
        "mistyped": f"Escriba el nombre de la clínica tal como aparece ({SCHEMA}) para darla de baja.",
        "offboarded": "Dada de baja el",
        "bring_back": "¿Recuperar estas clínicas?",
        "back": "ha vuelto, con los datos del respaldo",
        "time": "Zona horaria",
    },
}


def keep(shots: Shots, shot: str, name: str, language: str) -> None:
    """Copy the screenshot just taken as ``shot`` to ``docs/screenshots/<name>-<en|es>.png``."""
    taken = shots.folder / f"{shots.count:02d}-{shot}.png"
    shutil.copy(taken, Path(settings.BASE_DIR) / "docs" / "screenshots" / f"{name}-{language[:2]}.png")


def choose_action(page, clinic: Clinic, action: str) -> None:
    page.goto(page.url.split("/admin/")[0] + f"/admin/clinics/clinic/?q={clinic.schema_name}")
    page.check(f"input.action-select[value='{clinic.pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_offboard_with_the_typed_name_then_bring_back_and_the_policy_page(
    language, web_server, browser, scratch_clinic
):
    words, shots = WORDS[language], Shots(language)
    page = browser.new_page(locale=language, viewport={"width": 1280, "height": 900})
    log_in(page, f"http://localhost:{web_server}/admin/", "superadmin", "superadmin")

    # offboard: the confirmation asks for the schema name typed; a wrong one changes nothing
    choose_action(page, scratch_clinic, "offboard_selected")
    page.locator(f"#id_confirm_{scratch_clinic.pk}").fill(SCHEMA)
    shots(page, "offboard-confirmation")
    keep(shots, "offboard-confirmation", "platform-offboard", language)
    page.locator(f"#id_confirm_{scratch_clinic.pk}").fill("clinica")
    page.click("input.respaldo-danger")
    assert words["mistyped"] in page.locator("#content").inner_text()
    assert SCHEMA in schemas() and Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is None
    shots(page, "offboard-mistyped")
    page.locator(f"#id_confirm_{scratch_clinic.pk}").fill(SCHEMA)
    page.click("input.respaldo-danger")
    page.wait_for_url("**/admin/clinics/clinic/**", timeout=60_000)
    assert SCHEMA not in schemas() and Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is not None
    assert words["offboarded"] in page.locator("#result_list").inner_text()
    shots(page, "offboarded-in-the-list")

    # bring back: a page says what will happen; then the clinic is back
    choose_action(page, scratch_clinic, "bring_back_selected")
    assert words["bring_back"] in page.locator("#content").inner_text()
    assert f"{SCHEMA}.localhost" in page.locator("#content").inner_text()
    shots(page, "bring-back-confirmation")
    keep(shots, "bring-back-confirmation", "platform-bring-back", language)
    page.click("#content input[type=submit]")
    page.wait_for_selector(".messagelist .success", timeout=120_000)
    assert words["back"] in page.locator(".messagelist").inner_text()
    assert SCHEMA in schemas() and Clinic.objects.get(pk=scratch_clinic.pk).offboarded_at is None
    assert AuditEntry.objects.filter(action="brought_back", clinic=scratch_clinic).exists()

    # the clinic console's policy page: a plain "02:00" time, a grouped zone list
    clinic_page = browser.new_page(locale=language, viewport={"width": 1280, "height": 900})
    log_in(clinic_page, f"http://clinica.localhost:{web_server}/admin/", "admin", "admin")
    clinic_page.goto(f"http://clinica.localhost:{web_server}/admin/backups/backuppolicy/")
    assert clinic_page.locator("#id_run_at").input_value() == "02:00"
    heights = clinic_page.eval_on_selector_all(
        ".form-row input:not([type=checkbox]), .form-row select", "els => els.map(e => e.offsetHeight)"
    )
    assert len(set(heights)) == 1, heights
    assert clinic_page.locator(".datetimeshortcuts, .timezonewarning").count() == 0
    assert clinic_page.locator("#id_time_zone optgroup[label=Europe] option[value='Europe/Madrid']").count() == 1
    assert words["time"] in clinic_page.locator("#content").inner_text()
    shots(clinic_page, "policy")
    keep(shots, "policy", "policy", language)
