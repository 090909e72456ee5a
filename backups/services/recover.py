"""The platform rebuilt from the bucket: the catalog recreated from the archives in storage.

``import_backups()`` walks the backup storage and, for every ``*.respaldo`` object the
catalog does not name yet, reads it ONCE through ``verify_archive`` with this deployment's
keys (streamed, never whole in memory). Only what that read authenticated is trusted: the
catalog row (kind, format, times, size, SHA-256, manifest summary) comes from the verified
manifest and the verified bytes, never from the object's name. So a deployment that kept only
the bucket and the key can list and restore every clinic again.

Rules, per object (each row in its own transaction; a second run imports nothing):

* **known** -- a catalog row already names it (by ``storage_name``): not read at all;
* **unreadable** -- another deployment's key, damaged, not an archive, an unknown format:
  listed with the reason (a ``RespaldoError``), nothing created;
* **conflict** -- a clinic here has the manifest's schema with another id, or its id with
  another schema, or the schema exists without a clinic: the archive may hold another
  clinic's data, so it is listed and not imported (``restore_run`` would refuse it anyway);
* **clinic missing** -- no clinic has that id and schema: with ``create_clinics`` it is
  created with the manifest's id, schema and name (its schema created and migrated, empty)
  and the domain ``<schema>.<platform domain>``; without, listed and not imported.

``restore_newest()`` then fills a recreated clinic from its newest backup with the ordinary
restore service (verified again, a safety backup first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.postgresql_backend.base import is_valid_schema_name
from django_tenants.utils import get_public_schema_name
from psycopg import sql

from backups import archive, storage
from backups.conf import conf
from backups.exceptions import RespaldoError, failure_reason
from backups.keys.clinic import UnwrappedKey, adopt_key, deployment_identities, stored_keys
from backups.manifest import MANIFEST_FORMAT_VERSION, MANIFEST_FORMAT_VERSIONS, PAYLOAD_FORMATS, manifest_summary
from backups.models import Backup, JobStatus, Restore
from backups.postgres import schema_exists
from backups.services import restore as restores
from clinics.models import Clinic, Domain

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".respaldo"
REQUESTED_BY = "import"  # the catalog rows recreated from storage
RESTORE_REQUESTED_BY = "import_backups --restore"  # the restores of recreated clinics (and their safety backups)
DEFAULT_PLATFORM_DOMAIN = "localhost"

IMPORTED = "imported"
KNOWN = "known"
UNREADABLE = "unreadable"
CONFLICT = "conflict"
CLINIC_MISSING = "clinic missing"
OUTCOMES = (IMPORTED, KNOWN, UNREADABLE, CONFLICT, CLINIC_MISSING)


@dataclass(frozen=True)
class ImportedObject:
    """What happened to one stored object: ``outcome`` is one of ``OUTCOMES``."""

    name: str
    outcome: str
    backup_id: int | None = None
    schema: str = ""
    reason: RespaldoError | None = None  # why it is unreadable (rendered when shown)
    detail: str = ""  # a conflict or a missing clinic, in English (command output)


@dataclass
class ImportReport:
    """Every object seen, in storage order, and the clinics the import created."""

    objects: list[ImportedObject] = field(default_factory=list)
    created_clinics: list[Clinic] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        """How many objects ended with ``outcome``."""
        return sum(1 for item in self.objects if item.outcome == outcome)

    @property
    def nothing_readable(self) -> bool:
        """True when objects exist and every one of them was unreadable (a wrong key or bucket?)."""
        return bool(self.objects) and self.count(UNREADABLE) == len(self.objects)


class _Conflict(Exception):
    """The manifest's clinic clashes with a clinic (or schema) of this database."""


class _ClinicMissing(Exception):
    """The manifest's clinic does not exist here and may not be created."""


@dataclass(frozen=True)
class _Owner:
    """The clinic an authenticated manifest names."""

    id: int
    schema: str
    name: str


# --- Walking the storage -------------------------------------------------------------


def stored_archive_names() -> Iterator[str]:
    """Every ``*.respaldo`` object of the backup storage, sorted, by its storage name."""
    return (name for name in storage.list_stored() if name.endswith(ARCHIVE_SUFFIX))


# --- Importing -----------------------------------------------------------------------


def import_backups(*, create_clinics: bool = True) -> ImportReport:
    """Recreate the catalog rows of every stored archive this deployment's keys open (see module doc).

    Raises ``KeyConfigError`` before reading anything when the keys are not configured, and a
    ``StorageError`` when the storage cannot be listed.
    """
    identities = deployment_identities()
    clinic_keys = stored_keys()  # each clinic's archives are encrypted to its own key, kept wrapped in storage
    report = ImportReport()
    for name in stored_archive_names():
        known = _known_id(name)
        if known is not None:
            report.objects.append(ImportedObject(name, KNOWN, backup_id=known))
            continue
        keys = clinic_keys.get(_schema_in_name(name), [])
        report.objects.append(
            _import_one(name, keys=keys, identities=identities, create_clinics=create_clinics, report=report)
        )
    return report


def _schema_in_name(name: str) -> str:
    """The schema a storage name files the object under (``clinics/<schema>/...``): only a hint
    to pick the clinic's key; the authenticated manifest says whose the archive is."""
    parts = name.split("/")
    return parts[1] if len(parts) > 2 else ""


def _known_id(name: str) -> int | None:
    return Backup.objects.filter(storage_name=name).order_by("pk").values_list("pk", flat=True).first()


def _import_one(
    name: str, *, keys: list[UnwrappedKey], identities: list[str], create_clinics: bool, report: ImportReport
) -> ImportedObject:
    """Read, verify and catalog one object; never raises for a bad object (it is listed instead)."""
    try:
        summary = _verify_stored(name, [*(key.identity for key in keys), *identities])
        owner = _manifest_owner(summary.manifest)
    except Exception as exc:
        reason = failure_reason(exc)
        if reason.code == "unexpected":
            logger.exception("Could not read the stored object %r", name)
        return ImportedObject(name, UNREADABLE, reason=reason)
    try:
        clinic = _clinic_for(owner, create=create_clinics, report=report)
        for key in keys:
            adopt_key(clinic, key)
        backup = _catalog_row(name, clinic, summary)
    except _Conflict as exc:
        return ImportedObject(name, CONFLICT, schema=owner.schema, detail=str(exc))
    except _ClinicMissing as exc:
        return ImportedObject(name, CLINIC_MISSING, schema=owner.schema, detail=str(exc))
    if backup is None:  # another import cataloged it meanwhile
        return ImportedObject(name, KNOWN, backup_id=_known_id(name), schema=owner.schema)
    return ImportedObject(name, IMPORTED, backup_id=backup.pk, schema=owner.schema)


def _verify_stored(name: str, identities: list[str]) -> archive.ArchiveSummary:
    """One streamed read of the object: authenticated, and its size and SHA-256 computed on the way."""
    with storage.open_stored(name) as stream:
        return archive.verify_archive(stream, identities=identities, max_payload_bytes=conf.max_payload_bytes)


def _manifest_owner(manifest: dict[str, Any]) -> _Owner:
    """The manifest's clinic, once its format, kind and creation time are known to this release."""
    version = manifest.get("format_version")
    if version not in MANIFEST_FORMAT_VERSIONS or isinstance(version, bool):
        raise RespaldoError(
            "unsupported_format",
            "upload.unsupported_format.version",
            version=str(version)[:40],
            ours=MANIFEST_FORMAT_VERSION,
        )
    if manifest.get("payload_format") not in PAYLOAD_FORMATS:
        payload_format = str(manifest.get("payload_format"))[:40]
        raise RespaldoError("unsupported_format", "upload.unsupported_format.payload", format=payload_format)
    owner = manifest.get("clinic") if isinstance(manifest.get("clinic"), dict) else {}
    clinic_id, schema, name = owner.get("id"), owner.get("schema"), owner.get("name")
    if not isinstance(clinic_id, int) or isinstance(clinic_id, bool) or clinic_id < 1:
        raise _malformed("clinic id")
    if not isinstance(schema, str) or not is_valid_schema_name(schema) or schema == get_public_schema_name():
        raise _malformed("clinic schema")
    if manifest.get("kind") not in Backup.Kind.values:
        raise _malformed("kind")
    _created_at(manifest)
    return _Owner(id=clinic_id, schema=schema, name=str(name or schema)[:200])


def _malformed(what: str) -> RespaldoError:
    return RespaldoError("archive_error", detail=f" (its manifest has no valid {what})")


def _created_at(manifest: dict[str, Any]) -> datetime:
    try:
        created = datetime.fromisoformat(str(manifest.get("created_at")))
    except ValueError:
        raise _malformed("creation time") from None
    if created.tzinfo is None:
        raise _malformed("creation time")
    return created


def _clinic_for(owner: _Owner, *, create: bool, report: ImportReport) -> Clinic:
    """The manifest's clinic here: the same id AND schema, or created (see the module doc)."""
    by_id = Clinic.objects.filter(pk=owner.id).first()
    if by_id is not None and by_id.schema_name == owner.schema:
        return by_id
    if by_id is not None:
        raise _Conflict(f"clinic id {owner.id} here is {by_id.schema_name!r}, the archive's clinic is {owner.schema!r}")
    by_schema = Clinic.objects.filter(schema_name=owner.schema).first()
    if by_schema is not None:
        raise _Conflict(f"clinic {owner.schema!r} here has id {by_schema.pk}, the archive's has id {owner.id}")
    if schema_exists(owner.schema):
        raise _Conflict(f"a schema {owner.schema!r} exists in the database but no clinic owns it")
    if not create:
        raise _ClinicMissing(f"clinic {owner.schema!r} (id {owner.id}) does not exist here")
    clinic = clinic_recreate(owner.id, owner.schema, owner.name)
    report.created_clinics.append(clinic)
    return clinic


def clinic_recreate(clinic_id: int, schema: str, name: str) -> Clinic:
    """Create a clinic with its former id and schema (migrated, empty) and ``<schema>.<platform domain>``.

    The id must be the old one: restores check an archive's clinic by id and schema. The id
    sequence is then moved past it, so a clinic created later never takes an id again.
    """
    clinic = Clinic(pk=clinic_id, schema_name=schema, name=name)
    clinic.save(verbosity=0)  # creates and migrates the schema (dropped again if that fails)
    _advance_clinic_ids()
    domain = clinic_domain(schema)
    if not Domain.objects.filter(domain=domain).exists():
        Domain.objects.create(domain=domain, tenant=clinic, is_primary=True)
    logger.info("Recreated clinic %s (id %s) from its backups", schema, clinic_id)
    return clinic


def _advance_clinic_ids() -> None:
    """Move the clinic id sequence past the highest id (never back)."""
    table = Clinic._meta.db_table
    query = sql.SQL(
        "SELECT setval(s::regclass, GREATEST(COALESCE(pg_sequence_last_value(s::regclass), 0), "
        "(SELECT MAX(id) FROM {}))) FROM pg_get_serial_sequence(%s, 'id') AS s"
    ).format(sql.Identifier(table))
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(None), [table])


def clinic_domain(schema: str) -> str:
    """A clinic's default domain, ``<schema with - for _>.<platform domain>`` (a host name cannot hold ``_``)."""
    return f"{schema.replace('_', '-')}.{platform_domain()}"


def platform_domain() -> str:
    """The platform's primary domain (the public tenant's), "localhost" when there is none yet."""
    public = Clinic.objects.filter(schema_name=get_public_schema_name()).first()
    if public is not None:
        primary = public.domains.order_by("-is_primary", "pk").values_list("domain", flat=True).first()
        if primary:
            return primary
    return DEFAULT_PLATFORM_DOMAIN


def _catalog_row(name: str, clinic: Clinic, summary: archive.ArchiveSummary) -> Backup | None:
    """The catalog row of one verified object, in its own transaction; None if another import won."""
    created = _created_at(summary.manifest)
    with transaction.atomic():
        Clinic.objects.select_for_update().get(pk=clinic.pk)  # serializes concurrent imports of a clinic
        if Backup.objects.filter(storage_name=name).exists():
            return None
        return Backup.objects.create(
            clinic=clinic,
            kind=summary.manifest["kind"],
            payload_format=summary.manifest["payload_format"],
            status=JobStatus.SUCCEEDED,
            storage_name=name,
            size=summary.archive_bytes,
            sha256=summary.archive_sha256,
            manifest=manifest_summary(summary.manifest),
            progress_bytes=summary.archive_bytes,
            requested_at=created,
            started_at=created,
            succeeded_at=created,
            verified_at=timezone.now(),
            requested_by=REQUESTED_BY,
            note="imported from the backup storage",
        )


# --- Restoring a recreated clinic ----------------------------------------------------


def newest_backup(clinic: Clinic) -> Backup | None:
    """The clinic's newest restorable backup; a safety backup only when there is nothing else.

    A safety backup holds what a restore then replaced (data someone chose to discard), so
    the newest ordinary backup is the truer picture of the clinic.
    """
    usable = Backup.objects.stored().filter(clinic=clinic)
    ordered = ("-requested_at", "-pk")
    return usable.exclude(kind=Backup.Kind.PRE_RESTORE).order_by(*ordered).first() or usable.order_by(*ordered).first()


def restore_newest(clinic: Clinic, *, requested_by: str = RESTORE_REQUESTED_BY) -> Restore | None:
    """Restore ``clinic`` from ``newest_backup()`` now (in this process) and return the finished
    restore, or None when the clinic has no restorable backup. Refusals raise ``RespaldoError``."""
    backup = newest_backup(clinic)
    if backup is None:
        return None
    restore = restores.restore_request(clinic=clinic, backup_id=backup.pk, requested_by=requested_by, enqueue=False)
    return restores.restore_run(restore_id=restore.pk)
