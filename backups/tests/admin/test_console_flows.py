"""The console's flows as a person follows them (issue 26), through the test client.

The demo has patients one can delete (the README's walkthrough deletes one), the restore
confirmation takes the name the page shows, reception's restore banner leads nowhere it may
not go, 403 and 404 pages are the console's own in the reader's language, and a backup's page
reads as a person names it. (The walkthrough itself runs in a browser in
``test_walkthrough_browser.py``.)
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django_tenants.utils import schema_context

from backups.models import Backup, Restore
from backups.tests.helpers import LIST, clinica_tables, fake_backup, logged_in
from dental.models import Patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    return logged_in("admin", "admin")


# --- The demo follows its own walkthrough -------------------------------------------------


def test_the_demo_has_patients_without_invoices_that_the_admin_can_delete(admin_client):
    with schema_context("clinica"):
        free = list(Patient.objects.filter(invoices__isnull=True).order_by("pk"))
        assert free and len(free) < Patient.objects.count()  # some new patients, most with invoices
        victim = free[0]
    page = admin_client.get(f"/admin/dental/patient/{victim.pk}/delete/").content.decode()
    assert "Yes, I’m sure" in page and "would require deleting the following protected" not in page
    response = admin_client.post(f"/admin/dental/patient/{victim.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    with schema_context("clinica"):
        assert not Patient.objects.filter(pk=victim.pk).exists()


# --- Type the clinic's name: the name the page shows ----------------------------------------


@pytest.mark.parametrize("typed", ["Clínica Dental Sonrisa", "clinica dental sonrisa", " CLÍNICA  DENTAL SONRISA "])
def test_the_restore_confirmation_takes_the_name_the_page_shows(admin_client, typed):
    backup = fake_backup(manifest={"tables": clinica_tables()})
    page = admin_client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    assert "Type <strong>Clínica Dental Sonrisa</strong> (or <strong><code>clinica</code></strong>)" in page
    response = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": typed})
    restore = Restore.objects.get(backup=backup)
    assert response["Location"] == f"/admin/backups/restore/{restore.pk}/progress/"


def test_the_schema_name_still_confirms_and_another_name_is_refused_naming_the_shown_one(admin_client):
    backup = fake_backup(manifest={"tables": clinica_tables()})
    wrong = admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "Clínica Dental"})
    assert wrong.status_code == 200
    assert "Type the clinic&#x27;s name exactly as shown (Clínica Dental Sonrisa)" in wrong.content.decode()
    assert not Restore.objects.exists()
    admin_client.post(f"{LIST}{backup.pk}/restore/", {"confirm": "clinica"})
    assert Restore.objects.filter(backup=backup).exists()


def test_in_spanish_the_confirmation_asks_for_the_name_shown():
    client = logged_in("admin", "admin", language="es")
    backup = fake_backup(manifest={"tables": clinica_tables()})
    page = client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    assert "Escriba <strong>Clínica Dental Sonrisa</strong> (o <strong><code>clinica</code></strong>)" in page


# --- Reception during a restore; the console's 403 and 404 ---------------------------------


def test_reception_sees_the_banner_without_a_link_it_may_not_follow(running_restore):  # noqa: F811
    restore = running_restore("checking")
    reception = logged_in("recepcion", "recepcion")
    page = reception.get("/admin/dental/patient/").content.decode()
    assert "A restore of this clinic is in progress (phase: checking)." in page
    assert f"/admin/backups/restore/{restore.pk}/progress/" not in page and "Follow the restore" not in page
    admin_page = logged_in("admin", "admin").get("/admin/dental/patient/").content.decode()
    assert f'href="/admin/backups/restore/{restore.pk}/progress/"' in admin_page


@pytest.mark.parametrize(
    ("language", "title", "text"),
    [
        ("en", "You may not open this page", "ask one of the clinic's administrators"),
        ("es", "No puede abrir esta página", "pídalo a uno de los administradores de la clínica"),
    ],
)
def test_a_forbidden_page_is_the_consoles_own_in_the_readers_language(language, title, text):
    reception = logged_in("recepcion", "recepcion", language=language)
    response = reception.get(LIST)
    page = response.content.decode()
    assert response.status_code == 403
    assert f"<h1>{title}</h1>" in page and text in page
    assert "Clínica Dental Sonrisa · Respaldo" in page and "console.css" in page  # the console's frame
    assert "403 Forbidden" not in page


@pytest.mark.parametrize(("language", "title"), [("en", "Page not found"), ("es", "Página no encontrada")])
def test_a_missing_page_is_the_consoles_own_in_the_readers_language(admin_client, language, title):
    client = logged_in("admin", "admin", language=language)
    theirs = fake_backup("bienestar")
    for url in (f"{LIST}{theirs.pk}/change/", "/admin/no-such-page/", "/nothing-here"):
        response = client.get(url)
        assert response.status_code == 404, url
        page = response.content.decode()
        assert f"<h1>{title}</h1>" in page and "console.css" in page, url
    assert logged_in("admin", "admin").get("/api/v1/nothing").status_code == 404  # the API keeps its JSON


# --- A backup's page --------------------------------------------------------------------------


def test_a_backups_page_has_a_title_a_person_reads_and_tables_by_their_names(admin_client):
    backup = fake_backup(
        manifest={"tables": {"dental_patient": 8, "dental_invoice": 1234, "auth_user": 2}},
        kind=Backup.Kind.MANUAL,
    )
    Backup.objects.filter(pk=backup.pk).update(requested_at=datetime(2026, 12, 7, 1, 21, tzinfo=ZoneInfo("UTC")))
    page = admin_client.get(f"{LIST}{backup.pk}/change/").content.decode()
    assert "<h1>Backup of 7 Dec 2026, 02:21 — manual</h1>" in page  # Madrid time
    assert "View backup" not in page and "clinica Manual (Succeeded)" not in page
    assert "<li>Invoices: 1,234</li><li>Patients: 8</li><li>Users: 2</li>" in page
    assert "dental_patient" not in page
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', page, re.S).group(1)
    assert "&rsaquo; <a" in crumbs and crumbs.count("Backups") == 1

    spanish = logged_in("admin", "admin", language="es").get(f"{LIST}{backup.pk}/change/").content.decode()
    assert "<h1>Respaldo del 7 Dic 2026, 02:21 — manual</h1>" in spanish
    assert "<li>Facturas: 1\u00a0234</li><li>Pacientes: 8</li><li>Usuarios: 2</li>" in spanish


def test_the_legal_hold_comes_before_the_close_button_and_still_holds(admin_client):
    backup = fake_backup(manifest={"tables": clinica_tables()})
    page = admin_client.get(f"{LIST}{backup.pk}/change/").content.decode()
    hold, close = page.index("Keep this backup on legal hold because"), page.index('class="closelink"')
    assert hold < close
    form = re.search(r'<form method="post" id="respaldo-hold-form" action="([^"]+)">', page)
    assert form and 'form="respaldo-hold-form"' in page
    answer = admin_client.post(form.group(1), {"reason": "inspección"}, follow=True)
    assert "This backup is now kept on legal hold." in answer.content.decode()


def test_the_restore_confirmation_breadcrumb_says_backups_once(admin_client):
    backup = fake_backup(manifest={"tables": clinica_tables()})
    page = admin_client.get(f"{LIST}{backup.pk}/restore/").content.decode()
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', page, re.S).group(1)
    assert crumbs.count("Backups") == 1 and "Restore backup" in crumbs


def test_a_user_with_view_restore_only_sees_the_link(running_restore):  # noqa: F811
    restore = running_restore("restoring")
    with schema_context("clinica"):
        user = User.objects.create_user("mirón", password="miron-clave-1", is_staff=True)
        user.user_permissions.add(
            Permission.objects.get(codename="view_restore", content_type__app_label="backups"),
            Permission.objects.get(codename="view_patient", content_type__app_label="dental"),
        )
    client = logged_in("mirón", "miron-clave-1")
    page = client.get("/admin/dental/patient/").content.decode()
    assert f'href="/admin/backups/restore/{restore.pk}/progress/"' in page
    assert client.get(f"/admin/backups/restore/{restore.pk}/progress/").status_code == 200
