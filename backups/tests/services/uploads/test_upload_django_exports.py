"""Django JSON exports (dumpdata) and our own json payloads uploaded as files: they become json
backups that restore exactly, in bounded memory.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import JSONField, Value
from django_tenants.utils import schema_context

from backups import archive
from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import payload_models, read_json_payload, write_json_payload
from backups.keys.clinic import identities_held
from backups.models import Backup
from backups.services.upload import backup_from_upload
from backups.tests.helpers import (
    dumpdata,
    sha256_of,
    storage_files,
    stored_path,
    table_checksums,
)
from backups.tests.services.uploads.helpers import (
    payload_of,
)
from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Treatment

pytestmark = pytest.mark.django_db


THROUGH_TABLES = {"dental_treatment_materials", "dental_invoice_treatments"}


def dental_state(schema: str = "clinica") -> tuple[dict, dict]:
    """(checksums of the payload tables but the through tables, the through tables' links as sets)."""
    tables = {model._meta.db_table for model in payload_models()}
    sums = {name: value for name, value in table_checksums(schema).items() if name in tables - THROUGH_TABLES}
    links = {}
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in payload_models():
            if model._meta.db_table in THROUGH_TABLES:
                a, b = (f.column for f in model._meta.local_concrete_fields if f.is_relation)
                cursor.execute(f"SELECT {qn(a)}, {qn(b)} FROM {qn(schema)}.{qn(model._meta.db_table)}")
                links[model._meta.db_table] = set(cursor.fetchall())
    return sums, links


def restore_payload(backup: Backup, schema: str = "clinica") -> dict[str, int]:
    with (
        open(stored_path(backup.storage_name), "rb") as handle,
        archive.open_archive(handle, identities=identities_held()) as reader,
        schema_context(schema),
    ):
        return load_json_payload(reader, expected_counts=backup.manifest["tables"])


def truncate_to_milliseconds(schema: str = "clinica") -> None:
    """Django's JSON serializer keeps milliseconds only: make the data what a fixture can express."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in payload_models():
            for f in model._meta.concrete_fields:
                column, table = qn(f.column), f"{qn(schema)}.{qn(model._meta.db_table)}"
                if f.get_internal_type() == "DateTimeField":
                    cursor.execute(f"UPDATE {table} SET {column} = date_trunc('milliseconds', {column})")
                elif f.get_internal_type() == "TimeField":
                    cursor.execute(f"UPDATE {table} SET {column} = date_trunc('milliseconds', {column}::interval)")


# --- accepted: Django JSON exports -----------------------------------------------------


def _as_exported(text: str) -> bytes:
    return text.encode()


def _reversed_on_one_line(text: str) -> bytes:
    """Children before parents, pks descending, the whole file one line with no spaces."""
    return json.dumps(json.loads(text)[::-1], separators=(",", ":"), ensure_ascii=True).encode()


def _bom_crlf_tabs(text: str) -> bytes:
    return (
        b"\xef\xbb\xbf" + json.dumps(json.loads(text), indent="\t", ensure_ascii=False).replace("\n", "\r\n").encode()
    )


@pytest.mark.parametrize("shape", [_as_exported, _reversed_on_one_line, _bom_crlf_tabs])
def test_a_dumpdata_export_becomes_a_json_backup_that_restores_exactly(upload_tmp, shape):
    truncate_to_milliseconds("clinica")
    before = dental_state("clinica")
    all_before = table_checksums("clinica")
    files = storage_files()
    export = dumpdata("dental", indent=2)

    backup = backup_from_upload(
        clinic="clinica", source=SimpleUploadedFile("export.json", shape(export)), filename="export.json"
    )

    backup.refresh_from_db()
    assert (backup.kind, backup.status, backup.payload_format) == ("uploaded", "succeeded", "json")
    assert storage_files() - files == {backup.storage_name}
    assert backup.sha256 == sha256_of(stored_path(backup.storage_name))
    assert table_checksums("clinica") == all_before  # uploading changes nothing
    with schema_context("clinica"):
        expected = {m._meta.db_table: m.objects.count() for m in payload_models()}
    assert backup.manifest["tables"] == expected
    with connection.cursor() as cursor:
        cursor.execute('SELECT app, name FROM "clinica".django_migrations ORDER BY app, name')
        assert backup.manifest["migrations"]["dental"] == [n for a, n in cursor.fetchall() if a == "dental"]
    assert backup.manifest["postgresql"]["server"].split(".")[0].isdigit()

    payload = payload_of(backup)
    records = list(read_json_payload(io.BytesIO(payload)))
    order = [m._meta.label_lower for m in payload_models()]
    labels = [label for label, _pk, _fields in records]
    assert labels == sorted(labels, key=order.index)  # parents first, whatever the file's order
    for label in set(labels):
        pks = [pk for lab, pk, _f in records if lab == label]
        assert pks == sorted(pks) and len(set(pks)) == len(pks)

    with schema_context("clinica"):  # scramble, then restore from the uploaded backup
        Patient.objects.update(notes="borrado")
        Treatment.materials.through.objects.all().delete()
    assert dental_state("clinica") != before
    assert restore_payload(backup) == expected
    assert dental_state("clinica") == before


def test_many_to_many_lists_become_through_rows_and_keep_the_links(upload_tmp):
    with schema_context("clinica"):
        items = list(InventoryItem.objects.order_by("pk")[:3])
        first, second = Treatment.objects.order_by("pk")[:2]
        first.materials.set([items[2], items[0]])
        second.materials.set([])
        expected = {t.pk: {m.pk for m in t.materials.all()} for t in Treatment.objects.all()}
        invoices = {i.pk: {t.pk for t in i.treatments.all()} for i in Invoice.objects.all()}
    assert any(expected.values()) and any(invoices.values())
    export = json.loads(dumpdata("dental", indent=2))
    nested = {r["pk"]: r["fields"]["materials"] for r in export if r["model"] == "dental.treatment"}
    assert sorted(nested[first.pk]) == sorted([items[0].pk, items[2].pk]) and nested[second.pk] == []
    for record in export:  # a repeated id in a list is one link, as Django's m2m set() makes it
        if record["pk"] == first.pk and record["model"] == "dental.treatment":
            record["fields"]["materials"].append(items[0].pk)

    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(json.dumps(export, indent=2).encode()))

    records = list(read_json_payload(io.BytesIO(payload_of(backup))))
    through = [(pk, f) for label, pk, f in records if label == "dental.treatment_materials"]
    assert [pk for pk, _f in through] == list(range(1, len(through) + 1))  # numbered from 1 in file order
    assert {(f["treatment"], f["inventoryitem"]) for _pk, f in through} == {
        (t, m) for t, ms in expected.items() for m in ms
    }
    assert all("materials" not in f for label, _pk, f in records if label == "dental.treatment")
    assert backup.manifest["tables"]["dental_treatment_materials"] == len(through)

    with schema_context("clinica"):
        Treatment.materials.through.objects.all().delete()
        Treatment.invoices.through.objects.all().delete()
    restore_payload(backup)
    with schema_context("clinica"):
        assert {t.pk: {m.pk for m in t.materials.all()} for t in Treatment.objects.all()} == expected
        assert {i.pk: {t.pk for t in i.treatments.all()} for i in Invoice.objects.all()} == (invoices)
        new = Treatment.objects.create(
            patient=first.patient,
            dentist=first.dentist,
            tooth_number=11,
            procedure="x",
            cost=1,
            performed_on="2025-01-01",
        )
        new.materials.add(items[1])  # the through table's sequence was reset past the renumbered ids


def test_our_own_json_payload_uploaded_as_a_file_comes_back_byte_for_byte(upload_tmp):
    with schema_context("clinica"):
        dentist = Dentist.objects.create(
            first_name='Ñandú «Ågata» 😀 "x" \\ y\nz',
            last_name="",
            license_number="COL-UP-1",
            works_from=time(7, 15, 9, 123456),
        )
        patient = Patient.objects.create(
            first_name="Zoë", last_name="", national_id="UP-1", allergies=Value(None, JSONField()), notes="\t"
        )
        precise = Patient.objects.create(first_name="P", national_id="UP-2", consent_signature=bytes(range(256)))
        with connection.cursor() as cursor:  # numbers a float cannot hold: the ORM would round them
            cursor.execute(
                "UPDATE dental_patient SET allergies = %s::jsonb WHERE id = %s",
                [
                    '{"precise": 0.1000000000000000055511151231257827, "big": 1e40, "l": [null, true, "ü\\n"]}',
                    precise.pk,
                ],
            )
        Appointment.objects.create(
            patient=patient,
            dentist=dentist,
            starts_at=datetime(2025, 3, 30, 1, 59, 59, 999999, tzinfo=UTC),
            duration=timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5),
        )
        canonical = io.BytesIO()
        write_json_payload(canonical)
    assert b'"json_nulls": ["allergies"]' in canonical.getvalue()

    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(canonical.getvalue()))

    assert payload_of(backup) == canonical.getvalue()


def test_a_large_export_streams_in_bounded_memory(upload_tmp):
    notes = "Historia clínica: " + "x" * 2000
    records = [
        {
            "model": "dental.patient",
            "pk": pk,
            "fields": {
                "first_name": f"Paciente {pk}",
                "last_name": "Ñúñez",
                "national_id": f"ID{pk:08d}",
                "birth_date": "1980-01-31",
                "phone": "",
                "email": "",
                "allergies": ["látex", {"grado": pk}],
                "notes": notes,
                "xray": "",
                "consent_signature": None,
                "created_at": "2024-05-06T07:08:09.123456Z",
            },
        }
        for pk in range(1, 12_001)
    ]
    data = json.dumps(records, indent=2, ensure_ascii=False).encode()
    del records
    assert len(data) > 24 << 20

    tracemalloc.start()
    try:
        backup = backup_from_upload(clinic="clinica", source=io.BytesIO(data))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert backup.manifest["tables"]["dental_patient"] == 12_000
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MB for a {len(data) / 2**20:.0f} MB file"
