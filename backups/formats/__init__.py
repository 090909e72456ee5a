"""Payload formats, each one plug-in, picked from one mapping (like django-dbbackup's connectors), never by an ``if``.

A format (:class:`~backups.formats.base.Format`) is a package: ``pg`` (pg_dump custom format)
and ``json`` (``json/``). It writes a payload (``dumper()``) and reads one back over the live
clinic (``replace_live``), into a scratch schema (``into_scratch``) or as a new clinic
(``into_new_clinic``). :func:`format_for` gives the format of a backup's ``payload_format``.
A new format is its own package, one entry in :data:`FORMATS` and its ``Backup.Format`` choice
(a migration: the catalog's column lists the formats it accepts).
"""

from __future__ import annotations

from backups.exceptions import RespaldoError
from backups.formats import json, pg
from backups.formats.base import Dumper, Format, Replacing, RestoreIntoError

__all__ = ["FORMATS", "Dumper", "Format", "Replacing", "RestoreIntoError", "dumper_for", "format_for"]

FORMATS: dict[str, Format] = {"pg": pg.FORMAT, "json": json.FORMAT}


def format_for(payload_format: str) -> Format:
    """The format of a backup's ``payload_format``; ``unknown_backup_format`` for any other name."""
    found = FORMATS.get(str(payload_format))
    if found is None:
        raise RespaldoError("unknown_backup_format", format=str(payload_format), known=", ".join(FORMATS))
    return found


def dumper_for(payload_format: str) -> Dumper:
    """The dumper of a payload format (finding its tools now, so a backup fails before it starts)."""
    return format_for(payload_format).dumper()
