"""The clinic's records in its admin: import/export, uploaded X-rays, languages."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django_tenants.utils import schema_context
from openpyxl import load_workbook

from clinics.tests.helpers import logged_in
from conftest import DEMO_PATIENTS
from dental.models import Patient

pytestmark = pytest.mark.django_db


def test_export_patients_as_xlsx_keeps_accents():
    client = logged_in("clinica.localhost", "admin", "admin")
    response = client.post(
        "/admin/dental/patient/export/",
        {
            "format": "1",
            "resource": "0",
            **{f"patientresource_{f}": "on" for f in ["first_name", "last_name", "national_id"]},
        },
    )
    assert response.status_code == 200, response.content[:500]
    sheet = load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == DEMO_PATIENTS + 1
    with schema_context("clinica"):
        names = set(Patient.objects.values_list("last_name", flat=True))
    assert {row[1] for row in rows[1:]} == names


def test_import_patients_from_csv_into_this_clinic_only():
    client = logged_in("clinica.localhost", "admin", "admin")
    csv = (
        "first_name,last_name,national_id,birth_date,phone,email,allergies,notes\n"
        'Ñandú,Ibáñez,IMP-0001,1990-05-17,+34 600,n@example.com,"[""látex""]",Importado\n'
    )
    upload = SimpleUploadedFile("pacientes.csv", csv.encode(), content_type="text/csv")
    response = client.post("/admin/dental/patient/import/", {"format": "0", "import_file": upload, "resource": "0"})
    assert response.status_code == 200
    confirm = response.context["confirm_form"]
    response = client.post("/admin/dental/patient/process_import/", confirm.initial)
    assert response.status_code == 302
    with schema_context("clinica"):
        imported = Patient.objects.get(national_id="IMP-0001")
        assert imported.first_name == "Ñandú" and imported.allergies == ["látex"]
    with schema_context("bienestar"):
        assert not Patient.objects.filter(national_id="IMP-0001").exists()


def test_xray_upload_is_stored_per_clinic_and_served_to_its_staff_only(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    client = logged_in("clinica.localhost", "admin", "admin")
    with schema_context("clinica"):
        patient = Patient.objects.first()
        patient.xray = SimpleUploadedFile("panoramica.png", b"\x89PNG fake-xray", content_type="image/png")
        patient.save()
        url = patient.xray.url
    connection.set_schema_to_public()
    assert url.startswith("/media/clinica/xrays/")
    assert list(tmp_path.glob("clinica/xrays/*/*/panoramica*.png"))
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"\x89PNG fake-xray"
    # The other clinic cannot fetch it, even by typing the URL on its own domain.
    other = logged_in("bienestar.localhost", "admin", "admin")
    assert other.get(url).status_code == 404
    assert logged_in("clinica.localhost", "admin", "admin").get(url.replace("panoramica", "../x")).status_code == 404


def test_admin_speaks_spanish_when_the_browser_asks():
    client = logged_in("clinica.localhost", "admin", "admin")
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="es").content.decode()
    assert "Pacientes" in page and "Citas" in page and "Administración de la clínica" in page
    page = client.get("/admin/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Patients" in page and "Clinic administration" in page
