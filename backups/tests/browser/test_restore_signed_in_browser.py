"""The admin who restores stays signed in, and the phase strip tells the truth, in a real browser
(Debian's Chromium driven by Playwright, a real django-q2 worker), in English and in Spanish.

The backup is taken before the admin signs in, so it holds no session of theirs: before the
restore carried the live sessions over, the progress page reloaded to a bare login form.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from backups.models import JobStatus, Restore
from backups.services.backup import backup_request, backup_run
from backups.tests.browser.helpers import CLINIC, Shots
from backups.tests.helpers import LIST, other_connection, wait_for
from conftest import log_in

WORDS = {
    "en-US": {"done": "(done)", "now": "(now)", "current": "Current phase:", "safety": "safety backup"},
    "es-ES": {"done": "(hecho)", "now": "(ahora)", "current": "Fase actual:", "safety": "respaldo de seguridad"},
}


def docs_copy(shots: Shots, name: str, language: str) -> None:
    """The screenshot just taken (not another test's of the same number), as docs/screenshots/<name>-<en|es>.png."""
    shutil.copyfile(shots.last, Path(settings.BASE_DIR) / "docs" / "screenshots" / f"{name}-{language[:2]}.png")


def strip(page) -> list[dict[str, str]]:
    """Each phase box as the page shows it: its key, classes, symbol and the words a screen reader adds."""
    return page.eval_on_selector_all(
        ".respaldo-phases li",
        """items => items.map(li => ({
            key: li.dataset.phase,
            state: li.className,
            mark: (li.querySelector('[aria-hidden]') || {textContent: ''}).textContent.trim(),
            said: li.innerText.trim(),
        }))""",
    )


@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_the_admin_restores_and_stays_signed_in_with_every_phase_ticked(
    language,
    web_server,
    browser,
    cluster,
    clinica_put_back,  # noqa: F811 - the fixture imported above
):
    words = WORDS[language]
    backup = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED  # before the admin signs in: it holds no session of theirs
    context = browser.new_context(locale=language, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    shots = Shots(language)
    base = f"http://{CLINIC}.localhost:{web_server}"
    log_in(page, f"{base}/admin/", "admin", "admin")

    # Requested with no worker running; a lock we hold on a table patients do not need keeps
    # the safety backup waiting, so the strip can be read while the page updates it in place.
    page.goto(f"{base}{LIST}{backup.pk}/restore/")
    page.fill("#id_confirm", CLINIC)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/backups/restore/*/progress/**")
    restore = Restore.objects.order_by("-pk").first()
    with other_connection() as holder:
        holder.execute("BEGIN")
        holder.execute(f'LOCK TABLE "{CLINIC}".dental_inventoryitem IN ACCESS EXCLUSIVE MODE')
        cluster()
        wait_for(Restore.objects.filter(pk=restore.pk, progress_phase="safety backup").exists, what="safety backup")
        page.wait_for_selector('.respaldo-phases li.current[data-phase="safety backup"]')  # by the page's script
        boxes = {box["key"]: box for box in strip(page)}
        assert boxes["verifying"]["mark"] == "✓" and words["done"] in boxes["verifying"]["said"]
        assert boxes["safety backup"]["mark"] == "▶" and words["now"] in boxes["safety backup"]["said"]
        assert boxes["restoring"]["mark"] == "" and "(" not in boxes["restoring"]["said"]
        live = page.locator(".respaldo-phase-now")
        assert live.get_attribute("aria-live") == "polite"
        assert live.text_content().strip() == f"{words['current']} {words['safety']}"
        shots(page, "restore-phases-running")
        docs_copy(shots, "restore-phases", language)
        holder.execute("ROLLBACK")

    # The page reloads when the restore ends: still signed in, on the result, with its Undo.
    page.wait_for_selector(".respaldo-done, .respaldo-error, #login-form", timeout=180_000)
    assert page.locator("#login-form").count() == 0, "the restore signed the admin out"
    restore.refresh_from_db()
    assert restore.status == JobStatus.SUCCEEDED, restore.error_message()
    assert page.locator(".respaldo-done").count() == 1
    assert page.locator(f'a.button[href="{LIST}{restore.safety_backup_id}/restore/"]').count() == 1  # Undo
    boxes = strip(page)
    assert page.locator(".respaldo-phases li.current").count() == 0
    assert "▶" not in page.locator(".respaldo-phases").inner_text()
    assert words["now"] not in page.locator(".respaldo-phases").inner_text()
    for box in boxes:
        if "skipped" in box["state"]:  # not needed by this restore (no migration): no tick either
            assert box["key"] == "migrating" and box["mark"] == ""
            continue
        assert box["mark"] == "✓" and words["done"] in box["said"], box
    assert page.locator(".respaldo-phase-now").text_content().strip() == ""
    shots(page, "restore-stays-signed-in")
    docs_copy(shots, "restore-stays-signed-in", language)
    context.close()
