"""Finding a patient in a backup: by name or national id, and the patients missing from the clinic now.

A deleted patient is no longer in the clinic, so the person restoring them cannot look up their
national id there; they remember a name. The backup's patients (id, national id, names, birth
date: nothing else) are read out of the backup restored into a rolled-back scratch schema (as
the selective restore reads it, :func:`backups.services.selective_rows.read_from_backup`) and
compared with the live clinic by primary key, the key the selective restore puts rows back by.

The search is done here, in Python, over those rows: PostgreSQL has no accent-insensitive
comparison without the ``unaccent`` extension, which a clinic's database need not have. Text
is folded (Unicode NFKD, combining marks dropped, ``casefold``), so "jose" finds "José",
"NUNEZ" finds "Núñez" and "es0000" finds "ES00000001T"; every word typed must be found in
the patient's first name, last name or national id.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date

from django.db import connection, transaction

from backups.exceptions import translated
from backups.models import Backup
from backups.services.selective_rows import read_from_backup, read_patient_list, table_name
from dental.models import Patient


@dataclass(frozen=True)
class BackupPatient:
    """One patient as in a backup, and whether the live clinic still has them."""

    pk: int
    national_id: str
    first_name: str
    last_name: str
    birth_date: date | None
    missing_now: bool

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def folded(self) -> str:
        return fold(f"{self.first_name} {self.last_name} {self.national_id}")


def fold(text: str) -> str:
    """``text`` without accents and case: "José Núñez" -> "jose nunez" (for comparing, not showing)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@translated()
def backup_patients(backup: Backup) -> list[BackupPatient]:
    """Every patient of ``backup`` (by last name, first name), each marked missing now or not."""
    rows = read_from_backup(backup, read_patient_list)
    present = _live_ids(backup.clinic.schema_name, [row["id"] for row in rows])
    patients = [
        BackupPatient(
            pk=row["id"],
            national_id=row["national_id"],
            first_name=row["first_name"],
            last_name=row["last_name"],
            birth_date=row["birth_date"],
            missing_now=row["id"] not in present,
        )
        for row in rows
    ]
    return sorted(patients, key=lambda p: (fold(p.last_name), fold(p.first_name), p.pk))


def _live_ids(schema: str, ids: list[int]) -> set[int]:
    """Which of ``ids`` the live clinic's patients table has now."""
    query = f"SELECT id FROM {table_name(schema, Patient._meta.db_table)} WHERE id = ANY(%s)"  # noqa: S608
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(query, [ids])
        return {pk for (pk,) in cursor.fetchall()}


def search_patients(patients: list[BackupPatient], query: str) -> list[BackupPatient]:
    """The ``patients`` in whose names or national id every word of ``query`` is found (accents and case ignored)."""
    words = fold(query).split()
    if not words:
        return []
    return [patient for patient in patients if all(word in patient.folded for word in words)]


def missing_now(patients: list[BackupPatient]) -> list[BackupPatient]:
    """The ``patients`` of the backup the live clinic does not have now (deleted since, most likely)."""
    return [patient for patient in patients if patient.missing_now]
