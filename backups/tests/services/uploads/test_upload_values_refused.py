"""Uploaded records with a bad value: refused naming the record and the field (malformed records,
file names outside the clinic's folder, numbers too long to read, repeated records and links).
"""

from __future__ import annotations

import io
import json

import pytest

from backups.formats.json.payload import read_json_payload
from backups.services.upload import backup_from_upload
from backups.tests.helpers import (
    dumpdata,
)
from backups.tests.services.uploads.helpers import (
    one_per_line,
    payload_of,
    record_of,
    refused,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("label", "change", "code", "phrase"),
    [
        ("dental.patient", {"birth_date": "1990-13-45"}, "invalid_value", "field “birth_date”: “1990-13-45”"),
        ("dental.patient", {"favourite_colour": "azul"}, "invalid_value", "dental.patient has no such field"),
        ("dental.patient", {"national_id": None}, "invalid_value", "this field cannot be empty"),
        ("dental.patient", {"notes": {"a": 1}}, "invalid_value", "field “notes”: expected text, found an object"),
        ("dental.patient", {"consent_signature": "not base64!"}, "invalid_value", "is not valid base64"),
        ("dental.patient", {"notes": "nul\u0000byte"}, "invalid_value", "contains a NUL character"),
        ("dental.dentist", {"license_number": "X" * 41}, "invalid_value", "at most 40 are allowed"),
        ("dental.dentist", {"active": "maybe"}, "invalid_value", "field “active”:"),
        ("dental.dentist", {"works_from": "25:61"}, "invalid_value", "field “works_from”:"),
        ("dental.inventoryitem", {"unit_cost": "1.234"}, "invalid_value", "1.234 has more than 2 decimal places"),
        ("dental.inventoryitem", {"unit_cost": "123456789"}, "invalid_value", "is too large"),
        ("dental.inventoryitem", {"reorder_level": -1}, "invalid_value", "-1 is out of range (0 to 2147483647)"),
        ("dental.inventoryitem", {"reorder_level": 2.5}, "invalid_value", "expected a whole number"),
        ("dental.appointment", {"patient": ["CL00000000T"]}, "natural_keys", "natural keys"),
        ("dental.appointment", {"duration": "a while"}, "invalid_value", "field “duration”:"),
        ("dental.appointment", {"patient": 999999}, "missing_reference", "dental.patient id 999999"),
        ("dental.appointment", {"starts_at": "yesterday"}, "invalid_value", "field “starts_at”:"),
        ("dental.treatment", {"materials": [["SKU-1"]]}, "natural_keys", "natural keys"),
        ("dental.treatment", {"materials": 3}, "invalid_value", "expected a list of ids"),
        ("dental.treatment", {"materials": [999999]}, "missing_reference", "dental.inventoryitem id 999999"),
        ("dental.invoice", {"reference": "not-a-uuid"}, "invalid_value", "field “reference”:"),
        (
            "dental.appointment",
            {"status": "hacked"},
            "invalid_value",
            "field “status”: “hacked” is not one of the allowed values (scheduled, confirmed, completed, "
            "cancelled, no_show).",
        ),
        ("dental.appointment", {"status": "Scheduled"}, "invalid_value", "“Scheduled” is not one of the allowed"),
        ("dental.invoice", {"status": ""}, "invalid_value", "field “status”: “” is not one of the allowed values"),
        ("dental.payment", {"method": "bitcoin"}, "invalid_value", "field “method”: “bitcoin” is not one of the"),
    ],
)
def test_a_record_with_a_bad_value_is_refused_naming_record_and_field(upload_tmp, label, change, code, phrase):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, label)
    record["fields"].update(change)
    error = refused(one_per_line(records), upload_tmp)
    where = f"Record {index + 1} of the file (line {index + 2}"
    assert error.code == code, str(error)
    assert phrase in str(error)
    if code in ("invalid_value", "natural_keys"):
        assert str(error).startswith(f"{where}, {label} id {record['pk']}), field “")


@pytest.mark.parametrize(
    ("edit", "code", "phrase"),
    [
        (lambda r: r.pop("pk"), "natural_keys", "has no id (“pk”): files exported with natural keys"),
        (lambda r: r.update(pk=None), "natural_keys", "has no id"),
        (lambda r: r.update(extra=1), "invalid_record", "has unexpected keys (extra)"),
        (lambda r: r.update(fields=[]), "invalid_record", "has no “fields” object"),
        (lambda r: r["fields"].pop("created_at"), "invalid_value", "the field is missing"),
    ],
    ids=["no-pk", "null-pk", "extra-key", "fields-list", "missing-field"],
)
def test_a_malformed_record_is_refused(upload_tmp, edit, code, phrase):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, "dental.patient")
    edit(record)
    error = refused(one_per_line(records), upload_tmp)
    assert error.code == code and phrase in str(error), str(error)
    assert str(error).startswith(f"Record {index + 1} of the file (line {index + 2}")


@pytest.mark.parametrize(
    "name",
    [
        "../other/xrays/2024/01/a.png",
        "/etc/passwd",
        "xrays/../../bienestar/xrays/2024/01/a.png",
        "xrays/2024/../../../secret.png",
        "xrays\\..\\..\\bienestar\\a.png",
        "..\\..\\etc\\passwd",
        "C:\\Windows\\win.ini",
        "bienestar/xrays/2024/01/a.png",
        "clinica/xrays/2024/01/a.png",
        "xrays//etc/passwd",
        "./xrays/2024/01/a.png",
        "xrays/2024/01/",
        "xrays",
        "..",
    ],
)
def test_a_file_name_outside_the_clinics_media_folder_is_refused(upload_tmp, name):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, "dental.patient")
    record["fields"]["xray"] = name
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}, dental.patient id {record['pk']}), field “xray”: "
        f"“{name}” is not the name of a file of this clinic: it must be a path inside the clinic's “xrays/” "
        "folder (relative, without “..” or backslashes)."
    )
    assert error.code == "invalid_value"


def test_allowed_choices_and_file_names_inside_the_clinics_folder_are_accepted(upload_tmp):
    records = json.loads(dumpdata("dental"))
    _index, patient = record_of(records, "dental.patient")
    _index, appointment = record_of(records, "dental.appointment")
    patient["fields"]["xray"] = "xrays/2024/02/radiografía niño ñ (1).png"
    appointment["fields"]["status"] = "no_show"
    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(one_per_line(records)))
    payload = list(read_json_payload(io.BytesIO(payload_of(backup))))
    assert ("dental.patient", patient["pk"]) in {(label, pk) for label, pk, _f in payload}
    fields = {(label, pk): f for label, pk, f in payload}
    assert fields["dental.patient", patient["pk"]]["xray"] == "xrays/2024/02/radiografía niño ñ (1).png"
    assert fields["dental.appointment", appointment["pk"]]["status"] == "no_show"


BIG = "1" * 5000


@pytest.mark.parametrize(
    ("label", "edit", "number"),
    [
        ("dental.patient", lambda r: r.update(pk="@N@"), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(reorder_level="@N@"), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(reorder_level="@N@"), "-" + "9" * 4301),
        ("dental.patient", lambda r: r["fields"].update(allergies=[{"grado": "@N@"}]), BIG),
        ("dental.treatment", lambda r: r["fields"].update(materials=["@N@"]), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(unit_cost="@N@"), BIG + ".25"),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "0." + BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(unit_cost="@N@"), "1e" + "9" * 30),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "1e5000"),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "-2.5E-5000"),
    ],
    ids=["pk", "integer", "negative", "json", "m2m", "decimal", "fraction", "huge-exponent", "exponent", "tiny"],
)
def test_a_number_too_long_to_read_is_refused(upload_tmp, label, edit, number):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, label)
    edit(record)
    data = one_per_line(records).replace(b'"@N@"', number.encode())
    error = refused(data, upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}) holds a number of more than 4300 digits "
        f"({number[:20]}…), which cannot be restored."
    )
    assert error.code == "invalid_record"


@pytest.mark.parametrize(
    ("label", "name"),
    [("dental.inventoryitem", "reorder_level"), ("dental.inventoryitem", "unit_cost"), ("dental.patient", "pk")],
)
def test_a_number_too_long_to_read_given_as_text_is_refused(upload_tmp, label, name):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, label)
    where = f"{label} id {record['pk']}"
    if name == "pk":
        record["pk"] = BIG
        where = f"{label} id {json.dumps(BIG)[:60]}"
    else:
        record["fields"][name] = BIG
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}, {where}), field “{name}”: “{BIG[:20]}…” has more "
        "than 4300 digits, which cannot be restored."
    )
    assert error.code == "invalid_value"


def test_a_repeated_record_is_refused(upload_tmp):
    records = json.loads(dumpdata("dental"))
    index, record = record_of(records, "dental.patient")
    records.append(record)
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {len(records)} of the file (line {len(records) + 1}) repeats dental.patient id {record['pk']}: "
        "each record may appear only once."
    )


def test_links_given_both_nested_and_as_through_records_are_refused(upload_tmp):
    records = json.loads(dumpdata("dental"))
    records.append({"model": "dental.treatment_materials", "pk": 1, "fields": {"treatment": 1, "inventoryitem": 1}})
    error = refused(one_per_line(records), upload_tmp)
    assert str(error).startswith("The file gives the links of “dental.treatment.materials” twice")
