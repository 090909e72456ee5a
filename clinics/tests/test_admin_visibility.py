"""Who sees what in the two admin sites."""

import pytest

from clinics.tests.helpers import logged_in
from conftest import host_client

pytestmark = pytest.mark.django_db

SHARED_APP_URLS = [
    "/admin/clinics/clinic/",
    "/admin/clinics/domain/",
    "/admin/django_q/ormq/",
    "/admin/django_q/schedule/",
    "/admin/django_q/success/",
]


def test_clinic_admin_sees_the_clinic_records_and_no_shared_apps():
    client = logged_in("clinica.localhost", "admin", "admin")
    page = client.get("/admin/").content.decode()
    for label in [
        "Patients",
        "Appointments",
        "Treatments",
        "Invoices",
        "Payments",
        "Inventory items",
        "Dentists",
        "Users",
    ]:
        assert label in page
    for label in ["Clinics", "Domains", "Queued tasks", "Scheduled tasks", "Django Q"]:
        assert label not in page


@pytest.mark.parametrize("url", SHARED_APP_URLS)
def test_shared_app_urls_typed_by_hand_are_not_found_on_a_clinic(url):
    client = logged_in("clinica.localhost", "admin", "admin")
    assert client.get(url).status_code == 404


def test_reception_sees_patients_but_not_users_or_invoices():
    client = logged_in("clinica.localhost", "recepcion", "recepcion")
    page = client.get("/admin/").content.decode()
    assert "Patients" in page and "Appointments" in page
    assert "Users" not in page and "Invoices" not in page and "Backups" not in page
    assert client.get("/admin/auth/user/").status_code == 403
    assert client.get("/admin/dental/patient/").status_code == 200


def test_clinic_admin_lists_its_patients_with_accents():
    client = logged_in("clinica.localhost", "admin", "admin")
    response = client.get("/admin/dental/patient/")
    assert response.status_code == 200
    assert "8 patients" in response.content.decode()


def test_platform_admin_manages_clinics():
    client = logged_in("localhost", "superadmin", "superadmin")
    page = client.get("/admin/clinics/clinic/").content.decode()
    assert "Clínica Dental Sonrisa" in page and "Bienestar Odontología" in page
    assert "Respaldo platform</a>" not in page  # the public tenant is not a clinic to manage
    assert client.get("/admin/clinics/clinic/add/").status_code == 200


@pytest.mark.parametrize("url", ["/admin/dental/patient/", "/admin/dental/invoice/1/change/", "/admin/dental/"])
def test_clinic_only_urls_on_the_platform_are_404_not_500(url):
    client = logged_in("localhost", "superadmin", "superadmin")
    assert client.get(url).status_code == 404


def test_users_live_per_schema():
    # The clinic's admin does not exist on the platform, nor in the other clinic's schema with its data.
    platform = host_client("localhost")
    response = platform.post("/admin/login/", {"username": "admin", "password": "admin"})
    assert response.status_code == 200 and "correct username and password" in response.content.decode()
    clinic = host_client("clinica.localhost")
    response = clinic.post("/admin/login/", {"username": "superadmin", "password": "superadmin"})
    assert response.status_code == 200 and "correct username and password" in response.content.decode()


def test_a_clinic_session_does_not_open_another_clinic():
    client = logged_in("clinica.localhost", "admin", "admin")
    response = client.get("/admin/", HTTP_HOST="bienestar.localhost")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
