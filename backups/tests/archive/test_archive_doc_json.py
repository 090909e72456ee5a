"""A json payload is what docs/archive-format.md says, and loads through the application only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.db.models import JSONField, Value
from django_tenants.utils import schema_context

from backups.formats.json.payload import JSON_NULL, payload_models, read_json_payload
from backups.tests.archive.helpers import (
    SCHEMA,
    make_backup,
    paste,
    row_counts,
    take_clinic_key,
)
from backups.tests.helpers import stored_path, table_checksums
from dental.models import Patient

# --- json backups ------------------------------------------------------------------------


def test_a_json_payload_is_what_the_doc_says_and_loads_through_the_application_only(scratch_clinic, operator, tmp_path):
    with schema_context(SCHEMA):
        patient_pk = Patient.objects.order_by("pk").first().pk
        Patient.objects.filter(pk=patient_pk).update(allergies=Value(None, output_field=JSONField()))
    connection.set_schema_to_public()
    backup = make_backup(payload_format="json")
    operator["ARCHIVE"] = str(stored_path(backup.storage_name))
    take_clinic_key(operator)
    elsewhere = tmp_path / "elsewhere"
    payload = Path(operator["WORK"]) / "payload"

    verified = paste("verify", operator, cwd=elsewhere)
    assert verified.status == 0, verified.stderr
    assert f"verified: clinic {SCHEMA} (id {scratch_clinic.pk}), json backup" in verified.stdout

    summary = paste("json-summary", operator, cwd=elsewhere)
    assert summary.status == 0, summary.stderr
    expected = {
        m._meta.label_lower: backup.manifest["tables"][m._meta.db_table]
        for m in payload_models()
        if backup.manifest["tables"][m._meta.db_table]
    }
    assert {model: int(rows) for model, rows in (line.split() for line in summary.stdout.split("\n") if line)} == (
        expected
    )
    assert expected["dental.patient"] == 30

    # The project's reader gives the JSON null back as JSON null (SQL NULL would be None).
    with open(payload, "rb") as handle:
        records = {(label, pk): fields for label, pk, fields in read_json_payload(handle)}
    assert records["dental.patient", patient_pk]["allergies"] is JSON_NULL

    def allergies_is_json_null() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT jsonb_typeof(allergies) FROM "{SCHEMA}".dental_patient WHERE id = %s', [patient_pk])
            return cursor.fetchone()[0] == "null"

    with schema_context(SCHEMA):
        Patient.objects.filter(pk=patient_pk).update(allergies=["látex"])
    connection.set_schema_to_public()
    before = table_checksums(SCHEMA)

    # Not a loaddata fixture, as the doc says: JSON null becomes SQL NULL and the load aborts.
    fixture = tmp_path / "payload.json"
    shutil.copyfile(payload, fixture)
    with schema_context(SCHEMA), pytest.raises(IntegrityError, match="allergies"):
        call_command("loaddata", str(fixture), verbosity=0)
    connection.set_schema_to_public()
    assert table_checksums(SCHEMA) == before

    # What the doc says to do with it: restore_clinic --file, the extracted payload as is.
    call_command("restore_clinic", SCHEMA, "--file", str(payload), "--yes")
    assert allergies_is_json_null()
    assert {t: n for t, n in row_counts(SCHEMA).items() if t.startswith("dental_")} == backup.manifest["tables"]
