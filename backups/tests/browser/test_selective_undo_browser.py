"""Undo a restore of one patient in a real browser, in English and in Spanish: the restore
history names the patient, the result page's Undo shows exactly what it removes and puts back,
and after it only those rows changed (a later edit of another patient stays).

Screenshots under ``.local/screenshots/<language>/`` (see :class:`Shots`); a copy of the undo's
confirmation in ``docs/screenshots/selective-undo-<en|es>.png``.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.models import JobStatus, Restore
from backups.services.backup import backup_request, backup_run
from backups.services.selective import selective_apply, selective_preview
from backups.tests.browser.helpers import CLINIC, Shots, copy_shot
from conftest import log_in
from dental.models import Appointment, Patient

RESTORES = "/admin/backups/restore/"
WORDS = {
    "en-US": {
        "one_patient": "one patient:",
        "undo": "Undo this restore",
        "remove": "To remove",
        "put_back": "To put back",
        "yes": "Yes, undo this restore",
        "undone": "undone:",
    },
    "es-ES": {
        "one_patient": "un paciente:",
        "undo": "Deshacer esta restauración",
        "remove": "Para quitar",
        "put_back": "Para devolver",
        "yes": "Sí, deshacer esta restauración",
        "undone": "deshecha:",
    },
}


@pytest.mark.usefixtures("clinica_put_back")
@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_an_admin_undoes_a_restore_of_one_patient_and_keeps_a_later_edit(web_server, browser, language):
    words = WORDS[language]
    backup = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED
    with schema_context(CLINIC):
        patient = Patient.objects.filter(appointments__isnull=False).order_by("pk").first()
        other = Patient.objects.exclude(pk=patient.pk).order_by("pk").first()
        appointment = Appointment.objects.filter(patient=patient).order_by("pk").first()
        Appointment.objects.filter(pk=appointment.pk).delete()  # lost by mistake
        Patient.objects.filter(pk=patient.pk).update(phone="+34 699 000 111")  # and a new phone, kept
    connection.set_schema_to_public()
    preview = selective_preview(backup, national_id=patient.national_id)
    restore = selective_apply(
        backup, national_id=patient.national_id, requested_by="admin", expected=preview.fingerprint
    ).restore
    with schema_context(CLINIC):  # the clinic goes on working
        Patient.objects.filter(pk=other.pk).update(notes="edited after the selective restore")
    connection.set_schema_to_public()

    shots = Shots(language)
    base = f"http://{CLINIC}.localhost:{web_server}"
    context = browser.new_context(locale=language, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        log_in(page, f"{base}/admin/", "admin", "admin")
        page.goto(f"{base}{RESTORES}")
        row = page.locator("#result_list tbody tr").first
        assert f"{words['one_patient']} {patient.first_name} {patient.last_name} ({patient.national_id})" in (
            row.inner_text()
        )
        shots(page, "selective-history")
        row.locator(f'a[href="{RESTORES}{restore.pk}/progress/"]').click()
        page.wait_for_selector(".respaldo-done")
        shots(page, "selective-result")

        page.click(f"text={words['undo']}")
        page.wait_for_url(f"**{RESTORES}{restore.pk}/undo/")
        assert words["remove"] in page.inner_text("#content-main")
        assert words["put_back"] in page.inner_text("#content-main")
        assert "+34 699 000 111" in page.inner_text("table.respaldo-put-back")
        assert page.locator("table.respaldo-removed").count() == 1
        widths = page.evaluate(
            "[document.documentElement.clientWidth,"
            " Math.max(...[...document.querySelectorAll('#content table')].map(t => t.getBoundingClientRect().right))]"
        )
        assert widths[1] <= widths[0], f"a table is wider than the page: {widths}"
        shots(page, "selective-undo")

        page.click(f"input[value='{words['yes']}']")
        page.wait_for_url(f"**{RESTORES}{restore.pk}/progress/")
        assert words["undone"] in page.inner_text(".messagelist")
        assert page.locator(f'a[href="{RESTORES}{restore.pk}/undo/"]').count() == 0
        shots(page, "selective-undone")
    finally:
        context.close()

    with schema_context(CLINIC):
        assert not Appointment.objects.filter(pk=appointment.pk).exists()
        assert Patient.objects.get(pk=patient.pk).phone == "+34 699 000 111"
        assert Patient.objects.get(pk=other.pk).notes == "edited after the selective restore"
    connection.set_schema_to_public()
    assert Restore.objects.get(pk=restore.pk).outcome == Restore.Outcome.UNDONE
    copy_shot(shots, "selective-undo", f"selective-undo-{language[:2]}.png")
