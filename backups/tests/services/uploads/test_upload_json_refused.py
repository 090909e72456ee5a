"""Uploaded JSON that is not the clinic's records: other records, invalid or malformed JSON, text not
in UTF-8, JSON that is not a list of records; refused with its line and column, nothing kept.
"""

from __future__ import annotations

import json

import pytest

from backups.tests.helpers import (
    dumpdata,
)
from backups.tests.services.uploads.helpers import (
    one_per_line,
    refused,
)

pytestmark = pytest.mark.django_db


# --- refused: JSON that is not the clinic's records ------------------------------------


def _domain_records() -> bytes:
    text = dumpdata("clinics.domain", schema="public", indent=2)
    assert '"model": "clinics.domain"' in text
    return text.encode()


def _users_of_the_clinic() -> bytes:
    text = dumpdata("auth.user", indent=2)
    assert '"model": "auth.user"' in text and "pbkdf2" in text
    return text.encode()


def _dental_then(record: dict) -> bytes:
    records = json.loads(dumpdata("dental"))
    return one_per_line([*records[:5], record, *records[5:]])


@pytest.mark.parametrize(
    ("make", "label"),
    [
        (_domain_records, "clinics.domain"),
        (_users_of_the_clinic, "auth.user"),
        (lambda: dumpdata("auth.permission").encode(), "auth.permission"),
        (lambda: dumpdata("clinics.clinic", schema="public").encode(), "clinics.clinic"),
        (lambda: _dental_then({"model": "sessions.session", "pk": "k", "fields": {}}), "sessions.session"),
        (
            lambda: _dental_then({"model": "django_q.schedule", "pk": 1, "fields": {"func": "os.system"}}),
            "django_q.schedule",
        ),
        (lambda: _dental_then({"model": "admin.logentry", "pk": 1, "fields": {}}), "admin.logentry"),
        (lambda: _dental_then({"model": "dental.xray", "pk": 1, "fields": {}}), "dental.xray"),
        (lambda: _dental_then({"model": "nothing", "pk": 1, "fields": {}}), "nothing"),
    ],
    ids=["domain", "users", "permissions", "clinics", "sessions", "django_q", "logentry", "unknown", "no-app"],
)
def test_records_that_are_not_clinic_data_are_refused(upload_tmp, make, label):
    error = refused(make(), upload_tmp)
    assert str(error) == (
        f'The file contains records of "{label}", which is not clinic data: only the clinic\'s records '
        "(patients, appointments, …) can be restored from a file."
    )
    assert error.code == "not_clinic_data"


def test_invalid_json_is_refused_with_its_line_and_column(upload_tmp):
    record = '{"model": "dental.dentist", "pk": 1, "fields": {"first_name": "Ana",}}'
    error = refused(f'[\n{{"model": "dental.dentist", "pk": 9, "fields": {{}}}},\n{record}\n]'.encode(), upload_tmp)
    assert str(error) == (
        "The file is not valid JSON: Expecting property name enclosed in double quotes "
        f"at line 3, column {record.index(',}') + 2}."
    )
    assert error.code == "invalid_json"


VALID = '{"model": "dental.dentist", "pk": 9, "fields": {}}'  # every field gets its default


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (f"[{VALID} {VALID}]", f"Expecting ',' delimiter at line 1, column {len(VALID) + 3}."),
        (f"[{VALID},\n ]", "a record is expected after the last comma at line 2, column 2."),
        (f"[{VALID}] []", f"Extra data after the end of the list at line 1, column {len(VALID) + 4}."),
        (f'[{VALID}, {{"model": "dental.dentist", "pk": 1, "fields": {{"first_name": "An', "it ends in the middle"),
        (f"[\n  {VALID}", "it ends in the middle"),
        (f"[{VALID},\n{{'model': 'dental.dentist'}}]", "enclosed in double quotes at line 2, column 2."),
        ('[{"model": "dental.dentist", "pk": 1, "fields": {"notes": "a\x01b"}}]', "Invalid control character"),
        (f"[{VALID}, tru", "Expecting value at line 1, column"),
    ],
    ids=["no-comma", "trailing-comma", "extra-data", "cut-string", "unclosed", "single-quotes", "control", "literal"],
)
def test_malformed_json_is_refused(upload_tmp, content, phrase):
    error = refused(content.encode(), upload_tmp)
    assert str(error).startswith("The file is not valid JSON: ") and phrase in str(error)
    assert error.code == "invalid_json"


def test_a_truncated_export_is_refused_as_incomplete(upload_tmp):
    data = dumpdata("dental", indent=2).encode()
    for cut in (len(data) // 3, len(data) - 3):
        error = refused(data[:cut], upload_tmp)
        assert "it ends in the middle of the list of records, so it is incomplete" in str(error)


def test_latin1_text_is_refused_as_not_utf8(upload_tmp):
    data = dumpdata("dental", indent=2).encode("latin-1", errors="replace")  # the demo names have ñ, á, ü...
    first = next(i for i, byte in enumerate(data) if byte >= 0x80)
    line = data[:first].count(b"\n") + 1
    error = refused(data, upload_tmp)
    assert str(error).startswith(
        f"The file is not UTF-8 text: byte {first + 1} (0x{data[first]:02X}, on line {line}) is not valid UTF-8."
    )
    assert error.code == "not_utf8"


def test_utf16_text_is_refused_as_not_utf8(upload_tmp):
    error = refused(dumpdata("dental", indent=2).encode("utf-16"), upload_tmp)
    assert str(error).startswith("The file is UTF-16 text") and error.code == "not_utf8"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "dental.dentist", "pk": 1, "fields": {}}', "The file holds a single JSON object"),
        (b"  [ \n ] \n", "The file holds an empty list: there are no records to restore."),
        (b"[1, 2]", "Record 1 of the file (line 1) is not a record"),
    ],
)
def test_json_that_is_not_a_list_of_records_is_refused(upload_tmp, content, message):
    assert str(refused(content, upload_tmp)).startswith(message)
