"""The portable json payload (Django serializer shape, not a loaddata fixture): which models, one
record per line, every value exactly as the database holds it.

Everything runs against the real PostgreSQL test database, in the demo clinics' schemas,
inside each test's rolled-back transaction. "Unchanged" is always checked with a checksum
of every column of every payload table, computed by PostgreSQL itself.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils.dateparse import parse_duration
from django_tenants.utils import schema_context

from backups.formats.json.payload import (
    JSON_NULL,
    payload_line_sql,
    payload_models,
    payload_table,
    read_json_payload,
    write_json_payload,
)
from backups.tests.formats.json.helpers import (
    add_hard_rows,
    dump,
)
from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment

pytestmark = pytest.mark.django_db


# Numbers Python's float cannot hold exactly (jsonb keeps them as numeric): only our loader
# keeps them, loaddata (json.loads -> float) would round them.
PRECISE_JSON = {"precise": Decimal("0.1000000000000000055511151231257827"), "tiny": Decimal("1E-7"), "big": 10**40}


# --- Which models ----------------------------------------------------------------------


def test_payload_models_are_the_clinic_records_in_dependency_order():
    models = payload_models()
    labels = [m._meta.label_lower for m in models]
    assert set(labels) == {
        "dental.dentist",
        "dental.patient",
        "dental.inventoryitem",
        "dental.appointment",
        "dental.treatment",
        "dental.treatment_materials",
        "dental.invoice",
        "dental.invoice_treatments",
        "dental.payment",
    }
    for position, model in enumerate(models):
        for field in model._meta.local_concrete_fields:
            if field.is_relation:
                assert models.index(field.related_model) < position, (model, field)


def test_payload_apps_follow_the_setting(settings):
    settings.BACKUPS_JSON_APPS = ["dental", "django.contrib.sessions"]
    assert "sessions.session" in [m._meta.label_lower for m in payload_models()]


# --- Format and exactness --------------------------------------------------------------


def test_the_payload_is_one_record_per_line_in_a_json_array():
    with schema_context("clinica"):
        add_hard_rows()
        out = io.BytesIO()
        counts = write_json_payload(out)
    data = out.getvalue()
    lines = data.decode("utf-8").split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    records = [json.loads(line.removesuffix(",")) for line in lines[1:-2]]
    assert all(line.endswith(",") for line in lines[1:-3]) and not lines[-3].endswith(",")
    assert json.loads(data) == records  # the whole file is one valid JSON document
    per_table = {}
    for record in records:
        per_table[record["model"]] = per_table.get(record["model"], 0) + 1
    assert {m._meta.db_table: per_table.get(m._meta.label_lower, 0) for m in payload_models()} == counts
    treatment = next(r for r in records if r["model"] == "dental.treatment")
    assert "materials" not in treatment["fields"] and "patient" in treatment["fields"]
    link = next(r for r in records if r["model"] == "dental.treatment_materials")
    assert set(link["fields"]) == {"treatment", "inventoryitem"} and isinstance(link["pk"], int)
    assert "Ñandú «Ågata» 😀".encode() in data  # real UTF-8, not \\u escapes
    assert b'"json_nulls": ["allergies"]' in data
    assert sum(1 for r in records if "json_nulls" in r) == 1


def test_the_payload_holds_every_value_exactly_as_the_database_does():
    with schema_context("clinica"):
        ids = add_hard_rows()
        data = dump()
        records = {(label, pk): fields for label, pk, fields in read_json_payload(io.BytesIO(data))}
        appointments = list(Appointment.objects.all())
        assert len(appointments) == 2 * 8 + 2
        assert sum(1 for a in appointments if a.starts_at.microsecond) >= len(appointments) - 1
        for appointment in appointments:
            fields = records["dental.appointment", appointment.pk]
            assert datetime.fromisoformat(fields["starts_at"]) == appointment.starts_at
            assert datetime.fromisoformat(fields["starts_at"]).microsecond == appointment.starts_at.microsecond
            assert parse_duration(fields["duration"]) == appointment.duration
            assert (fields["patient"], fields["dentist"]) == (appointment.patient_id, appointment.dentist_id)
        assert records["dental.appointment", ids["appointment"]]["starts_at"] == "2024-02-29T23:59:59.999999+00:00"
        for payment in Payment.objects.all():
            fields = records["dental.payment", payment.pk]
            assert datetime.fromisoformat(fields["paid_at"]) == payment.paid_at
            assert fields["amount"] == str(payment.amount) and uuid.UUID(fields["reference"]) == payment.reference
        for dentist in Dentist.objects.all():
            fields = records["dental.dentist", dentist.pk]
            assert fields["works_from"] == dentist.works_from.isoformat(timespec="microseconds")
        assert "23:59:59.000001" in {records["dental.dentist", d.pk]["works_from"] for d in Dentist.objects.all()}
        for patient in Patient.objects.all():
            fields = records["dental.patient", patient.pk]
            signature = fields["consent_signature"]
            assert (None if signature is None else base64.b64decode(signature)) == (
                None if patient.consent_signature is None else bytes(patient.consent_signature)
            )
            assert datetime.fromisoformat(fields["created_at"]) == patient.created_at
            assert (fields["first_name"], fields["notes"], fields["xray"]) == (
                patient.first_name,
                patient.notes,
                patient.xray.name,
            )
            if patient.pk == ids["p3"]:
                assert fields["allergies"] is JSON_NULL and patient.allergies is None
            elif patient.pk == ids["p2"]:
                assert fields["allergies"] == PRECISE_JSON  # Decimals, every digit (the ORM reads floats)
            else:
                assert fields["allergies"] == patient.allergies
        assert records["dental.patient", ids["p1"]]["created_at"] == "2024-02-29T23:59:59.999999+00:00"
        for item in InventoryItem.objects.all():
            fields = records["dental.inventoryitem", item.pk]
            assert (fields["quantity"], fields["unit_cost"]) == (str(item.quantity), str(item.unit_cost))
        assert "99999999.99" in {
            records["dental.inventoryitem", i.pk]["unit_cost"] for i in InventoryItem.objects.all()
        }
        for invoice in Invoice.objects.all():
            fields = records["dental.invoice", invoice.pk]
            assert (fields["total"], fields["reference"]) == (str(invoice.total), str(invoice.reference))
            assert fields["due_on"] == (invoice.due_on and invoice.due_on.isoformat())
        assert "9999999999.99" in {records["dental.invoice", i.pk]["total"] for i in Invoice.objects.all()}


def test_postgresql_writes_every_line_exactly_as_the_python_encoder_does():
    """The lines PostgreSQL builds (each kind's SQL spelling) are byte for byte those of the Python
    encoder, for the values that break naive serializers and for edge durations and times."""
    with schema_context("clinica"):
        ids = add_hard_rows()
        dentist = Dentist.objects.first()
        patient = Patient.objects.get(pk=ids["p1"])
        for duration in (timedelta(days=-3, seconds=5, microseconds=7), timedelta(days=400), timedelta(0)):
            Appointment.objects.create(
                patient=patient, dentist=dentist, starts_at=datetime(1, 1, 1, 0, 0, tzinfo=UTC), duration=duration
            )
        with connection.cursor() as cursor:  # an interval Django never writes: months and hours past a day
            cursor.execute(
                "UPDATE dental_appointment SET duration = interval '1 year 2 mons -3 days 49:00:00.5' WHERE id = %s",
                [ids["appointment"]],
            )
        Dentist.objects.filter(pk=dentist.pk).update(works_from=time(0, 0), works_until=time(23, 59, 59, 999999))
        in_python, in_sql = io.BytesIO(), io.BytesIO()
        write_json_payload(in_python, lines_in_sql=False)
        write_json_payload(in_sql)
    assert in_sql.getvalue() == in_python.getvalue()
    assert b'"duration": "424 01:00:00.500000"' in in_sql.getvalue()  # 365 + 2 * 30 - 3 days + 49 h, as psycopg
    assert all(payload_line_sql(payload_table(model)) for model in payload_models())  # none fell back


@pytest.mark.parametrize("lines_in_sql", [True, False])
def test_a_date_python_cannot_hold_fails_the_export_instead_of_being_written_wrong(lines_in_sql):
    """An infinite date (PostgreSQL has them, Python has not) stops the export in both writers."""
    with schema_context("clinica"):
        patient = Patient.objects.first()
        with connection.cursor() as cursor:
            cursor.execute("UPDATE dental_patient SET birth_date = 'infinity' WHERE id = %s", [patient.pk])
        with pytest.raises(Exception, match="date") as failure, transaction.atomic():
            write_json_payload(io.BytesIO(), lines_in_sql=lines_in_sql)
    if lines_in_sql:
        assert "the json format cannot hold this date: infinity" in str(failure.value)
