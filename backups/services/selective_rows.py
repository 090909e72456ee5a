"""Selective restore, reading: one patient's rows out of a backup, or out of the live clinic.

The backup is verified and restored into a scratch schema ``<clinic>__pick_<backup id>`` in a
transaction that is always rolled back (see :mod:`backups.services.selective`); only the
patient's rows are read from it, as ``to_jsonb(row)`` in one fixed text form per value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.db.models import Model

from backups.exceptions import RestoreRefused
from backups.formats import format_for
from backups.formats.base import quote_ident
from backups.keys.clinic import reading_identities
from backups.models import Backup, JobStatus
from backups.services.verification import check_migrations, verified_copy
from dental.models import Appointment, Invoice, Patient, Payment, Treatment

SCRATCH_INFIX = "__pick_"
# One text form per value, whatever the session had: what the comparison and the writes rely on.
_READ_SETTINGS = {"TimeZone": "UTC", "bytea_output": "hex", "IntervalStyle": "postgres"}

Rows = dict[str, list[dict[str, Any]]]  # table -> the rows (column -> JSON value), by id
T = TypeVar("T")


@dataclass(frozen=True)
class Pick:
    """One table of a patient's records: rows whose ``column`` is among the ``parent``'s ids."""

    model: type[Model]
    column: str
    parent: type[Model] | None = None

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def label(self) -> str:
        if self.model._meta.auto_created:
            owner = self.parent._meta.verbose_name
            other = next(f for f in self.model._meta.local_fields if f.is_relation and f.related_model != self.parent)
            return f"{owner} → {other.related_model._meta.verbose_name_plural}"
        return str(self.model._meta.verbose_name_plural)


def picks() -> list[Pick]:
    """A patient's tables, parents first (the order of the writes)."""
    materials, billed = Treatment.materials.through, Invoice.treatments.through
    return [
        Pick(Patient, "national_id"),
        Pick(Appointment, "patient_id", Patient),
        Pick(Treatment, "patient_id", Patient),
        Pick(Invoice, "patient_id", Patient),
        Pick(Payment, "invoice_id", Invoice),
        Pick(materials, materials._meta.get_field("treatment").column, Treatment),
        Pick(billed, billed._meta.get_field("invoice").column, Invoice),
    ]


# --- Reading rows (any DB-API cursor: psycopg's own or Django's) --------------------------


def table_name(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def read_settings(cursor: Any) -> None:
    for name, value in _READ_SETTINGS.items():
        cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def select_rows(cursor: Any, schema: str, table: str, column: str, values: list, *, lock: bool = False) -> list[dict]:
    """Rows of ``schema.table`` whose ``column`` is among ``values``, as JSON values by column, by id."""
    if not values:
        return []
    where = f"t.{quote_ident(column)} = ANY(%s)"
    query = f"SELECT to_jsonb(t)::text FROM {table_name(schema, table)} t WHERE {where}"  # noqa: S608
    cursor.execute(query + (" ORDER BY t.id FOR UPDATE" if lock else " ORDER BY t.id"), [values])
    return [json.loads(text, parse_float=Decimal) for (text,) in cursor.fetchall()]


def read_patient(cursor: Any, schema: str, national_id: str, *, lock: bool = False) -> Rows:
    """The patient's rows in ``schema`` and the rows hanging off it, by table (parents first)."""
    read_settings(cursor)
    rows: Rows = {}
    for pick in picks():
        values = [national_id] if pick.parent is None else [row["id"] for row in rows[pick.parent._meta.db_table]]
        rows[pick.table] = select_rows(cursor, schema, pick.table, pick.column, values, lock=lock)
    return rows


# --- Reading the backup: restored into a scratch schema, then rolled back -----------------


def scratch_schema(backup: Backup) -> str:
    """The schema a selective restore reads ``backup`` from (never committed)."""
    return f"{backup.clinic.schema_name}{SCRATCH_INFIX}{backup.pk}"


Reader = Callable[[Any, str], T]  # (cursor, scratch schema) -> what is read out of the backup


def read_from_backup(backup: Backup, read: Reader) -> T:
    """``read(cursor, schema)`` run on ``backup`` restored into a scratch schema (verified copy, rolled back)."""
    if backup.status != JobStatus.SUCCEEDED or backup.expired_at or not backup.storage_name:
        raise RestoreRefused("backup_not_restorable", backup=backup.pk, status=backup.get_status_display())
    with verified_copy(backup, backup.clinic) as (manifest, copy):
        check_migrations(manifest.get("migrations") or {})
        payload_format = format_for(manifest["payload_format"])
        schema, app_name = scratch_schema(backup), f"respaldo-pick-{backup.pk}"
        with (
            copy.open(reading_identities(backup.clinic)) as payload,
            payload_format.into_scratch(backup, payload, manifest, schema=schema, app_name=app_name) as cursor,
        ):
            return read(cursor, schema)


def read_backup(backup: Backup, national_id: str) -> Rows:
    """The patient's rows as they are in ``backup`` (verified copy → scratch schema → rolled back)."""
    rows = read_from_backup(backup, lambda cursor, schema: read_patient(cursor, schema, national_id))
    if not rows[Patient._meta.db_table]:
        raise RestoreRefused("selective_not_in_backup", backup=backup.pk, national_id=national_id)
    return rows


def read_patient_list(cursor: Any, schema: str) -> list[dict[str, Any]]:
    """Every patient in ``schema``: id, national id, names and birth date (no other column), by id."""
    read_settings(cursor)
    cursor.execute(
        "SELECT id, national_id, first_name, last_name, birth_date "  # noqa: S608
        f"FROM {table_name(schema, Patient._meta.db_table)} ORDER BY id"
    )
    columns = ["id", "national_id", "first_name", "last_name", "birth_date"]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
