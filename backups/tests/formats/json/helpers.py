"""Helpers shared by the json payload tests: checksums of a clinic, dumps and loads, rows that are
hard to carry exactly."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.db import connection
from django.db.models import JSONField, Value
from django_tenants.utils import schema_context

from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import (
    payload_models,
    write_json_payload,
)
from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment, Treatment

TRICKY_TEXT = 'Ñandú «Ågata» 😀 "comillas" \\ barra\nlínea\ttab'
BIG_JSON = {
    "nested": {"ünïcode": ["😀", "Peña", 1.5, -0, 10**30, None, True, {"a": []}]},
    "texto": "línea\nnueva",
}


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def checksums(schema: str) -> dict[str, tuple[int, str]]:
    """{table: (rows, md5 of every column of every row)} for each payload table of ``schema``."""
    result = {}
    with schema_context(schema), connection.cursor() as cursor:
        for model in payload_models():
            table, pk = model._meta.db_table, model._meta.pk.column
            rows = f"FROM {qn(schema)}.{qn(table)} t"
            cursor.execute(f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.{qn(pk)})) {rows}")
            result[table] = cursor.fetchone()
    return result


def dump(schema: str = "clinica") -> bytes:
    out = io.BytesIO()
    with schema_context(schema):
        write_json_payload(out)
    return out.getvalue()


def add_hard_rows(*, extreme: bool = True) -> dict[str, int]:
    """Rows with the values that break naive serializers, in the current schema.

    ``extreme`` adds what Django's own fixtures cannot express (JSON null in a JSON field,
    JSON numbers beyond a float's precision).
    """
    dentist = Dentist.objects.create(
        first_name=TRICKY_TEXT,
        last_name="",
        license_number="COL-HARD-1",
        specialty="",
        works_from=time(23, 59, 59, 1),
        works_until=None,
        active=False,
    )
    p1 = Patient.objects.create(
        first_name="Iñaki",
        last_name="Ibáñez Muñoz",
        national_id="HARD-0001",
        birth_date=date(2024, 2, 29),
        allergies=BIG_JSON,
        notes=TRICKY_TEXT,
        xray="xrays/2024/02/radiografía niño ñ (1).png",
        consent_signature=b"\x00\xff\x00binary\xfe\x00",
    )
    p2 = Patient.objects.create(
        first_name="Zoë",
        last_name="Núñez",
        national_id="HARD-0002",
        allergies="solo una cadena JSON",
        notes="",
        consent_signature=b"",
    )
    p3 = Patient.objects.create(first_name="Ángela", last_name="Peña", national_id="HARD-0003", allergies=["[1, 2]"])
    Patient.objects.filter(pk=p1.pk).update(created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC))
    Patient.objects.filter(pk=p2.pk).update(created_at=datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
    if extreme:
        Patient.objects.filter(pk=p3.pk).update(allergies=Value(None, output_field=JSONField()))
        with connection.cursor() as cursor:  # Django's own JSON encoder cannot write these numbers
            cursor.execute(
                "UPDATE dental_patient SET allergies = %s::jsonb WHERE id = %s",
                ['{"precise": 0.1000000000000000055511151231257827, "tiny": 1E-7, "big": 1%s}' % ("0" * 40), p2.pk],
            )
    item_cheap = InventoryItem.objects.create(
        name="Hilo dental ñ", sku="HARD-SKU-1", quantity=Decimal("9999999.999"), unit_cost=Decimal("0.01")
    )
    item_zero = InventoryItem.objects.create(
        name="Composite «Z»", sku="HARD-SKU-2", quantity=Decimal("0"), unit_cost=Decimal("99999999.99")
    )
    a1 = Appointment.objects.create(
        patient=p1,
        dentist=dentist,
        starts_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        duration=timedelta(days=3, microseconds=1),
        reason=TRICKY_TEXT[:200],
    )
    Appointment.objects.create(
        patient=p2,
        dentist=dentist,
        starts_at=datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        duration=timedelta(microseconds=-1),
    )
    treatment = Treatment.objects.create(
        patient=p1, dentist=dentist, appointment=None, tooth_number=85, procedure="Endodoncia ñ", cost=Decimal("0.01"),
        performed_on=date(2024, 2, 29),
    )  # fmt: skip
    treatment.materials.set([item_cheap, item_zero])
    Treatment.objects.create(
        patient=p1, dentist=dentist, appointment=a1, tooth_number=11, procedure="Limpieza", cost=Decimal("12345678.90"),
        performed_on=date(1999, 12, 31),
    )  # fmt: skip
    invoice = Invoice.objects.create(
        patient=p1,
        number="F-HARD-1",
        reference=uuid.UUID("00000000-0000-4000-8000-0000000000ff"),
        issued_on=date(2024, 2, 29),
        due_on=None,
        total=Decimal("9999999999.99"),
    )
    invoice.treatments.set([treatment])
    Payment.objects.create(
        invoice=invoice,
        amount=Decimal("0.01"),
        method=Payment.Method.CARD,
        paid_at=datetime(2024, 2, 29, 12, 0, 0, 100000, tzinfo=UTC),
    )
    return {"p1": p1.pk, "p2": p2.pk, "p3": p3.pk, "appointment": a1.pk}


def mutate_clinic() -> None:
    """Changes of every kind a restore must undo, in the current schema."""
    Payment.objects.all().delete()
    Treatment.materials.through.objects.filter(pk__in=Treatment.materials.through.objects.values("pk")[:2]).delete()
    Patient.objects.filter(pk=Patient.objects.order_by("pk").first().pk).update(notes="cambiado", allergies={"x": 1})
    Appointment.objects.update(starts_at=datetime(2030, 1, 1, tzinfo=UTC))
    Patient.objects.create(first_name="Nuevo", last_name="Paciente", national_id="NEW-0001")


def load(data: bytes, schema: str = "clinica", **kwargs) -> dict[str, int]:
    with schema_context(schema):
        return load_json_payload(io.BytesIO(data), **kwargs)


def sub_in_line(data: bytes, model: str, pattern: str, new: str, occurrence: int = 0) -> bytes:
    """The payload with ``pattern`` replaced once in the ``occurrence``-th record of ``model``."""
    lines = data.decode().split("\n")
    target = [i for i, line in enumerate(lines) if f'"model": "{model}"' in line][occurrence]
    lines[target], replaced = re.subn(pattern, new, lines[target], count=1)
    assert replaced == 1
    return "\n".join(lines).encode()
