"""The demo seeding command: what it creates, that it is idempotent, and what it prints."""

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django_tenants.utils import schema_context

from clinics.demo import CLINIC_ADMINS_GROUP
from clinics.models import Clinic, Domain
from conftest import DEMO_PATIENTS
from dental.models import Appointment, Invoice, Patient, Treatment

pytestmark = pytest.mark.django_db


def counts(schema: str) -> dict[str, int]:
    with schema_context(schema):
        return {model.__name__: model.objects.count() for model in (Patient, Appointment, Treatment, Invoice)}


def test_seed_demo_creates_platform_clinics_and_logins(capsys):
    call_command("seed_demo", patients=DEMO_PATIENTS)
    out = capsys.readouterr().out
    assert "http://clinica.localhost:8000/admin/" in out and "admin / admin" in out
    assert "superadmin / superadmin" in out and "recepcion / recepcion" in out
    assert set(Clinic.objects.values_list("schema_name", flat=True)) >= {"public", "clinica", "bienestar"}
    assert set(Domain.objects.values_list("domain", flat=True)) >= {
        "localhost",
        "clinica.localhost",
        "bienestar.localhost",
    }
    with schema_context("clinica"):
        admin = User.objects.get(username="admin")
        assert admin.groups.filter(name=CLINIC_ADMINS_GROUP).exists() and not admin.is_superuser
        assert User.objects.get(username="recepcion").is_staff
    with schema_context("public"):
        assert User.objects.get(username="superadmin").is_superuser
        assert not User.objects.filter(username="admin").exists()


def test_seed_demo_is_idempotent_and_tops_up():
    before = counts("clinica")
    call_command("seed_demo", patients=DEMO_PATIENTS)
    assert counts("clinica") == before
    call_command("seed_demo", patients=DEMO_PATIENTS + 3)
    after = counts("clinica")
    assert after["Patient"] == DEMO_PATIENTS + 3
    assert after["Appointment"] == before["Appointment"] + 6
    assert Clinic.objects.filter(schema_name="clinica").count() == 1


def test_seed_demo_more_clinics():
    call_command("seed_demo", clinics=3, patients=2)
    assert Domain.objects.filter(domain="clinica3.localhost").exists()
    assert counts("clinica3")["Patient"] == 2


def test_seed_demo_records_are_realistic():
    with schema_context("clinica"):
        patient = Patient.objects.exclude(allergies=[]).first()
        assert isinstance(patient.allergies, list)
        assert any(ch in "áéíóúñÁÉÍÓÚÑ" for ch in "".join(Patient.objects.values_list("last_name", flat=True)))
        appointment = Appointment.objects.first()
        assert appointment.starts_at.tzinfo is not None and appointment.starts_at.microsecond != 0
        invoice = Invoice.objects.first()
        assert invoice.total.as_tuple().exponent == -2
        assert Treatment.materials.through.objects.exists()
