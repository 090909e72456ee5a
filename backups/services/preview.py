"""What a restore would change, shown on its confirmation page before anything happens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.utils.translation import gettext

from backups import postgres
from backups.formats.json.payload import payload_models
from backups.models import Backup, RestoreComparison


@dataclass(frozen=True)
class TableChange:
    """One table: its rows now and in the backup (None: the table is not there), and, once a
    comparison has run, the rows the restore would remove, bring back and change (None: unknown)."""

    table: str
    label: str
    now: int | None
    in_backup: int | None
    removed: int | None = None
    brought_back: int | None = None
    changed: int | None = None

    @property
    def emptied(self) -> bool:
        """The backup has no rows for a table that has some now: restoring it empties the table."""
        return not self.in_backup and bool(self.now)

    @property
    def difference(self) -> int:
        """Rows the restore adds (positive) or removes (negative)."""
        return (self.in_backup or 0) - (self.now or 0)

    @property
    def differs(self) -> bool:
        """The comparison found rows the restore would remove, bring back or change."""
        return bool(self.removed or self.brought_back or self.changed)


@dataclass
class RestorePreview:
    """The clinic's records (``records``) and its other tables (users, sessions...) side by side.

    ``comparison``: the newest finished comparison of the backup with the clinic, whose figures
    the tables carry (None: none yet); ``pending``: one waiting for or being run by a worker.
    """

    backup: Backup
    records: list[TableChange] = field(default_factory=list)
    others: list[TableChange] = field(default_factory=list)
    comparison: RestoreComparison | None = None
    pending: RestoreComparison | None = None

    @property
    def compared_at(self) -> datetime | None:
        return self.comparison.succeeded_at if self.comparison else None

    @property
    def totals(self) -> dict[str, int] | None:
        """The clinic's records the restore would remove, bring back and change, summed (None: unknown)."""
        if self.comparison is None:
            return None
        return {
            kind: sum(getattr(change, kind) or 0 for change in self.records)
            for kind in ("removed", "brought_back", "changed")
        }

    @property
    def patients(self) -> list[str] | None:
        """National ids of the patients whose records differ, when few do (else None)."""
        return (self.comparison.result or {}).get("patients") if self.comparison else None

    @property
    def differing(self) -> int | None:
        """How many of the clinic's records differ (None: unknown)."""
        totals = self.totals
        return None if totals is None else sum(totals.values())

    @property
    def few(self) -> bool:
        """Only a few of the clinic's records differ, all of some patients': restoring them may be enough."""
        return bool(self.patients)

    @property
    def emptied(self) -> list[TableChange]:
        """Tables of the clinic's records that the restore would leave empty."""
        return [change for change in self.records if change.emptied]

    @property
    def is_upload(self) -> bool:
        return self.backup.kind == Backup.Kind.UPLOADED


def table_label(model) -> str:
    """A table's name for people: its model's plural, or for a many-to-many table (whose name
    Django makes up in English) the two tables it links, in the active language."""
    owner = model._meta.auto_created
    if not owner:
        return str(model._meta.verbose_name_plural)
    targets = [f.related_model for f in model._meta.get_fields() if f.many_to_one and f.related_model is not owner]
    other = targets[0] if targets else owner
    names = {"a": owner._meta.verbose_name_plural, "b": other._meta.verbose_name_plural}
    return gettext("links between %(a)s and %(b)s") % names


def restore_preview(
    *, backup: Backup, comparison: RestoreComparison | None = None, pending: RestoreComparison | None = None
) -> RestorePreview:
    """Per table, the row count now (counted) against the backup's (its manifest), and the
    figures of ``comparison`` (a finished comparison of this backup) when given."""
    schema = backup.clinic.schema_name
    in_backup: dict[str, int] = dict((backup.manifest or {}).get("tables") or {})
    now = postgres.table_counts(schema) if postgres.schema_exists(schema) else {}
    labels = {model._meta.db_table: table_label(model) for model in payload_models()}
    preview = RestorePreview(backup=backup, comparison=comparison, pending=pending)
    compared = (comparison.result or {}).get("tables") or {} if comparison else {}
    for table in sorted(set(in_backup) | set(labels)):
        figures = compared.get(table) or {}  # {}: not compared (no primary key, or left alone)
        change = TableChange(
            table=table,
            label=labels.get(table, table),
            now=now.get(table),
            in_backup=in_backup.get(table),
            removed=figures.get("removed"),
            brought_back=figures.get("brought_back"),
            changed=figures.get("changed"),
        )
        (preview.records if table in labels else preview.others).append(change)
    preview.records.sort(key=lambda change: change.label.lower())
    return preview
