"""How a selective restore's preview reads: field labels, choice labels, dates in the clinic's time zone.

The preview (:class:`backups.services.selective.SelectivePreview`) holds each row as
``to_jsonb`` values by column (UTC timestamps, hex bytea, postgres intervals): exact for the
comparison and the writes, unreadable for a person. This turns them into what the clinic's
own pages would show: each column under its field's verbose name, a choice by its label,
a date and time in the clinic's time zone and the reader's language, a list as a list, binary
data by its size, a reference by what it points to. No logic: nothing here changes what the
restore does.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models
from django.utils import formats
from django.utils.dateparse import parse_date, parse_datetime, parse_duration, parse_time
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from backups.humanize import human_bytes, human_duration
from backups.services.selective import ADD, RowChange, SelectivePreview, TablePlan
from backups.services.selective_rows import picks
from backups.services.selective_undo import UndoPreview
from dental.models import Appointment, Invoice, Patient, Payment, Treatment

EMPTY = "—"


@dataclass(frozen=True)
class ReadableField:
    """One column as people read it."""

    label: str
    value: str


@dataclass
class ReadableRow:
    """A row to add: its title and its fields."""

    pk: int
    title: str
    fields: list[ReadableField]


@dataclass(frozen=True)
class ReadableChange:
    """One changed field of one row: now and in the backup."""

    pk: int
    title: str
    label: str
    now: str
    in_backup: str


@dataclass
class ReadableTable:
    """One table's rows to add and fields to change, readable."""

    label: str
    added: list[ReadableRow] = field(default_factory=list)
    changed: list[ReadableChange] = field(default_factory=list)


def _fields_by_column(model: type[models.Model]) -> dict[str, models.Field]:
    return {f.column: f for f in model._meta.local_concrete_fields}


def label(f: models.Field) -> str:
    """A field's verbose name (a reference: the verbose name of what it points to, translated)."""
    name = f.related_model._meta.verbose_name if f.is_relation else f.verbose_name
    return capfirst(str(name))


class Reader:
    """Formats a preview's values for one clinic (``time_zone``), in the active language."""

    def __init__(self, preview: SelectivePreview, time_zone: str | tzinfo) -> None:
        self.preview = preview
        self.zone = zoneinfo.ZoneInfo(time_zone) if isinstance(time_zone, str) else time_zone
        self.titles: dict[tuple[str, int], str] = {}  # (table, id) -> what the row is called
        for plan in preview.tables:
            model = next(p.model for p in picks() if p.table == plan.table)
            for row in plan.rows:
                self.titles[(plan.table, row.pk)] = self.title(model, row.values)

    # --- single values ------------------------------------------------------------------

    def value(self, f: models.Field, value: Any) -> str:
        """``value`` (a ``to_jsonb`` value of the column of ``f``) as people read it."""
        if value is None or value == "":
            return EMPTY
        if f.is_relation:
            return self.reference(f, value)
        if f.choices:
            return str(dict(f.flatchoices).get(value, value))
        if isinstance(f, models.BooleanField):
            return _("Yes") if value else _("No")
        if isinstance(f, models.DateTimeField):
            moment = parse_datetime(str(value))
            return formats.date_format(moment.astimezone(self.zone), "DATETIME_FORMAT") if moment else str(value)
        if isinstance(f, models.DateField):
            day = parse_date(str(value))
            return formats.date_format(day, "DATE_FORMAT") if day else str(value)
        if isinstance(f, models.TimeField):
            moment = parse_time(str(value))
            return formats.time_format(moment, "TIME_FORMAT") if moment else str(value)
        if isinstance(f, models.DurationField):
            length = parse_duration(str(value))
            return human_duration(length) if length is not None else str(value)
        if isinstance(f, models.DecimalField):
            return self.number(value, f.decimal_places)
        if isinstance(f, models.BinaryField):
            size = max(0, (len(str(value)) - 2) // 2)  # hex: "\x" then two digits a byte
            return _("binary data, %(size)s") % {"size": human_bytes(size)}
        if isinstance(f, models.JSONField):
            return self.structure(value)
        return str(value)

    def number(self, value: Any, places: int | None = None) -> str:
        try:
            return formats.number_format(Decimal(str(value)), decimal_pos=places, use_l10n=True)
        except InvalidOperation:
            return str(value)

    def structure(self, value: Any) -> str:
        """A JSON list as "a, b, c"; an object as "key: value; ..."; nothing in it as a dash."""
        if isinstance(value, list):
            return ", ".join(self.structure(item) for item in value) or EMPTY
        if isinstance(value, dict):
            return "; ".join(f"{key}: {self.structure(item)}" for key, item in value.items()) or EMPTY
        if isinstance(value, Decimal):
            return self.number(value)
        return str(value)

    def reference(self, f: models.Field, value: Any) -> str:
        """What a foreign key points to: a row restored with it, or the live row, or its id."""
        target = f.related_model
        title = self.titles.get((target._meta.db_table, value))
        if title is None:
            found = target._default_manager.filter(pk=value).first()
            title = f"#{value} · {found}" if found is not None else f"#{value}"
            self.titles[(target._meta.db_table, value)] = title
        return title

    def title(self, model: type[models.Model], values: dict[str, Any]) -> str:
        """What a row of the patient's records is called (without reading other rows)."""
        fields = _fields_by_column(model)
        pk = values.get("id")
        if model is Patient:
            text = f"{values.get('first_name', '')} {values.get('last_name', '')}".strip()
        elif model is Appointment:
            text = self.value(fields["starts_at"], values.get("starts_at"))
        elif model is Treatment:
            text = f"{values.get('procedure', '')} ({values.get('tooth_number', '')})"
        elif model is Invoice:
            text = str(values.get("number", ""))
        elif model is Payment:
            text = f"{self.number(values.get('amount'), 2)} ({self.value(fields['method'], values.get('method'))})"
        else:
            text = ""
        return f"#{pk} · {text}" if text else f"#{pk}"

    # --- tables ---------------------------------------------------------------------------

    def tables(self) -> list[ReadableTable]:
        """The tables with rows to add or change, in the order they are written."""
        readable = []
        for pick, plan in zip(picks(), self.preview.tables, strict=True):
            if not (plan.added or plan.changed):
                continue
            fields = _fields_by_column(pick.model)
            table = ReadableTable(capfirst(plan.label))
            for row in plan.added:
                shown = [  # in the model's order (to_jsonb orders keys by length)
                    ReadableField(label(f), self.value(f, row.values[column]))
                    for column, f in fields.items()
                    if column in row.values and not f.primary_key
                ]
                table.added.append(ReadableRow(row.pk, self.titles[(plan.table, row.pk)], shown))
            for row in plan.changed:
                for diff in row.diffs:
                    f = fields[diff.column]
                    table.changed.append(
                        ReadableChange(
                            row.pk,
                            self.titles[(plan.table, row.pk)],
                            label(f),
                            self.value(f, diff.now),
                            self.value(f, diff.in_backup),
                        )
                    )
            readable.append(table)
        return readable


def readable_tables(preview: SelectivePreview, time_zone: str | tzinfo) -> list[ReadableTable]:
    """The preview's rows to add and fields to change as people read them (see the module)."""
    return Reader(preview, time_zone).tables()


def patient_name(preview: SelectivePreview) -> str:
    """The patient's name as in the backup."""
    values = preview.tables[0].rows[0].values if preview.tables and preview.tables[0].rows else {}
    return f"{values.get('first_name', '')} {values.get('last_name', '')}".strip()


def readable_undo(undo: UndoPreview, time_zone: str | tzinfo) -> list[ReadableTable]:
    """What undoing a selective restore does, readable: its ``added`` rows are the rows the undo
    removes; its ``changed`` fields read "now" (as restored) and "in_backup" (as put back)."""
    by_table = {table.table: table for table in undo.tables}
    plans = []
    for pick in picks():
        table = by_table.get(pick.table)
        rows = [RowChange(values["id"], ADD, values) for values in table.removed] + table.put_back if table else []
        plans.append(TablePlan(pick.table, pick.label, rows))
    restore = undo.restore
    return Reader(SelectivePreview(restore.backup, restore.selective_patient, plans, []), time_zone).tables()
