"""The manifest: what an archive says about itself, built in one place and checked in one place.

It is the first member of every archive (``archive.py`` authenticates it with the rest):
format version, the clinic (id, schema, name), creation time, kind, payload format, the
row count of every table, the clinic's migration state and the PostgreSQL versions. A
restore and an upload check it with ``manifest_check``, with one set of messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone
from psycopg import sql

from backups.exceptions import RespaldoError
from backups.models import Backup
from clinics.models import Clinic

# Version 2: the archive also holds the clinic's files ("media", filled in by the archive
# writer, and "media_missing": files named by rows but absent from storage). Version 1 is
# still read: its archives hold rows only.
MANIFEST_FORMAT_VERSION = 2
MANIFEST_FORMAT_VERSIONS = (1, 2)
PAYLOAD_FORMATS = tuple(Backup.Format.values)  # the catalog's formats (backups.formats has their code)
# kind, backup_id, note and source say where an uploaded archive came from (backups/selectors/upload_origin.py).
SUMMARY_KEYS = (
    "format_version",
    "payload_format",
    "tables",
    "migrations",
    "postgresql",
    "created_at",
    "clinic",
    "kind",
    "backup_id",
    "note",
    "source",
)


def _media_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The catalog's short account of an archive's files (count, bytes, missing), not the list."""
    media = manifest.get("media")
    if not isinstance(media, list):
        return None
    return {
        "files": len(media),
        "bytes": sum(entry.get("size", 0) for entry in media if isinstance(entry, dict)),
        "missing": len(manifest.get("media_missing") or []),
    }


def manifest_build(
    *,
    clinic: Clinic,
    kind: str,
    payload_format: str,
    tables: dict[str, int],
    migrations: dict[str, list[str]],
    server_version: str,
    dump_tool: str,
    payload: str | None = None,
    backup_id: int | None = None,
    created_at: datetime | None = None,
    source: dict[str, Any] | None = None,
    media_missing: list[str] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """The manifest of a new archive of ``clinic`` (``source``: where an uploaded file came from;
    ``note``: the backup's note, so that a copy uploaded later still tells why it was taken).

    ``media_missing``: files the rows name that storage did not have (the archive's ``media``
    list, the files it does hold, is added by the archive writer).
    """
    manifest: dict[str, Any] = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "clinic": {"id": clinic.pk, "schema": clinic.schema_name, "name": clinic.name},
        "created_at": (created_at or timezone.now()).isoformat(),
        "kind": str(kind),
        "payload_format": str(payload_format),
        "tables": tables,
        "migrations": migrations,
        "postgresql": {"server": server_version, "dump_tool": dump_tool},
    }
    if payload is not None:
        manifest["postgresql"]["payload"] = payload
    if backup_id is not None:
        manifest["backup_id"] = backup_id
    if source is not None:
        manifest["source"] = source
    if note:
        manifest["note"] = note[:200]
    if media_missing is not None:
        manifest["media_missing"] = media_missing
    return manifest


def manifest_has_media(manifest: dict[str, Any]) -> bool:
    """Whether the archive holds the clinic's files (format 2 and later); version 1 holds rows only."""
    return isinstance(manifest.get("media"), list)


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest the catalog keeps (everything but bulky or secret parts)."""
    summary = {key: manifest[key] for key in SUMMARY_KEYS if key in manifest}
    media = _media_summary(manifest)
    if media is not None:
        summary["media"] = media
    return summary


def schema_migrations(schema: str) -> dict[str, list[str]]:
    """The migrations applied in a clinic's schema, by app, as a manifest records them."""
    applied: dict[str, list[str]] = {}
    with connection.cursor() as cursor:
        query = sql.SQL("SELECT app, name FROM {}.django_migrations ORDER BY app, name").format(sql.Identifier(schema))
        cursor.execute(query.as_string(None))
        for app, name in cursor.fetchall():
            applied.setdefault(app, []).append(name)
    return applied


def manifest_check(manifest: dict[str, Any], clinic: Clinic, *, error: type[RespaldoError] = RespaldoError) -> None:
    """Refuse (``error``) a manifest of an unknown version or payload format, or of another clinic.

    Another clinic means another schema, or the same schema name with another id: the
    platform was rebuilt or the clinic re-created, and the archive may hold the data of a
    clinic that only shared the name.
    """
    version = manifest.get("format_version")
    if version not in MANIFEST_FORMAT_VERSIONS or isinstance(version, bool):
        raise error(
            "unsupported_format",
            "upload.unsupported_format.version",
            version=json.dumps(version)[:40],
            ours=MANIFEST_FORMAT_VERSION,
        )
    payload_format = manifest.get("payload_format")
    if payload_format not in PAYLOAD_FORMATS:
        raise error("unsupported_format", "upload.unsupported_format.payload", format=json.dumps(payload_format)[:40])
    owner = manifest.get("clinic") if isinstance(manifest.get("clinic"), dict) else {}
    schema, clinic_id = owner.get("schema"), owner.get("id")
    if schema != clinic.schema_name:
        raise error("other_clinic", "upload.other_clinic.schema", schema=str(schema)[:63])
    if clinic_id != clinic.pk or isinstance(clinic_id, bool):
        what_to_do = "upload.other_clinic.id.json" if payload_format == "json" else "upload.other_clinic.id.pg"
        raise error(
            "other_clinic",
            "upload.other_clinic.id",
            schema=schema,
            old_id=json.dumps(clinic_id)[:40],
            new_id=clinic.pk,
            what_to_do={"message_id": what_to_do, "params": {}},
        )
