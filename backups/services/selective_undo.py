"""Undoing a selective restore: exactly the rows it wrote, back as they were, and nothing else.

A selective restore (:mod:`backups.services.selective`) keeps, on its ``Restore`` row
(``before_images``), per table the rows it added and the rows it changed: each with its values
as written and, for a changed row, the previous value of each column it changed. Undoing it,
in ONE transaction on the clinic's schema:

* locks the restore's row (two undos cannot both run) and those rows (``FOR UPDATE``);
* refuses, with nothing changed, if any of them is no longer as the restore wrote it (edited
  or deleted since): putting the old values back would silently lose that later change;
* deletes the added rows, children first (the plan's tables in reverse order), then puts
  the previous values back into the changed columns, parents first;
* checks the foreign keys at once (``SET CONSTRAINTS ALL IMMEDIATE``): a record created since
  that refers to an added row (a new appointment of the restored patient) refuses the undo;
* writes the audit entry (``restore_undone``) and marks the restore undone.

Sequences are left where they are: the restore only moved them forward, and ids handed out
since must not be handed out again. Every other row of the clinic, and every change made to
it since the selective restore, is left alone: that is the point, the safety backup would
take the whole clinic back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from backups.audit import audit
from backups.exceptions import RestoreRefused, translated
from backups.formats.base import quote_ident
from backups.models import AuditEntry, JobStatus, Restore
from backups.services.selective import CHANGE, FieldDiff, RowChange, dump_values
from backups.services.selective_rows import picks, read_settings, select_rows, table_name


@dataclass
class UndoTable:
    """One table: the rows the undo removes, and the rows whose columns it puts back."""

    table: str
    label: str
    removed: list[dict[str, Any]] = field(default_factory=list)  # each row's values as restored
    # values: as restored; each diff's ``now`` is the restored value, its ``in_backup`` the value put back
    put_back: list[RowChange] = field(default_factory=list)


@dataclass
class UndoPreview:
    """What undoing ``restore`` would do, and the rows changed since it (then the undo is refused)."""

    restore: Restore
    tables: list[UndoTable]
    changed_since: list[tuple[str, int]]  # (table label, id)

    @property
    def patient_name(self) -> str:
        return self.restore.before_images.get("patient_name", "")

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {t.table: {"removed": len(t.removed), "put_back": len(t.put_back)} for t in self.tables}


def _labels() -> dict[str, str]:
    return {pick.table: pick.label for pick in picks()}


def _tables(restore: Restore) -> list[UndoTable]:
    labels = _labels()
    tables = []
    for image in restore.before_images.get("tables", []):
        put_back = [
            RowChange(
                row["id"],
                CHANGE,
                row["values"],
                [FieldDiff(column, row["values"].get(column), old) for column, old in row["before"].items()],
            )
            for row in image["changed"]
        ]
        removed = [row["values"] for row in image["added"]]
        tables.append(UndoTable(image["table"], labels.get(image["table"], image["table"]), removed, put_back))
    return tables


def _changed_since(cursor: Any, schema: str, restore: Restore, *, lock: bool) -> list[tuple[str, int]]:
    """The rows the restore wrote that are no longer as it wrote them (locked ``FOR UPDATE`` with ``lock``)."""
    read_settings(cursor)
    labels = _labels()
    changed = []
    for image in restore.before_images.get("tables", []):
        written = image["added"] + image["changed"]
        live = select_rows(cursor, schema, image["table"], "id", [row["id"] for row in written], lock=lock)
        now_by_id = {row["id"]: row for row in live}
        for row in written:
            now = now_by_id.get(row["id"])
            if now is None or any(column in now and now[column] != value for column, value in row["values"].items()):
                changed.append((labels.get(image["table"], image["table"]), row["id"]))
    return changed


def _refuse_unless_undoable(restore: Restore) -> None:
    where = {"restore": restore.pk}
    if not restore.is_selective:
        raise RestoreRefused("selective_undo_not_selective", **where)
    if restore.undone_at is not None:
        raise RestoreRefused("selective_undo_already", by=restore.undone_by or "?", **where)
    if restore.status != JobStatus.SUCCEEDED:
        raise RestoreRefused("selective_undo_not_selective", **where)


@translated()
def undo_preview(restore: Restore) -> UndoPreview:
    """What undoing the selective ``restore`` would remove and put back (reads the live rows, no locks).

    Raises :class:`RestoreRefused` if ``restore`` is not a selective restore or was undone already.
    """
    _refuse_unless_undoable(restore)
    with transaction.atomic(), connection.cursor() as cursor:
        changed = _changed_since(cursor, restore.clinic.schema_name, restore, lock=False)
    return UndoPreview(restore, _tables(restore), changed)


def _changed_refusal(restore: Restore, changed: list[tuple[str, int]]) -> RestoreRefused:
    label, pk = changed[0]
    return RestoreRefused(
        "selective_undo_changed_since",
        restore=restore.pk,
        national_id=restore.selective_patient,
        count=len(changed),
        table=label,
        pk=pk,
    )


def _write(cursor: Any, schema: str, tables: list[UndoTable]) -> None:
    """Delete the added rows, children first; then the previous values back, parents first."""
    for undo in reversed(tables):
        if undo.removed:
            cursor.execute(
                f"DELETE FROM {table_name(schema, undo.table)} WHERE id = ANY(%s)",  # noqa: S608
                [[row["id"] for row in undo.removed]],
            )
    for undo in tables:
        target = table_name(schema, undo.table)
        record = f"jsonb_populate_record(NULL::{target}, %s::jsonb)"
        for row in undo.put_back:
            columns = ", ".join(quote_ident(diff.column) for diff in row.diffs)
            before = {diff.column: diff.in_backup for diff in row.diffs}
            cursor.execute(
                f"UPDATE {target} SET ({columns}) = (SELECT {columns} FROM {record}) WHERE id = %s",  # noqa: S608
                [dump_values(before), row.pk],
            )
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # a row created since that refers to a removed one: now


@translated()
def selective_undo(restore: Restore, *, requested_by: str, address: str | None = None) -> UndoPreview:
    """Undo the selective ``restore``: remove the rows it added, put back the columns it changed.

    All in one transaction (see the module's docstring). Raises :class:`RestoreRefused`, with
    nothing changed, if it is not a selective restore, was undone already, or if any row it
    wrote changed since (or is referred to by a record created since).
    """
    schema = restore.clinic.schema_name
    try:
        with transaction.atomic():
            restore = Restore.objects.select_for_update().select_related("clinic").get(pk=restore.pk)
            _refuse_unless_undoable(restore)
            with connection.cursor() as cursor:
                changed = _changed_since(cursor, schema, restore, lock=True)
                if changed:
                    raise _changed_refusal(restore, changed)
                tables = _tables(restore)
                _write(cursor, schema, tables)
            done = UndoPreview(restore, tables, [])
            restore.undone_at = timezone.now()
            restore.undone_by = requested_by
            restore.outcome = Restore.Outcome.UNDONE
            restore.save(update_fields=["undone_at", "undone_by", "outcome"])
            audit(
                AuditEntry.Action.RESTORE_UNDONE,
                clinic_id=restore.clinic_id,
                actor=requested_by,
                address=address,
                backup_id=restore.backup_id,
                restore_id=restore.pk,
                selective=True,
                patient=restore.selective_patient,
                rows=done.counts,
            )
    except IntegrityError as exc:
        raise RestoreRefused("selective_undo_referenced", restore=restore.pk, detail=str(exc).strip()) from exc
    except DatabaseError as exc:
        raise RestoreRefused("selective_undo_failed", restore=restore.pk, detail=str(exc).strip()) from exc
    return done
