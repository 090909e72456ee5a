"""The json payload's round trips: every column of every table comes back exactly, sequences are
reset, the other clinic and the public schema are untouched.

Everything runs against the real PostgreSQL test database, in the demo clinics' schemas,
inside each test's rolled-back transaction. "Unchanged" is always checked with a checksum
of every column of every payload table, computed by PostgreSQL itself.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import schema_context

from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import (
    JsonPayloadError,
    payload_models,
)
from backups.tests.formats.json.helpers import (
    add_hard_rows,
    checksums,
    dump,
    load,
    mutate_clinic,
    sub_in_line,
)
from dental.models import InventoryItem, Patient, Treatment

pytestmark = pytest.mark.django_db


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
    (archive/test_archive_doc_json shows loaddata failing on one), which is why restores use load_json_payload."""
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
    data = sub_in_line(dump(), "dental.patient", r'"allergies": \[[^\]]*\], "notes": "[^"]*", ', "")
    pk = json.loads([line for line in data.decode().split("\n") if '"dental.patient"' in line][0].rstrip(","))["pk"]
    load(data)
    with schema_context("clinica"):
        patient = Patient.objects.get(pk=pk)
        assert (patient.allergies, patient.notes) == ([], "")
        assert Patient.objects.exclude(pk=pk).exclude(notes="").exists()


def test_nothing_is_restored_into_the_public_schema():
    with pytest.raises(JsonPayloadError, match="never the public one"):
        load_json_payload(io.BytesIO(b"[]"))
