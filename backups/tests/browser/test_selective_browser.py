"""Restore one patient in a real browser, in English and in Spanish: an admin deletes a patient,
finds them in a backup by typing part of their name without accents, reads the preview and
brings them back.

Screenshots under ``.local/screenshots/<language>/`` (see :class:`Shots`); copies of the search
and the preview in ``docs/screenshots/selective-search-<en|es>.png`` and
``selective-preview-<en|es>.png``.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.models import Backup, JobStatus
from backups.services.backup import backup_request, backup_run
from backups.services.selective_search import fold
from backups.tests.browser.helpers import CLINIC, Shots, copy_shot
from backups.tests.helpers import LIST
from conftest import log_in
from dental.models import Appointment, Invoice, Patient

WORDS = {
    "en-US": {"missing": "missing now", "restored": "restored from backup", "first_name": "First name"},
    "es-ES": {"missing": "ahora faltan", "restored": "restaurado desde el respaldo", "first_name": "Nombre"},
}


def accented_patient() -> Patient:
    """A demo patient of clinica with accents in the name and appointments (the demo has many)."""
    with schema_context(CLINIC):
        for patient in Patient.objects.order_by("pk"):
            if fold(patient.first_name) != patient.first_name.lower() and patient.appointments.exists():
                break
        else:
            pytest.fail("the demo clinic should have a patient with an accented first name")
    connection.set_schema_to_public()
    return patient


@pytest.mark.usefixtures("clinica_put_back")
@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_an_admin_finds_a_deleted_patient_by_part_of_the_name_and_brings_them_back(web_server, browser, language):
    words = WORDS[language]
    backup = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED
    lost = accented_patient()
    with schema_context(CLINIC):
        appointments = set(Appointment.objects.filter(patient=lost).values_list("pk", flat=True))
        Invoice.objects.filter(patient=lost).delete()
        Patient.objects.filter(pk=lost.pk).delete()  # and the appointments and treatments with it
    connection.set_schema_to_public()
    typed = f"{fold(lost.first_name)} {fold(lost.last_name.split()[0])[:4]}"  # "jose garc": no accents, partial

    shots = Shots(language)
    base = f"http://{CLINIC}.localhost:{web_server}"
    context = browser.new_context(locale=language, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        log_in(page, f"{base}/admin/", "admin", "admin")
        page.goto(f"{base}{LIST}")
        page.click(f'a[href="{LIST}{backup.pk}/pick/"]')  # the row's "Restore one patient…"
        page.wait_for_selector("#respaldo-missing-list")
        assert words["missing"] in page.inner_text("#respaldo-missing")
        assert lost.national_id in page.inner_text("#respaldo-missing-list")
        page.fill("#id_q", typed)
        page.click("input[type=submit]")
        found = page.locator("#respaldo-found-list")
        assert lost.national_id in found.inner_text() and f"{lost.first_name} {lost.last_name}" in found.inner_text()
        shots(page, "selective-search")

        found.locator(f'a[href="?national_id={lost.national_id}"]').click()
        page.wait_for_selector("table.respaldo-added")
        assert f"{lost.first_name} {lost.last_name} ({lost.national_id})" in page.inner_text("h2.respaldo-patient-name")
        assert words["first_name"] in page.inner_text("table.respaldo-added >> nth=0")
        widths = page.evaluate(
            "[document.documentElement.clientWidth,"
            " Math.max(...[...document.querySelectorAll('#content table')].map(t => t.getBoundingClientRect().right))]"
        )
        assert widths[1] <= widths[0], f"a table is wider than the page: {widths}"
        shots(page, "selective-preview")

        page.fill("#id_confirm", lost.national_id)
        page.locator("input.respaldo-danger").click()
        page.wait_for_url("**/admin/backups/restore/*/progress/")  # the result, with its own Undo
        assert words["restored"] in page.inner_text(".messagelist")
        shots(page, "selective-done")
    finally:
        context.close()

    with schema_context(CLINIC):
        assert Patient.objects.filter(pk=lost.pk, national_id=lost.national_id).exists()
        assert set(Appointment.objects.filter(patient_id=lost.pk).values_list("pk", flat=True)) == appointments
    connection.set_schema_to_public()
    assert Backup.objects.filter(clinic__schema_name=CLINIC, kind=Backup.Kind.PRE_RESTORE).exists()
    copy_shot(shots, "selective-search", f"selective-search-{language[:2]}.png")
    copy_shot(shots, "selective-preview", f"selective-preview-{language[:2]}.png")
