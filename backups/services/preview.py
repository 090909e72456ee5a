"""What a restore would change, shown on its confirmation page before anything happens."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.translation import gettext

from backups import postgres
from backups.formats.json.payload import payload_models
from backups.models import Backup


@dataclass(frozen=True)
class TableChange:
    """One table: its rows now and in the backup (None: the table is not there)."""

    table: str
    label: str
    now: int | None
    in_backup: int | None

    @property
    def emptied(self) -> bool:
        """The backup has no rows for a table that has some now: restoring it empties the table."""
        return not self.in_backup and bool(self.now)

    @property
    def difference(self) -> int:
        """Rows the restore adds (positive) or removes (negative)."""
        return (self.in_backup or 0) - (self.now or 0)


@dataclass
class RestorePreview:
    """The clinic's records (``records``) and its other tables (users, sessions...) side by side."""

    backup: Backup
    records: list[TableChange] = field(default_factory=list)
    others: list[TableChange] = field(default_factory=list)

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


def restore_preview(*, backup: Backup) -> RestorePreview:
    """Per table, the row count now (counted) against the backup's (its manifest)."""
    schema = backup.clinic.schema_name
    in_backup: dict[str, int] = dict((backup.manifest or {}).get("tables") or {})
    now = postgres.table_counts(schema) if postgres.schema_exists(schema) else {}
    labels = {model._meta.db_table: table_label(model) for model in payload_models()}
    preview = RestorePreview(backup=backup)
    for table in sorted(set(in_backup) | set(labels)):
        change = TableChange(
            table=table, label=labels.get(table, table), now=now.get(table), in_backup=in_backup.get(table)
        )
        (preview.records if table in labels else preview.others).append(change)
    preview.records.sort(key=lambda change: change.label.lower())
    return preview
