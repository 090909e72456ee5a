"""The clinic console in a real browser (Debian's Chromium driven by Playwright), with a real
django-q2 worker, in English and in Spanish: back up, download, break, restore, undo, upload,
and read (but not write) the clinic while a restore runs.

Every page visited is saved as a screenshot under ``.local/screenshots/<language>/`` (git
ignores it), or under ``$SCREENSHOT_DIR``; ``docs/screenshots/`` holds copies of the main ones.
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.models import Backup, JobStatus, Restore
from backups.tests.browser.helpers import CLINIC, Shots, wait_for_badge
from backups.tests.helpers import other_connection, table_checksums, wait_for
from conftest import log_in
from dental.models import Invoice, Patient

LIST = "/admin/backups/backup/"

# What the pages say, per browser language (everything else is found by id, class or href).
WORDS = {
    "en-US": {"backups": "Backups", "busy": "changes are paused", "nothing": "Nothing was saved"},
    "es-ES": {"backups": "Respaldos", "busy": "los cambios están en pausa", "nothing": "No se ha guardado nada"},
}


def restore_from(page, base: str, backup_id: int, shots: Shots, name: str, *, emptied: bool = False) -> Restore:
    """Open the confirmation page of ``backup_id``, type the clinic's name, watch the restore end."""
    page.goto(f"{base}{LIST}{backup_id}/restore/")
    assert page.locator("table.respaldo-counts").count() >= 1
    shots(page, f"{name}-confirm")
    page.fill("#id_confirm", "clinica-no")
    page.click("input[type=submit]")
    page.wait_for_selector(".errorlist")  # a wrong name restores nothing
    page.fill("#id_confirm", CLINIC)
    if emptied:
        page.check("#id_accept_emptied")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/backups/restore/*/progress/**")
    shots(page, f"{name}-progress")
    page.wait_for_selector(".respaldo-done, .respaldo-error", timeout=180_000)
    restore = Restore.objects.order_by("-pk").first()
    assert restore.status == JobStatus.SUCCEEDED, restore.error_message()
    assert page.locator(".respaldo-done").count() == 1
    shots(page, f"{name}-done")
    return restore


@dataclass
class Visit:
    """One admin's session in the browser: the page, the clinic's address, screenshots, words."""

    context: object
    page: object
    base: str
    shots: Shots
    words: dict[str, str]
    folder: Path


def back_up_now(visit: Visit) -> Backup:
    """Back up now, and watch the row turn green without reloading."""
    page, base, shots = visit.page, visit.base, visit.shots
    page.goto(f"{base}{LIST}")
    shots(page, "backups")
    page.click(f'a[href="{LIST}now/"]')
    shots(page, "backup-now")
    page.check("input[name=payload_format][value=pg]")
    page.fill("#id_note", "antes del cierre")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{LIST}")
    backup = Backup.objects.filter(clinic__schema_name=CLINIC, note="antes del cierre").get()
    shots(page, "backup-requested")
    wait_for_badge(page, backup.pk, "succeeded")
    shots(page, "backup-done")
    backup.refresh_from_db()
    assert backup.status == JobStatus.SUCCEEDED and backup.requested_by == "admin"
    return backup


def download(visit: Visit, backup: Backup) -> Path:
    """Download it: the file's name is the clinic's and the date's, its bytes are the catalog's."""
    with visit.page.expect_download() as download:
        visit.page.click(f'a[href="{LIST}{backup.pk}/download/"]')
    saved = visit.folder / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name.startswith(f"{CLINIC}-") and saved.name.endswith(f"-{backup.pk}.respaldo")
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == backup.sha256
    return saved


def delete_a_patient() -> tuple[int, str]:
    """As a clumsy user would: the patient's invoices, then the patient."""
    with schema_context(CLINIC):
        victim = Patient.objects.order_by("pk").last()
        identity = (victim.pk, victim.national_id)  # delete() forgets the pk
        Invoice.objects.filter(patient=victim).delete()
        victim.delete()
    connection.set_schema_to_public()
    return identity


def patient_exists(patient_id: int, national_id: str) -> bool:
    with schema_context(CLINIC):
        found = Patient.objects.filter(pk=patient_id, national_id=national_id).exists()
    connection.set_schema_to_public()
    return found


def restore_and_undo(visit: Visit, backup: Backup, victim: tuple[int, str]) -> None:
    """Restore (the patient is back), look at the history and the backup, then undo (gone again)."""
    page, base, shots = visit.page, visit.base, visit.shots
    restore = restore_from(page, base, backup.pk, shots, "restore")
    page.goto(f"{base}/admin/dental/patient/{victim[0]}/change/")
    assert page.locator("#id_national_id").input_value() == victim[1]
    shots(page, "patient-back")
    page.goto(f"{base}/admin/backups/restore/")
    assert page.locator(f'a[href="/admin/backups/restore/{restore.pk}/progress/"]').count() == 1
    shots(page, "restore-history")
    page.goto(f"{base}{LIST}{backup.pk}/change/")
    assert "admin" in page.locator(".field-downloads_display").inner_text()  # the download was recorded
    shots(page, "backup-detail")
    page.goto(f"{base}/admin/backups/restore/{restore.pk}/progress/")
    page.click("a.button")  # "Undo this restore": the same confirmation, from the safety backup
    page.wait_for_url(f"**{LIST}{restore.safety_backup_id}/restore/")
    restore_from(page, base, restore.safety_backup_id, shots, "undo")
    assert not patient_exists(*victim)


def upload_and_restore(visit: Visit, backup: Backup, saved: Path, victim: tuple[int, str]) -> None:
    """A tampered file is refused inline; the downloaded file (the very file of ``backup``, which the
    catalog still holds: not stored twice) leads to ``backup``, which restores the patient again."""
    page, base, shots = visit.page, visit.base, visit.shots
    tampered = bytearray(saved.read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    (visit.folder / "tampered.respaldo").write_bytes(bytes(tampered))
    page.goto(f"{base}{LIST}upload/")
    page.set_input_files("#id_file", str(visit.folder / "tampered.respaldo"))
    page.click("input[type=submit]")
    assert page.locator("ul.errorlist").inner_text().strip()
    shots(page, "upload-refused")
    assert not Backup.objects.filter(kind=Backup.Kind.UPLOADED).exists()
    page.set_input_files("#id_file", str(saved))
    page.click("input[type=submit]")
    page.wait_for_url(f"**{LIST}{backup.pk}/restore/")
    assert f"#{backup.pk}" in page.locator(".messagelist").inner_text()
    assert not Backup.objects.filter(kind=Backup.Kind.UPLOADED).exists()
    restore_from(page, base, backup.pk, shots, "upload-restore")
    assert patient_exists(*victim)


def read_during_a_slow_restore(visit: Visit, backup: Backup, worker, cluster, patient_id: int) -> None:
    """A slow restore (its safety backup waits on a lock we hold on a table patients do not need):
    the patient page works with the banner; saving it is refused and changes nothing.

    The worker is stopped while the restore is requested: the confirmation page counts rows,
    which our lock would hold up too.
    """
    page, base, shots, words = visit.page, visit.base, visit.shots, visit.words
    os.killpg(worker.pid, signal.SIGKILL)  # idle: nothing of ours is lost
    worker.wait(timeout=30)
    page.goto(f"{base}{LIST}{backup.pk}/restore/")
    page.fill("#id_confirm", CLINIC)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/backups/restore/*/progress/**")
    slow = Restore.objects.order_by("-pk").first()
    with other_connection() as holder:
        holder.execute("BEGIN")
        holder.execute(f'LOCK TABLE "{CLINIC}".dental_inventoryitem IN ACCESS EXCLUSIVE MODE')
        cluster()
        phase = Restore.objects.filter(pk=slow.pk, progress_phase="safety backup")
        wait_for(phase.exists, what="the safety backup")
        page.wait_for_selector('.respaldo-phases li.current[data-phase="safety backup"]')  # updated in place
        shots(page, "slow-restore-progress")
        reader = visit.context.new_page()
        reader.goto(f"{base}/admin/dental/patient/{patient_id}/change/")
        assert reader.locator(".respaldo-banner").count() == 1
        shots(reader, "patient-during-restore")
        before = table_checksums(CLINIC, ["dental_patient"])
        reader.fill("#id_phone", "+34 600 000 000")
        reader.click("input[name=_save]")
        reader.wait_for_load_state()
        assert words["busy"] in reader.content() and words["nothing"] in reader.content()
        shots(reader, "save-refused")
        assert table_checksums(CLINIC, ["dental_patient"]) == before
        holder.execute("ROLLBACK")
    page.wait_for_selector(".respaldo-done, .respaldo-error", timeout=180_000)
    assert Restore.objects.get(pk=slow.pk).status == JobStatus.SUCCEEDED


@pytest.mark.parametrize("language", ["en-US", "es-ES"])
def test_a_clinic_admin_backs_up_breaks_restores_and_undoes_in_the_browser(
    language, web_server, browser, cluster, clinica_put_back, tmp_path
):
    worker = cluster()
    context = browser.new_context(locale=language, accept_downloads=True, viewport={"width": 1280, "height": 900})
    visit = Visit(
        context,
        context.new_page(),
        f"http://{CLINIC}.localhost:{web_server}",
        Shots(language),
        WORDS[language],
        tmp_path,
    )
    log_in(visit.page, f"{visit.base}/admin/", "admin", "admin")
    visit.shots(visit.page, "index")
    assert visit.words["backups"] in visit.page.locator("#content-main").inner_text()

    backup = back_up_now(visit)
    saved = download(visit, backup)
    victim = delete_a_patient()
    restore_and_undo(visit, backup, victim)
    upload_and_restore(visit, backup, saved, victim)
    read_during_a_slow_restore(visit, backup, worker, cluster, victim[0])
    context.close()


def test_reception_finds_no_backups_and_a_viewer_gets_403_on_download(web_server, browser, live_db):
    from django.contrib.auth.models import Permission, User

    from backups.services.backup import backup_request, backup_run

    with schema_context(CLINIC):
        viewer, _ = User.objects.get_or_create(username="lectora", defaults={"is_staff": True})
        viewer.set_password("lectora-pass-1")
        viewer.save()
        viewer.user_permissions.set([Permission.objects.get(codename="view_backup")])
    connection.set_schema_to_public()
    backup = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    base = f"http://{CLINIC}.localhost:{web_server}"
    try:
        page = browser.new_page()
        log_in(page, f"{base}/admin/", "recepcion", "recepcion")
        assert "Backups" not in page.locator("#content-main").inner_text()
        assert page.goto(f"{base}{LIST}").status == 403

        page = browser.new_page()
        log_in(page, f"{base}/admin/", "lectora", "lectora-pass-1")
        page.goto(f"{base}{LIST}")
        assert page.locator(f'a[href="{LIST}{backup.pk}/download/"]').count() == 0
        assert page.goto(f"{base}{LIST}{backup.pk}/download/").status == 403
        assert page.goto(f"{base}{LIST}{backup.pk}/restore/").status == 403
        assert page.goto(f"{base}{LIST}upload/").status == 403
    finally:
        with schema_context(CLINIC):
            User.objects.filter(username="lectora").delete()
        connection.set_schema_to_public()


def test_back_up_now_in_the_browser_sends_the_email_with_its_size_and_link(web_server, browser, cluster, live_db):
    import email
    import email.policy

    from django.template.defaultfilters import filesizeformat
    from django.utils import translation

    from backups.tests.helpers import free_port, smtp_server

    port = free_port()
    controller, inbox = smtp_server(port)
    try:
        cluster(
            EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port), EMAIL_USE_TLS="false", BACKUPS_CONSOLE_PORT=str(web_server)
        )
        base = f"http://{CLINIC}.localhost:{web_server}"
        page = browser.new_page(locale="es-ES")
        log_in(page, f"{base}/admin/", "admin", "admin")
        page.goto(f"{base}{LIST}now/")
        page.fill("#id_note", "con aviso")
        page.click("input[type=submit]")
        page.wait_for_url(f"**{LIST}")
        backup = Backup.objects.get(clinic__schema_name=CLINIC, note="con aviso")
        wait_for_badge(page, backup.pk, "succeeded")

        def about_this_backup() -> list:  # a job an earlier test left queued may email too: not ours
            return [
                found
                for found in inbox.envelopes
                if f"#{backup.pk}"
                in email.message_from_bytes(found.original_content, policy=email.policy.default)["Subject"]
            ]

        wait_for(about_this_backup, what="the email at the SMTP server")
    finally:
        controller.stop()
    backup.refresh_from_db()
    (envelope,) = about_this_backup()
    assert "admin@example.com" in envelope.rcpt_tos and "recepcion@example.com" not in envelope.rcpt_tos
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    with translation.override("es"):  # clinica writes in Spanish
        size = filesizeformat(backup.size).replace("\xa0", " ")
    assert f"#{backup.pk}" in message["Subject"] and size in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    assert f"{base}/admin/backups/backup/{backup.pk}/change/" in text
    assert backup.notified_at is not None and not backup.notify_error


def test_one_patient_comes_back_from_a_backup_and_later_changes_stay(web_server, browser, clinica_put_back):
    from backups.services.backup import backup_request, backup_run
    from dental.models import Appointment

    backup = backup_run(backup_id=backup_request(clinic=CLINIC, enqueue=False).pk)
    with schema_context(CLINIC):
        patients = list(Patient.objects.order_by("pk")[:2])
        lost, other = patients
        appointments = set(Appointment.objects.filter(patient=lost).values_list("pk", flat=True))
        assert appointments, "the demo patient should have appointments"
        Invoice.objects.filter(patient=lost).delete()
        Appointment.objects.filter(patient=lost).delete()
        Patient.objects.filter(pk=lost.pk).delete()
        Patient.objects.filter(pk=other.pk).update(phone="+34 611 222 333")  # after the backup: must stay
    connection.set_schema_to_public()

    shots = Shots("es-ES")
    base = f"http://{CLINIC}.localhost:{web_server}"
    page = browser.new_page(locale="es-ES", viewport={"width": 1280, "height": 900})
    log_in(page, f"{base}/admin/", "admin", "admin")
    page.goto(f"{base}{LIST}{backup.pk}/change/")
    page.click(f'a[href="{LIST}{backup.pk}/pick/"]')
    page.fill("#id_q", lost.national_id)  # the search finds a national id too
    page.click("input[type=submit]")
    page.click(f'#respaldo-found-list a[href="?national_id={lost.national_id}"]')
    page.wait_for_selector("table.respaldo-added")
    added = page.locator("table.respaldo-added").all_inner_texts()
    assert any(lost.national_id in text for text in added)
    assert other.national_id not in page.content()  # only this patient's rows
    shots(page, "selective-preview")
    page.fill("#id_confirm", lost.national_id)
    page.locator("input.respaldo-danger").click()
    page.wait_for_url("**/admin/backups/restore/*/progress/")  # its result, with its own Undo
    shots(page, "selective-done")

    with schema_context(CLINIC):
        assert Patient.objects.filter(pk=lost.pk, national_id=lost.national_id).exists()
        assert set(Appointment.objects.filter(patient_id=lost.pk).values_list("pk", flat=True)) == appointments
        assert Patient.objects.get(pk=other.pk).phone == "+34 611 222 333"
    connection.set_schema_to_public()
