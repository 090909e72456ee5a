"""Selective restore: one patient (by national id) and what hangs off it, back from a backup.

The whole-clinic restore is the big hammer; this puts back ONE patient's rows (the patient,
its appointments, treatments, invoices, the invoices' payments and the many-to-many rows of
those treatments and invoices) and leaves every other row of the clinic as it is now.

Reading the backup. The backup is verified (``verified_copy``) and restored into a scratch
schema ``<clinic>__pick_<backup id>`` inside a transaction that is always rolled back, as a
drill does (``backups.operations.drills``): a pg payload through ``restore_into_pg`` on a
connection of its own, a json payload through ``restore_into_json`` on Django's connection.
Both stream the payload into PostgreSQL; only the chosen patient's rows are then read out of
the scratch schema. The scratch schema is never committed, so nobody ever sees it, and the
restore into it never locks the live clinic (restore_into checks it).

Comparing. Rows are read as ``to_jsonb(row)`` (time zone UTC, hex bytea, postgres interval
style: one text form per value) from the scratch schema and, by primary key, from the live
clinic; the comparison is column by column over those values, and the writes put the backup's
values back through ``jsonb_populate_record(NULL::<table>, ...)``, i.e. through each column
type's own input function: bytes, microseconds, decimals and JSON come back exactly.
django-import-export's dry run (``Resource.import_data(dry_run=True)``) is NOT used: the
clinic's resources (``dental/resources.py``) leave out columns (X-ray path, signed consent
bytes, ``created_at``), match rows by natural keys instead of primary keys, hold no through
rows, and saving through the models would stamp ``auto_now_add`` anew; a plain comparison
of every column by primary key is simpler and exact.

Conflicts (shown in the preview; the apply refuses, nothing changed):
* the national id now belongs to another patient (another primary key);
* a row's primary key is now used by a row of another record (its owner column differs:
  an appointment of another patient, a payment of another invoice...);
* a unique value of a row to add or change (invoice number, payment reference, a
  through-row pair...) is now held by another row;
* a row refers to a row that no longer exists and is not put back with it (a dentist,
  an inventory item, a treatment of another patient).

Applying. A safety backup (``pre_restore``) first, as the full restore does; then ONE
transaction on the clinic's schema compares again with the live rows locked (``FOR
UPDATE``), refuses if the result differs from what the preview showed (its fingerprint) or
has conflicts, inserts or updates exactly those rows (parents first, keeping primary keys),
moves each sequence past the restored keys if needed, and writes the audit entry. Any error
rolls all of it back. Rows of this patient created after the backup are left alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from backups.audit import audit
from backups.exceptions import RespaldoError, RestoreRefused, render, translated
from backups.formats.base import quote_ident
from backups.models import AuditEntry, Backup, JobStatus, Restore, exact_json
from backups.services.backup import backup_request, backup_run
from backups.services.selective_rows import Pick, Rows, picks, read_backup, read_settings, select_rows, table_name

ADD, CHANGE, SAME = "add", "change", "same"


# --- What the preview holds ---------------------------------------------------------------


@dataclass(frozen=True)
class FieldDiff:
    """One column of a changed row: its value now and in the backup."""

    column: str
    now: Any
    in_backup: Any


@dataclass
class RowChange:
    """One row of the backup and what putting it back does (add, change, nothing)."""

    pk: int
    action: str
    values: dict[str, Any]
    diffs: list[FieldDiff] = field(default_factory=list)


@dataclass(frozen=True)
class Conflict:
    """A row that cannot be put back without breaking a constraint; ``str()`` says why."""

    table: str
    pk: int
    message_id: str
    params: dict[str, Any]

    def __str__(self) -> str:
        return render(self.message_id, self.params)

    def error(self) -> RespaldoError:
        return RespaldoError(self.message_id, **self.params)


@dataclass
class TablePlan:
    """One table's rows of the patient in the backup."""

    table: str
    label: str
    rows: list[RowChange] = field(default_factory=list)

    def of(self, action: str) -> list[RowChange]:
        return [row for row in self.rows if row.action == action]

    @property
    def added(self) -> list[RowChange]:
        return self.of(ADD)

    @property
    def changed(self) -> list[RowChange]:
        return self.of(CHANGE)

    @property
    def unchanged(self) -> list[RowChange]:
        return self.of(SAME)


@dataclass
class SelectivePreview:
    """What restoring one patient from ``backup`` would add, change and leave alone."""

    backup: Backup
    national_id: str
    tables: list[TablePlan]
    conflicts: list[Conflict]

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """{table: {"added": n, "changed": n, "unchanged": n}} (the audit entry's ``rows``)."""
        return {
            plan.table: {"added": len(plan.added), "changed": len(plan.changed), "unchanged": len(plan.unchanged)}
            for plan in self.tables
        }

    @property
    def has_work(self) -> bool:
        return any(plan.added or plan.changed for plan in self.tables)

    @property
    def fingerprint(self) -> str:
        """Stable digest of the planned writes: the apply refuses if its own plan differs."""
        plan = [[p.table, row.pk, row.action, row.values] for p in self.tables for row in p.rows if row.action != SAME]
        text = json.dumps([plan, [[c.table, c.pk, c.message_id] for c in self.conflicts]], cls=DjangoJSONEncoder)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SelectiveResult:
    """A finished selective restore."""

    backup: Backup
    national_id: str
    safety_backup: Backup
    counts: dict[str, dict[str, int]]
    restore: Restore


# --- Comparing with the live clinic -----------------------------------------------------


def _compare(in_backup: list[dict], live: list[dict]) -> list[RowChange]:
    """Each backup row: added (no row with its id now), changed (the differing columns) or the same."""
    now_by_id = {row["id"]: row for row in live}
    changes = []
    for row in in_backup:
        now = now_by_id.get(row["id"])
        if now is None:
            changes.append(RowChange(row["id"], ADD, row))
            continue
        diffs = [
            FieldDiff(column, now[column], value)
            for column, value in row.items()
            if column in now and now[column] != value
        ]
        changes.append(RowChange(row["id"], CHANGE if diffs else SAME, row, diffs))
    return changes


def _owner_conflicts(pick: Pick, in_backup: Rows, live: list[dict]) -> list[Conflict]:
    """Rows whose id is now used by a row of another record (another patient, another invoice...)."""
    if pick.parent is None:
        return []
    owners = {row["id"] for row in in_backup[pick.parent._meta.db_table]}
    wanted = {row["id"]: row for row in in_backup[pick.table]}
    return [
        Conflict(
            pick.table,
            row["id"],
            "selective_row_taken",
            {"table": pick.label, "pk": row["id"], "column": pick.column, "now": row[pick.column]},
        )
        for row in live
        if row[pick.column] != wanted[row["id"]][pick.column] and row[pick.column] not in owners
    ]


def _unique_groups(pick: Pick) -> list[tuple[str, ...]]:
    """The columns of each unique constraint of the table other than its primary key."""
    meta = pick.model._meta
    groups = [(f.column,) for f in meta.local_concrete_fields if f.unique and not f.primary_key]
    groups += [tuple(meta.get_field(name).column for name in together) for together in meta.unique_together]
    return groups


def _unique_conflicts(cursor: Any, schema: str, pick: Pick, plan: TablePlan) -> list[Conflict]:
    """Rows to add or change whose unique values another row holds now (the national id above all)."""
    conflicts = []
    target = table_name(schema, pick.table)
    for columns in _unique_groups(pick):
        match = " AND ".join(f"t.{c} = r.{c}" for c in map(quote_ident, columns))
        record = f"jsonb_populate_record(NULL::{target}, %s::jsonb)"
        query = f"SELECT t.id FROM {target} t, {record} r WHERE {match} AND t.id <> r.id LIMIT 1"  # noqa: S608
        for row in plan.added + plan.changed:
            cursor.execute(query, [dump_values(row.values)])
            found = cursor.fetchone()
            if found:
                value = " / ".join(str(row.values.get(c)) for c in columns)
                message = "selective_national_id_taken" if columns == ("national_id",) else "selective_unique_taken"
                params = {
                    "table": pick.label,
                    "pk": row.pk,
                    "column": ", ".join(columns),
                    "value": value,
                    "other": found[0],
                }
                conflicts.append(Conflict(pick.table, row.pk, message, params))
    return conflicts


def _reference_conflicts(cursor: Any, schema: str, pick: Pick, plan: TablePlan, in_backup: Rows) -> list[Conflict]:
    """Rows to add or change that refer to a row that neither exists now nor comes back with them."""
    conflicts = []
    for f in pick.model._meta.local_concrete_fields:
        if not f.is_relation:
            continue
        target = f.related_model._meta.db_table
        coming_back = {row["id"] for row in in_backup.get(target, [])}
        query = f"SELECT 1 FROM {table_name(schema, target)} WHERE {quote_ident(f.target_field.column)} = %s"  # noqa: S608
        for row in plan.added + plan.changed:
            value = row.values.get(f.column)
            if value is None or value in coming_back:
                continue
            cursor.execute(query, [value])
            if cursor.fetchone() is None:
                params = {
                    "table": pick.label,
                    "pk": row.pk,
                    "target": str(f.related_model._meta.verbose_name),
                    "value": value,
                }
                conflicts.append(Conflict(pick.table, row.pk, "selective_missing_reference", params))
    return conflicts


def plan_against(
    cursor: Any, schema: str, in_backup: Rows, *, lock: bool = False
) -> tuple[list[TablePlan], list[Conflict]]:
    """Compare the backup's rows with the live ``schema``'s (locked ``FOR UPDATE`` with ``lock``)."""
    read_settings(cursor)
    tables: list[TablePlan] = []
    conflicts: list[Conflict] = []
    for pick in picks():
        rows = in_backup[pick.table]
        live = select_rows(cursor, schema, pick.table, "id", [row["id"] for row in rows], lock=lock)
        plan = TablePlan(pick.table, pick.label, _compare(rows, live))
        conflicts += _owner_conflicts(pick, in_backup, live)
        conflicts += _unique_conflicts(cursor, schema, pick, plan)
        conflicts += _reference_conflicts(cursor, schema, pick, plan, in_backup)
        tables.append(plan)
    return tables, conflicts


def dump_values(values: dict[str, Any]) -> str:
    """A row's values as JSON again, numbers exactly as read (``Decimal`` keeps its digits and scale)."""
    return exact_json.dumps(values)


# --- The services -------------------------------------------------------------------------


@translated()
def selective_preview(backup: Backup, *, national_id: str) -> SelectivePreview:
    """What restoring the patient ``national_id`` (and its records) from ``backup`` would do.

    Reads the backup in a rolled-back scratch schema, then the live rows without locking them.
    """
    national_id = national_id.strip()
    in_backup = read_backup(backup, national_id)
    with transaction.atomic(), connection.cursor() as cursor:
        tables, conflicts = plan_against(cursor, backup.clinic.schema_name, in_backup)
    return SelectivePreview(backup, national_id, tables, conflicts)


def _refuse(preview: SelectivePreview, expected: str) -> None:
    """Raise unless ``preview`` can be applied as shown (``expected``: the fingerprint shown)."""
    where = {"national_id": preview.national_id, "backup": preview.backup.pk}
    if preview.conflicts:
        first = preview.conflicts[0].error()
        raise RestoreRefused("selective_conflicts", count=len(preview.conflicts), reason=first, **where)
    if expected != preview.fingerprint:
        raise RestoreRefused("selective_changed_since_preview", **where)
    if not preview.has_work:
        raise RestoreRefused("selective_nothing_to_do", **where)


def _safety_backup(backup: Backup, requested_by: str, address: str | None) -> Backup:
    """A pre_restore backup of the clinic as it is now, run here, as the full restore does."""
    safety = backup_request(
        clinic=backup.clinic_id,
        kind=Backup.Kind.PRE_RESTORE,
        requested_by=requested_by,
        enqueue=False,
        address=address,
        note=f"selective restore from #{backup.pk}",
    )
    safety = backup_run(backup_id=safety.pk)
    if safety.status != JobStatus.SUCCEEDED:
        reason = safety.error_params or {"message_id": "unexpected", "params": {"detail": safety.error}}
        raise RestoreRefused("safety_backup_failed", backup=safety.pk, reason=reason)
    return safety


def _write(cursor: Any, schema: str, tables: list[TablePlan]) -> None:
    """Insert the rows to add and update the columns to change, parents first, keeping ids."""
    for plan in tables:
        target = table_name(schema, plan.table)
        record = f"jsonb_populate_record(NULL::{target}, %s::jsonb)"
        for row in plan.added:
            columns = ", ".join(map(quote_ident, row.values))
            cursor.execute(
                f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {record}",  # noqa: S608
                [dump_values(row.values)],
            )
        for row in plan.changed:
            columns = ", ".join(quote_ident(diff.column) for diff in row.diffs)
            cursor.execute(
                f"UPDATE {target} SET ({columns}) = (SELECT {columns} FROM {record}) WHERE id = %s",  # noqa: S608
                [dump_values(row.values), row.pk],
            )


def _move_sequences(cursor: Any, schema: str, tables: list[TablePlan]) -> None:
    """Each sequence past the highest id put back (a later restore of an older backup may have set it lower)."""
    for plan in tables:
        if not plan.added:
            continue
        highest = max(row.pk for row in plan.added)
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table_name(schema, plan.table)])
        sequence = cursor.fetchone()[0]
        if sequence:
            cursor.execute(
                f"SELECT setval(%s::regclass, %s) FROM {sequence} "  # noqa: S608
                "WHERE last_value < %s OR (last_value = %s AND NOT is_called)",
                [sequence, highest, highest, highest],
            )


def before_images(tables: list[TablePlan]) -> dict[str, Any]:
    """What the undo needs (``Restore.before_images``): per table with writes, in the plan's order,
    the rows added and the rows changed, each with its values as written and, for a changed row,
    the previous value of each column changed; and the patient's name as in the backup."""
    patient = tables[0].rows[0].values if tables and tables[0].rows else {}
    return {
        "patient_name": f"{patient.get('first_name', '')} {patient.get('last_name', '')}".strip(),
        "tables": [
            {
                "table": plan.table,
                "added": [{"id": row.pk, "values": row.values} for row in plan.added],
                "changed": [
                    {"id": row.pk, "values": row.values, "before": {diff.column: diff.now for diff in row.diffs}}
                    for row in plan.changed
                ],
            }
            for plan in tables
            if plan.added or plan.changed
        ],
    }


def _record(backup: Backup, national_id: str, safety: Backup, requested_by: str, preview: SelectivePreview) -> Restore:
    """The restore history's row of this selective restore (written in its transaction)."""
    now = timezone.now()
    return Restore.objects.create(
        clinic_id=backup.clinic_id,
        backup=backup,
        safety_backup=safety,
        requested_by=requested_by,
        requested_at=now,
        started_at=now,
        succeeded_at=now,
        status=JobStatus.SUCCEEDED,
        outcome=Restore.Outcome.RESTORED,
        selective_patient=national_id,
        before_images=before_images(preview.tables),
    )


@translated()
def selective_apply(
    backup: Backup,
    *,
    national_id: str,
    requested_by: str,
    expected: str,
    address: str | None = None,
) -> SelectiveResult:
    """Put the patient ``national_id`` and its records back from ``backup`` (see the module's docstring).

    ``expected``: the fingerprint of the preview the person confirmed (required: nothing is
    applied that nobody saw); the apply refuses if what it would write now differs. Raises
    :class:`RestoreRefused` with nothing changed.
    """
    national_id = national_id.strip()
    in_backup = read_backup(backup, national_id)
    schema = backup.clinic.schema_name
    with transaction.atomic(), connection.cursor() as cursor:
        _refuse(SelectivePreview(backup, national_id, *plan_against(cursor, schema, in_backup)), expected)
    safety = _safety_backup(backup, requested_by, address)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                preview = SelectivePreview(backup, national_id, *plan_against(cursor, schema, in_backup, lock=True))
                _refuse(preview, expected)
                _write(cursor, schema, preview.tables)
                _move_sequences(cursor, schema, preview.tables)
            restore = _record(backup, national_id, safety, requested_by, preview)
            audit(
                AuditEntry.Action.RESTORE_REQUESTED,
                clinic_id=backup.clinic_id,
                actor=requested_by,
                address=address,
                backup_id=backup.pk,
                restore_id=restore.pk,
                selective=True,
                patient=national_id,
                rows=preview.counts,
                safety_backup=safety.pk,
            )
    except DatabaseError as exc:
        raise RestoreRefused("selective_failed", national_id=national_id, detail=str(exc)) from exc
    return SelectiveResult(backup, national_id, safety, preview.counts, restore)
