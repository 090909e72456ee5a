"""The portable json payload: lossless, atomic, streamed (Django serializer shape, not a loaddata fixture).

Everything runs against the real PostgreSQL test database, in the demo clinics' schemas,
inside each test's rolled-back transaction. "Unchanged" is always checked with a checksum
of every column of every payload table, computed by PostgreSQL itself.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tracemalloc
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import JSONField, Value
from django.utils.dateparse import parse_duration
from django_tenants.utils import schema_context

from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import (
    JSON_NULL,
    JsonPayloadError,
    payload_line_sql,
    payload_models,
    payload_table,
    read_json_payload,
    write_json_payload,
)
from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Payment, Treatment

pytestmark = pytest.mark.django_db

TRICKY_TEXT = 'Ñandú «Ågata» 😀 "comillas" \\ barra\nlínea\ttab'
BIG_JSON = {
    "nested": {"ünïcode": ["😀", "Peña", 1.5, -0, 10**30, None, True, {"a": []}]},
    "texto": "línea\nnueva",
}
# Numbers Python's float cannot hold exactly (jsonb keeps them as numeric): only our loader
# keeps them, loaddata (json.loads -> float) would round them.
PRECISE_JSON = {"precise": Decimal("0.1000000000000000055511151231257827"), "tiny": Decimal("1E-7"), "big": 10**40}


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


@pytest.fixture(autouse=True)
def _sequences_restored(db):
    """Put the clinics' sequences back after each test: unlike rows, they ignore rollbacks.

    Done on a connection of its own, which works even when the test broke its transaction.
    """
    own = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with own.cursor() as cursor:
            positions = []
            for schema in ("clinica", "bienestar"):
                for model in payload_models():
                    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [f"{schema}.{model._meta.db_table}"])
                    (sequence,) = cursor.fetchone()
                    cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
                    positions.append((sequence, *cursor.fetchone()))
        yield
        with own.cursor() as cursor:
            for sequence, last_value, is_called in positions:
                cursor.execute("SELECT setval(%s, %s, %s)", [sequence, last_value, is_called])
    finally:
        own.close()


def load(data: bytes, schema: str = "clinica", **kwargs) -> dict[str, int]:
    with schema_context(schema):
        return load_json_payload(io.BytesIO(data), **kwargs)


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


# --- Round trips -----------------------------------------------------------------------


def test_restore_brings_back_every_column_of_every_table_exactly():
    with schema_context("clinica"):
        add_hard_rows()
    before = checksums("clinica")
    data = dump()
    with schema_context("clinica"):
        mutate_clinic()
    assert checksums("clinica") != before
    loaded = load(data)
    assert checksums("clinica") == before
    assert loaded == {table: rows for table, (rows, _) in before.items()}
    assert dump() == data  # and dumping again gives the very same bytes


def test_the_whole_demo_clinic_survives_a_round_trip():
    before = checksums("clinica")
    assert before["dental_patient"][0] == 8 and before["dental_treatment_materials"][0] > 0
    data = dump()
    load(b"[\n]\n")  # an empty payload empties the clinic's records
    assert {rows for rows, _ in checksums("clinica").values()} == {0}
    load(data)
    assert checksums("clinica") == before


def test_loaddata_reads_a_payload_without_json_nulls(tmp_path):
    """The records have the serializer's shape; with a JSON null in a JSON field it is no fixture
    (test_archive_doc shows loaddata failing on one), which is why restores use load_json_payload."""
    with schema_context("clinica"):
        add_hard_rows(extreme=False)
    before = checksums("clinica")
    path = tmp_path / "clinica.json"
    path.write_bytes(dump())
    load(b"[]")
    with schema_context("clinica"):
        call_command("loaddata", str(path), verbosity=0)
    assert checksums("clinica") == before


def test_sequences_are_reset_to_the_largest_loaded_id():
    with schema_context("clinica"):
        ids = add_hard_rows()
        data = dump()
        for model in payload_models():  # as in a fresh schema: every sequence back at 1
            with connection.cursor() as cursor:
                cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), 1, false)", [model._meta.db_table])
        load_json_payload(io.BytesIO(data))
        top = max(Patient.objects.values_list("pk", flat=True))
        assert top >= ids["p3"]
        patient = Patient.objects.create(first_name="Tras", last_name="Restaurar", national_id="AFTER-1")
        assert patient.pk == top + 1
        treatment = Treatment.objects.order_by("pk").first()
        link_top = max(Treatment.materials.through.objects.values_list("pk", flat=True))
        treatment.materials.add(InventoryItem.objects.exclude(treatments=treatment).first())
        assert max(Treatment.materials.through.objects.values_list("pk", flat=True)) == link_top + 1


def test_restoring_one_clinic_leaves_the_other_untouched():
    other_before = checksums("bienestar")
    data = dump("clinica")
    with schema_context("clinica"):
        mutate_clinic()
    load(data, "clinica")
    assert checksums("bienestar") == other_before
    # A payload taken from another clinic replaces this clinic's records with those, and only here.
    load(dump("bienestar"), "clinica")
    assert checksums("clinica") == other_before == checksums("bienestar")


def test_fields_missing_from_a_record_take_the_model_default_as_with_loaddata():
    data = _sub_in_line(dump(), "dental.patient", r'"allergies": \[[^\]]*\], "notes": "[^"]*", ', "")
    pk = json.loads([line for line in data.decode().split("\n") if '"dental.patient"' in line][0].rstrip(","))["pk"]
    load(data)
    with schema_context("clinica"):
        patient = Patient.objects.get(pk=pk)
        assert (patient.allergies, patient.notes) == ([], "")
        assert Patient.objects.exclude(pk=pk).exclude(notes="").exists()


def test_nothing_is_restored_into_the_public_schema():
    with pytest.raises(JsonPayloadError, match="never the public one"):
        load_json_payload(io.BytesIO(b"[]"))


# --- Refusals: each leaves the clinic exactly as it was ---------------------------------


def _with_line(data: bytes, line: str, at: int | None = None) -> bytes:
    """The payload with one more record line, at the end by default."""
    lines = data.decode().split("\n")  # "[", records..., "]", ""
    records = lines[1:-2]
    records.insert(len(records) if at is None else at, line)
    return ("\n".join(["[", ",\n".join(r.removesuffix(",") for r in records), "]", ""])).encode()


def _foreign(label: str) -> str:
    return json.dumps({"model": label, "pk": 1, "fields": {}})


def _sub_in_line(data: bytes, model: str, pattern: str, new: str, occurrence: int = 0) -> bytes:
    """The payload with ``pattern`` replaced once in the ``occurrence``-th record of ``model``."""
    lines = data.decode().split("\n")
    target = [i for i, line in enumerate(lines) if f'"model": "{model}"' in line][occurrence]
    lines[target], replaced = re.subn(pattern, new, lines[target], count=1)
    assert replaced == 1
    return "\n".join(lines).encode()


def _national_id(data: bytes, occurrence: int) -> str:
    line = [line for line in data.decode().split("\n") if '"model": "dental.patient"' in line][occurrence]
    return json.loads(line.removesuffix(","))["fields"]["national_id"]


BAD_PAYLOADS = {
    "auth.user": (
        lambda d: _with_line(d, _foreign("auth.user")),
        r"records of “auth\.user”: a json restore replaces only the clinic's records \(dental\)\. Nothing was",
    ),
    "clinics.clinic": (
        lambda d: _with_line(d, _foreign("clinics.clinic")),
        r"records of “clinics\.clinic”: a json restore replaces only",
    ),
    "clinics.domain": (lambda d: _with_line(d, _foreign("clinics.domain"), at=3), r"“clinics\.domain”"),
    "django_q.task": (lambda d: _with_line(d, _foreign("django_q.task")), r"“django_q\.task”"),
    "sessions.session": (lambda d: _with_line(d, _foreign("sessions.session")), r"“sessions\.session”"),
    "unknown model": (lambda d: _with_line(d, _foreign("dental.xray")), r"unknown model “dental\.xray”"),
    "invalid json": (
        lambda d: _sub_in_line(d, "dental.patient", r'"national_id": "', '"national_id": ', 3),
        r"Line \d+ of the backup is not valid JSON",
    ),
    "not utf-8": (
        lambda d: d.replace(b'"first_name": "', b'"first_name": "\xff', 1),
        r"Line 2 of the backup is not UTF-8 text",
    ),
    "object, not array": (lambda d: _foreign("dental.patient").encode(), r"single JSON object, not a list"),
    "truncated mid-line": (lambda d: d[: len(d) // 2], r"incomplete \(truncated or damaged\)"),
    "truncated between lines": (lambda d: d[: d.rfind(b"},\n", 0, len(d) // 2) + 3], r"incomplete"),
    "missing comma": (lambda d: d.replace(b"},\n", b"}\n", 1), r"separated by commas"),
    "trailing comma": (lambda d: d.replace(b"}\n]", b"},\n]"), r"a record was expected after the comma"),
    "duplicate national_id": (
        lambda d: _sub_in_line(
            d, "dental.patient", r'"national_id": "[^"]*"', f'"national_id": "{_national_id(d, 0)}"', 1
        ),
        r"duplicate key value violates unique constraint.*\(national_id\)=",
    ),
    "dangling foreign key": (
        lambda d: _sub_in_line(d, "dental.appointment", r'"patient": \d+', '"patient": 999999'),
        r"violates foreign key constraint.*\(patient_id\)=\(999999\)",
    ),
    "bad datetime": (
        lambda d: _sub_in_line(d, "dental.payment", r'"paid_at": "', '"paid_at": "yesterday '),
        r"invalid record \(dental\.payment pk=\d+, field “paid_at”\)",
    ),
    "text where a number belongs": (
        lambda d: _sub_in_line(d, "dental.treatment", r'"tooth_number": \d+', '"tooth_number": "once"'),
        r'invalid input syntax for type smallint: "once"',
    ),
    "list for a text field": (
        lambda d: _sub_in_line(d, "dental.dentist", r'"phone": "[^"]*"', '"phone": ["+34"]'),
        r"invalid record \(dental\.dentist pk=\d+, field “phone”\): expected text\. Nothing was restored\.$",
    ),
    "unknown field": (
        lambda d: _sub_in_line(d, "dental.dentist", r'"phone": ', '"fax": 1, "phone": '),
        r"invalid record \(dental\.dentist pk=\d+\): unknown fields: fax",
    ),
    "missing required field": (
        lambda d: _sub_in_line(d, "dental.invoice", r'"issued_on": "[^"]*", ', ""),
        r"invalid record \(dental\.invoice pk=\d+, field “issued_on”\): the field is missing",
    ),
    "value too long": (
        lambda d: _sub_in_line(d, "dental.invoice", r'"number": "', '"number": "' + "9" * 40),
        r"value too long for type character varying\(30\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_bad_payloads_are_refused_and_change_nothing(case):
    make_bad, message = BAD_PAYLOADS[case]
    bad = make_bad(dump())
    with schema_context("clinica"):
        mutate_clinic()  # so that even a partial restore of the payload would show
    before = checksums("clinica")
    with pytest.raises(JsonPayloadError, match=message):
        load(bad)
    assert checksums("clinica") == before


def test_a_count_mismatch_with_the_manifest_is_refused_and_changes_nothing():
    before = checksums("clinica")
    data = dump()
    expected = {table: rows for table, (rows, _) in before.items()}
    with schema_context("clinica"):
        mutate_clinic()
    changed = checksums("clinica")
    with pytest.raises(JsonPayloadError, match=r"dental_patient: 8 instead of 9"):
        load(data, expected_counts={**expected, "dental_patient": 9})
    with pytest.raises(JsonPayloadError, match=r"auth_user: 0 instead of 1"):
        load(data, expected_counts={**expected, "auth_user": 1})
    assert checksums("clinica") == changed
    assert load(data, expected_counts=expected) == expected
    assert checksums("clinica") == before


def test_an_overlong_line_is_refused():
    data = dump()
    with pytest.raises(JsonPayloadError, match=r"Line 2 of the backup is longer than 100 bytes"):
        list(read_json_payload(io.BytesIO(data), max_line_bytes=100))


# --- Streaming -------------------------------------------------------------------------


def test_writing_and_reading_a_large_payload_use_little_memory(tmp_path):
    with schema_context("clinica"):
        notes = "Historia clínica: " + "ñ" * 300
        Patient.objects.bulk_create(
            (
                Patient(
                    first_name="Paciente",
                    last_name=f"Número {n}",
                    national_id=f"BULK{n:08d}",
                    allergies=["látex", {"n": n}],
                    notes=notes,
                    consent_signature=n.to_bytes(4, "big") * 8,
                )
                for n in range(20_000)
            ),
            batch_size=5000,
        )
        path = tmp_path / "payload.json"
        with path.open("wb") as out:
            tracemalloc.start()
            try:
                counts = write_json_payload(out)
                _, write_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    size = path.stat().st_size
    assert counts["dental_patient"] == 20_008
    assert size > 12_000_000
    assert write_peak < size / 4, (write_peak, size)

    with path.open("rb") as stream:
        tracemalloc.start()
        try:
            rows = sum(1 for _ in read_json_payload(stream))
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rows == sum(counts.values())
    assert read_peak < size / 4, (read_peak, size)

    with schema_context("clinica"), path.open("rb") as stream:
        Patient.objects.filter(national_id__startswith="BULK").update(notes="")
        tracemalloc.start()
        try:
            loaded = load_json_payload(stream, expected_counts=counts)
            _, load_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert Patient.objects.filter(notes=notes).count() == 20_000
    assert loaded == counts
    assert load_peak < size / 4, (load_peak, size)
