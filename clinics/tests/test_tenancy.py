"""Clinics are schemas: creation, routing by host name, and isolation of their data."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from clinics.demo import ensure_clinic
from clinics.models import Clinic, Domain
from conftest import DEMO_PATIENTS, host_client
from dental.models import Patient

pytestmark = pytest.mark.django_db


def schema_tables(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema])
        return {row[0] for row in cursor.fetchall()}


def test_creating_a_clinic_creates_its_schema_with_the_clinic_tables_only():
    clinic = ensure_clinic("nueva", "Clínica Nueva")
    tables = schema_tables("nueva")
    assert {"dental_patient", "dental_invoice", "auth_user", "django_migrations"} <= tables
    assert not {"clinics_clinic", "clinics_domain", "django_q_ormq"} & tables
    assert Domain.objects.get(domain="nueva.localhost").tenant == clinic


def test_public_schema_holds_shared_tables_and_no_clinic_records():
    tables = schema_tables("public")
    assert {"clinics_clinic", "clinics_domain", "django_q_ormq"} <= tables
    assert "dental_patient" not in tables


def test_each_clinic_sees_only_its_own_patients():
    with schema_context("clinica"):
        Patient.objects.create(first_name="Única", last_name="Sólo-Clínica", national_id="ZZ-ONLY-1")
        assert Patient.objects.count() == DEMO_PATIENTS + 1
    with schema_context("bienestar"):
        assert not Patient.objects.filter(national_id="ZZ-ONLY-1").exists()
        assert Patient.objects.count() == DEMO_PATIENTS


@pytest.mark.parametrize(
    ("host", "status", "title"),
    [
        ("clinica.localhost", 200, "Respaldo clinic"),
        ("bienestar.localhost", 200, "Respaldo clinic"),
        ("localhost", 200, "Respaldo platform"),
        ("desconocida.localhost", 404, None),
    ],
)
def test_requests_are_routed_by_host_name(host, status, title):
    response = host_client(host).get("/admin/login/")
    assert response.status_code == status
    if title:
        assert f"{title}</title>" in response.content.decode()


def test_clinic_login_page_shows_the_clinic_name():
    clinic = Clinic.objects.get(schema_name="clinica")
    response = host_client("clinica.localhost").get("/admin/login/")
    assert clinic.name in response.content.decode()
