"""Writing and reading a large json payload use little memory.

Everything runs against the real PostgreSQL test database, in the demo clinics' schemas,
inside each test's rolled-back transaction. "Unchanged" is always checked with a checksum
of every column of every payload table, computed by PostgreSQL itself.
"""

from __future__ import annotations

import tracemalloc

import pytest
from django_tenants.utils import schema_context

from backups.formats.json.load import load_json_payload
from backups.formats.json.payload import (
    read_json_payload,
    write_json_payload,
)
from dental.models import Patient

pytestmark = pytest.mark.django_db


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
