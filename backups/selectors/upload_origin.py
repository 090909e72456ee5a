"""Where an uploaded backup came from: the original backup's date, kind, note and clinic.

An uploaded archive is an exact copy of a backup made earlier; the catalog keeps its manifest
(``manifest_summary``), which says when that backup was taken (``created_at``), of which kind,
with which note, for which clinic. The upload's own row only knows when the file came in. A JSON
export converted into an archive has no original backup: its manifest's ``created_at`` is the
conversion, never shown as a backup date; a Django fixture does not say when it was made.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from django.utils import formats, timezone
from django.utils.translation import gettext as _

from backups.models import Backup

DATE_FORMAT = "Y-m-d H:i"  # the console's one way to write a moment (backups.humanize.human_time)


@dataclass(frozen=True)
class UploadOrigin:
    """What an uploaded backup's manifest says about the backup it is a copy of."""

    uploaded_at: datetime
    backed_up_at: datetime | None  # the original backup's creation (None: converted, or not said)
    kind: str  # the original backup's kind ("manual"...), "" when not said
    note: str
    clinic_name: str
    clinic_schema: str
    converted: bool  # made here from a JSON export
    filename: str  # the uploaded file's name, for a converted export
    same_as: int | None  # another backup of this clinic in the catalog holding the same file
    time_zone: str

    def when(self, value: datetime) -> str:
        """``value`` in the clinic's time zone, as the console writes moments (2026-12-07 10:02)."""
        try:
            zone = zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = timezone.get_current_timezone()
        return formats.date_format(value.astimezone(zone), DATE_FORMAT)

    @property
    def uploaded(self) -> str:
        """When the file was uploaded, written as :meth:`when` does."""
        return self.when(self.uploaded_at)

    @property
    def kind_label(self) -> str:
        """The original backup's kind in words, lower case ("manual", "scheduled")."""
        if self.kind not in Backup.Kind.values:
            return ""
        label = str(Backup.Kind(self.kind).label)
        return label[:1].lower() + label[1:]

    def original(self) -> str:
        """E.g. "backed up 3 Dec 2026 02:00 (manual, note “antes de migrar”)", or the export it was converted from."""
        if self.converted:
            if self.filename:
                return _("converted from a JSON export (%(file)s)") % {"file": self.filename}
            return _("converted from a JSON export")
        if self.backed_up_at is None:
            return ""
        text = _("backed up %(when)s") % {"when": self.when(self.backed_up_at)}
        details = [self.kind_label] if self.kind_label else []
        if self.note:
            details.append(_("note “%(note)s”") % {"note": self.note})
        return f"{text} ({', '.join(details)})" if details else text

    def same_file(self) -> str:
        """ "the same file as backup #3", or ""."""
        return _("the same file as backup #%(id)s") % {"id": self.same_as} if self.same_as else ""

    def clinic(self) -> str:
        """ "clinic Clínica Sonrisa (clinica)", as the manifest names it."""
        if not self.clinic_schema:
            return ""
        return _("clinic %(name)s (%(schema)s)") % {
            "name": self.clinic_name or self.clinic_schema,
            "schema": self.clinic_schema,
        }

    def summary(self) -> str:
        """The list's line: what it is a copy of, and the same file in the catalog."""
        return " · ".join(part for part in (self.original(), self.same_file()) if part)

    def sentence(self) -> str:
        """The page's line: "Uploaded 7 Dec 2026 10:02 · backed up 3 Dec 2026 02:00 (manual, note “…”) · clinic …"."""
        parts = [_("Uploaded %(when)s") % {"when": self.uploaded}]
        parts += [self.original(), self.clinic(), self.same_file()]
        return " · ".join(part for part in parts if part)


def same_file_backup(backup: Backup) -> int | None:
    """The first other backup of the clinic in the catalog with the same SHA-256, if any."""
    if not backup.sha256:
        return None
    return (
        Backup.objects.filter(clinic_id=backup.clinic_id, sha256=backup.sha256)
        .exclude(pk=backup.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else None


def upload_origin(backup: Backup) -> UploadOrigin | None:
    """Where an uploaded backup came from (its manifest), or None for a backup made here."""
    if backup.kind != Backup.Kind.UPLOADED:
        return None
    manifest = backup.manifest if isinstance(backup.manifest, dict) else {}
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    converted = manifest.get("kind") == Backup.Kind.UPLOADED or bool(source)
    clinic = manifest.get("clinic") if isinstance(manifest.get("clinic"), dict) else {}
    note = manifest.get("note")
    return UploadOrigin(
        uploaded_at=backup.requested_at,
        backed_up_at=None if converted else _parse(manifest.get("created_at")),
        kind="" if converted else str(manifest.get("kind") or ""),
        note=note if isinstance(note, str) and not converted else "",
        clinic_name=str(clinic.get("name") or ""),
        clinic_schema=str(clinic.get("schema") or ""),
        converted=converted,
        filename=str(source.get("filename") or "") if converted else "",
        same_as=same_file_backup(backup),
        time_zone=backup.clinic.time_zone,
    )
