"""Bad json payloads are refused, and each refusal leaves the clinic exactly as it was.

Everything runs against the real PostgreSQL test database, in the demo clinics' schemas,
inside each test's rolled-back transaction. "Unchanged" is always checked with a checksum
of every column of every payload table, computed by PostgreSQL itself.
"""

from __future__ import annotations

import io
import json

import pytest
from django_tenants.utils import schema_context

from backups.formats.json.payload import (
    JsonPayloadError,
    read_json_payload,
)
from backups.tests.formats.json.helpers import (
    checksums,
    dump,
    load,
    mutate_clinic,
    sub_in_line,
)

pytestmark = pytest.mark.django_db


# --- Refusals: each leaves the clinic exactly as it was ---------------------------------


def _with_line(data: bytes, line: str, at: int | None = None) -> bytes:
    """The payload with one more record line, at the end by default."""
    lines = data.decode().split("\n")  # "[", records..., "]", ""
    records = lines[1:-2]
    records.insert(len(records) if at is None else at, line)
    return ("\n".join(["[", ",\n".join(r.removesuffix(",") for r in records), "]", ""])).encode()


def _foreign(label: str) -> str:
    return json.dumps({"model": label, "pk": 1, "fields": {}})


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
        lambda d: sub_in_line(d, "dental.patient", r'"national_id": "', '"national_id": ', 3),
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
        lambda d: sub_in_line(
            d, "dental.patient", r'"national_id": "[^"]*"', f'"national_id": "{_national_id(d, 0)}"', 1
        ),
        r"duplicate key value violates unique constraint.*\(national_id\)=",
    ),
    "dangling foreign key": (
        lambda d: sub_in_line(d, "dental.appointment", r'"patient": \d+', '"patient": 999999'),
        r"violates foreign key constraint.*\(patient_id\)=\(999999\)",
    ),
    "bad datetime": (
        lambda d: sub_in_line(d, "dental.payment", r'"paid_at": "', '"paid_at": "yesterday '),
        r"invalid record \(dental\.payment pk=\d+, field “paid_at”\)",
    ),
    "text where a number belongs": (
        lambda d: sub_in_line(d, "dental.treatment", r'"tooth_number": \d+', '"tooth_number": "once"'),
        r'invalid input syntax for type smallint: "once"',
    ),
    "list for a text field": (
        lambda d: sub_in_line(d, "dental.dentist", r'"phone": "[^"]*"', '"phone": ["+34"]'),
        r"invalid record \(dental\.dentist pk=\d+, field “phone”\): expected text\. Nothing was restored\.$",
    ),
    "unknown field": (
        lambda d: sub_in_line(d, "dental.dentist", r'"phone": ', '"fax": 1, "phone": '),
        r"invalid record \(dental\.dentist pk=\d+\): unknown fields: fax",
    ),
    "missing required field": (
        lambda d: sub_in_line(d, "dental.invoice", r'"issued_on": "[^"]*", ', ""),
        r"invalid record \(dental\.invoice pk=\d+, field “issued_on”\): the field is missing",
    ),
    "value too long": (
        lambda d: sub_in_line(d, "dental.invoice", r'"number": "', '"number": "' + "9" * 40),
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
