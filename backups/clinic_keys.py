"""Per-clinic archive keys: crypto-erasure of one clinic's backups, wherever their copies are.

Each clinic gets its own age identity, generated the first time one of its archives is
written. Its archives are encrypted to that key alone (plus the clinic's own escrow key, if it
set one, which we never hold) and authenticated with it; the deployment's key does not open
them. The clinic key is kept only *wrapped*: age-encrypted to the deployment's archive key,
in the catalog (``ClinicKey``) and, for a platform rebuilt from the bucket, as a small object
``keys/<schema>/<clinic id>-<key id>.age`` in the backup storage.

* **Reading** a clinic's archive: :func:`reading_identities` -- the clinic's live key, then the
  deployment keys (which still open archives written before clinic keys existed).
* **Erasing** (:func:`erase_clinic_key`): the stored copy is deleted (every version, on a
  versioned bucket), then the catalog's wrapped key emptied. From then on no key this
  deployment holds opens any archive encrypted to it: a copy in a download folder, another
  bucket or an old disk is unreadable. The next backup of the clinic, if it still exists, gets
  a new key. Caveat, said in the README: a backup of the catalog database itself, or a copy of
  the ``keys/`` objects taken before the erasure, still holds the wrapped key.
* **Rotation** of the deployment key (:func:`rewrap_clinic_keys`, ``rotate_clinic_keys``):
  every live clinic key is unwrapped with any configured key and wrapped again to the new
  one, in the catalog and in storage; no archive is rewritten.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import IO

import pyrage
from django.db import IntegrityError, transaction
from django.utils import timezone
from pyrage import x25519

from backups import archive, storage
from backups.archive import KeyConfigError, generate_identity, identity_public_key
from backups.keys import encryption_identity, old_identities
from backups.models import AuditEntry, ClinicKey
from backups.operations.audit import audit
from clinics.models import Clinic

logger = logging.getLogger(__name__)

KEYS_PREFIX = "keys"
WRAP_FORMAT = "respaldo-clinic-key"
WRAP_VERSION = 1


def key_id(public_key: str) -> str:
    """The short id of a public key, as the archive's authentication record names it."""
    return archive.common._key_id(public_key)


def deployment_identities() -> list[str]:
    """The deployment's keys: the one that wraps new clinic keys first, then the old ones."""
    return [encryption_identity(), *old_identities()]


# --- wrapping -------------------------------------------------------------------------


def _wrap(clinic_id: int, schema: str, identity: str) -> tuple[bytes, str]:
    """(the age file holding the clinic key, encrypted to the deployment key; that key's id).

    Decrypted, it is an age identity file (comment lines, then the key), so by hand
    ``age -d -i deployment-key.txt keys/<schema>/<id>-<key id>.age > clinic-key.txt`` and then
    ``age -d -i clinic-key.txt <archive>`` open an archive (docs/archive-format.md).
    """
    wrapping = encryption_identity()
    recipient = x25519.Identity.from_str(wrapping).to_public()
    body = f"# {WRAP_FORMAT} v{WRAP_VERSION}\n# clinic_id: {clinic_id}\n# schema: {schema}\n{identity}\n"
    return pyrage.encrypt(body.encode(), [recipient]), key_id(identity_public_key(wrapping))


@dataclass(frozen=True)
class UnwrappedKey:
    """A clinic key as its wrapping says: whose it is and the identity."""

    clinic_id: int
    schema: str
    identity: str

    @property
    def public_key(self) -> str:
        return identity_public_key(self.identity)


def _unwrap(data: bytes) -> UnwrappedKey:
    """Open a wrapped clinic key with the deployment keys; KeyConfigError if none opens it."""
    identities = [x25519.Identity.from_str(value) for value in deployment_identities()]
    try:
        lines = pyrage.decrypt(data, identities).decode().splitlines()
    except pyrage.DecryptError:
        raise KeyConfigError(
            "A clinic's archive key is wrapped with a deployment key that is no longer configured: "
            "put that key back in BACKUPS_AGE_OLD_IDENTITIES and run `manage.py rotate_clinic_keys`."
        ) from None
    except UnicodeDecodeError:
        raise KeyConfigError("A wrapped clinic archive key is malformed.") from None
    fields = dict(line[2:].split(": ", 1) for line in lines[1:] if line.startswith("# ") and ": " in line)
    keys = [line for line in lines if line and not line.startswith("#")]
    if not lines or lines[0] != f"# {WRAP_FORMAT} v{WRAP_VERSION}" or len(keys) != 1:
        raise KeyConfigError("A wrapped clinic archive key is not in a known format.")
    try:
        key = UnwrappedKey(clinic_id=int(fields["clinic_id"]), schema=fields["schema"], identity=keys[0])
    except (KeyError, ValueError):
        raise KeyConfigError("A wrapped clinic archive key does not say whose it is.") from None
    identity_public_key(key.identity)  # KeyConfigError if it is not a key
    return key


def _stored_name(schema: str, clinic_id: int, public_key: str) -> str:
    return f"{KEYS_PREFIX}/{schema}/{clinic_id}-{key_id(public_key)}.age"


def stored_key_name(row: ClinicKey) -> str:
    """The storage name of a clinic key's wrapped copy."""
    return _stored_name(row.clinic.schema_name, row.clinic_id, row.public_key)


def _unwrap_row(row: ClinicKey) -> str:
    key = _unwrap(base64.b64decode(row.wrapped))
    if key.clinic_id != row.clinic_id or key.public_key != row.public_key:
        raise KeyConfigError(f"The archive key of clinic #{row.clinic_id} does not belong to it.")
    return key.identity


# --- a clinic's key -------------------------------------------------------------------


def live_key(clinic: Clinic) -> ClinicKey | None:
    """The clinic's key that is not erased, if it has one."""
    return ClinicKey.objects.filter(clinic_id=clinic.pk, erased_at__isnull=True).first()


def writing_identity(clinic: Clinic) -> str:
    """The identity new archives of ``clinic`` are encrypted to and authenticated with (created on first use).

    A new key is stored wrapped in the backup storage BEFORE its catalog row exists, so no
    archive can be encrypted to a key the bucket lacks.
    """
    row = live_key(clinic)
    if row is not None:
        return _unwrap_row(row)
    identity = generate_identity()
    public = identity_public_key(identity)
    wrapped, wrapped_with = _wrap(clinic.pk, clinic.schema_name, identity)
    name = _stored_name(clinic.schema_name, clinic.pk, public)
    storage.store_bytes(name, wrapped)
    try:
        with transaction.atomic():
            ClinicKey.objects.create(
                clinic_id=clinic.pk,
                public_key=public,
                wrapped=base64.b64encode(wrapped).decode(),
                wrapped_with=wrapped_with,
            )
    except IntegrityError:  # another process created the clinic's key first: use that one
        storage.purge_stored(name)
        row = live_key(clinic)
        assert row is not None
        return _unwrap_row(row)
    return identity


def reading_identities(clinic: Clinic) -> list[str]:
    """Every key that may open an archive of ``clinic``: its live key first, then the deployment's."""
    row = live_key(clinic)
    own = [_unwrap_row(row)] if row is not None else []
    return [*own, *deployment_identities()]


def identities_held() -> list[str]:
    """Every key this deployment holds: each clinic's live key, then the deployment's keys.

    What an erased clinic's archive must not open with (the crypto-erasure check).
    """
    own = [_unwrap_row(row) for row in ClinicKey.objects.filter(erased_at__isnull=True).order_by("pk")]
    return [*own, *deployment_identities()]


def identity_of(clinic: Clinic) -> str | None:
    """The clinic's live key (None if it has none yet, or it was erased)."""
    row = live_key(clinic)
    return _unwrap_row(row) if row is not None else None


def manifest_of_other_clinic(stream: IO[bytes], *, exclude: Clinic) -> dict | None:
    """The manifest of an archive that another clinic's live key opens, or None.

    Used only to word a refusal ("this backup belongs to another clinic"): the start of the
    file (age header, manifest) is read with every other clinic's key; nothing is trusted.
    """
    identities = []
    for row in ClinicKey.objects.filter(erased_at__isnull=True).exclude(clinic_id=exclude.pk):
        try:
            identities.append(_unwrap_row(row))
        except KeyConfigError:
            continue
    if not identities:
        return None
    try:
        with archive.open_archive(stream, identities=identities) as reader:
            return reader.manifest if isinstance(reader.manifest, dict) else None
    except archive.ArchiveError:
        return None


# --- erasure and rotation -------------------------------------------------------------


def erase_clinic_key(clinic: Clinic, *, actor: str, reason: str, address: str | None = None) -> bool:
    """Destroy the clinic's key: its stored copy (every version), then the catalog's wrapped key.

    Returns whether there was a key to erase. A storage failure raises ``StorageError`` with
    the catalog unchanged (try again). Archives of the clinic written before clinic keys (to
    the deployment key) are not affected by this: delete them (``erase_clinic_backups`` does).
    """
    rows = list(ClinicKey.objects.filter(clinic_id=clinic.pk, erased_at__isnull=True))
    for row in rows:
        storage.purge_stored(_stored_name(clinic.schema_name, clinic.pk, row.public_key))
    with transaction.atomic():
        erased = ClinicKey.objects.filter(pk__in=[row.pk for row in rows], erased_at__isnull=True).update(
            wrapped="", erased_at=timezone.now(), erased_by=actor[:254], erase_reason=reason[:200]
        )
        if erased:
            audit(
                AuditEntry.Action.KEY_ERASED,
                clinic_id=clinic.pk,
                actor=actor,
                address=address,
                reason=reason[:200],
                keys=[key_id(row.public_key) for row in rows],
            )
    if erased:
        logger.info("The archive key of clinic %s was erased (%s)", clinic.schema_name, reason)
    return bool(erased)


def rewrap_clinic_keys() -> int:
    """Wrap every live clinic key again to the current deployment key (catalog and storage); returns how many.

    Run after rotating the deployment key (the old one moved to ``BACKUPS_AGE_OLD_IDENTITIES``);
    once it has run, the old deployment key only opens archives written before clinic keys.
    """
    current = key_id(identity_public_key(encryption_identity()))
    count = 0
    for row in ClinicKey.objects.filter(erased_at__isnull=True).exclude(wrapped_with=current).select_related("clinic"):
        identity = _unwrap_row(row)
        wrapped, wrapped_with = _wrap(row.clinic_id, row.clinic.schema_name, identity)
        name = _stored_name(row.clinic.schema_name, row.clinic_id, row.public_key)
        storage.purge_stored(name)
        storage.store_bytes(name, wrapped)
        ClinicKey.objects.filter(pk=row.pk).update(
            wrapped=base64.b64encode(wrapped).decode(), wrapped_with=wrapped_with
        )
        count += 1
    return count


def keys_unopenable() -> int:
    """How many live clinic keys are wrapped with a deployment key that is not configured (their
    clinics' archives cannot be opened until that key is put back in BACKUPS_AGE_OLD_IDENTITIES)."""
    configured = [key_id(identity_public_key(value)) for value in deployment_identities()]
    return ClinicKey.objects.filter(erased_at__isnull=True).exclude(wrapped_with__in=configured).count()


def keys_needing_rewrap() -> int:
    """How many live clinic keys are wrapped with a deployment key other than the current one."""
    current = key_id(identity_public_key(encryption_identity()))
    return ClinicKey.objects.filter(erased_at__isnull=True).exclude(wrapped_with=current).count()


# --- the platform rebuilt from the bucket ---------------------------------------------


def stored_keys() -> dict[str, list[UnwrappedKey]]:
    """The clinic keys kept in the backup storage that the deployment keys open, by schema.

    Objects that do not open are skipped (logged): their clinic's archives will be listed as
    unreadable by the import.
    """
    found: dict[str, list[UnwrappedKey]] = {}
    for name in storage.list_stored(prefix=KEYS_PREFIX):
        if not name.endswith(".age"):
            continue
        try:
            key = _unwrap(storage.read_stored_bytes(name))
        except (KeyConfigError, ValueError, KeyError, TypeError) as exc:
            logger.warning("The stored clinic key %r cannot be opened: %s", name, exc)
            continue
        found.setdefault(key.schema, []).append(key)
    return found


def adopt_key(clinic: Clinic, key: UnwrappedKey) -> None:
    """Record a clinic key found in storage in the catalog (a rebuilt platform); known keys are left alone."""
    if key.clinic_id != clinic.pk or ClinicKey.objects.filter(public_key=key.public_key).exists():
        return
    wrapped, wrapped_with = _wrap(clinic.pk, clinic.schema_name, key.identity)
    try:
        with transaction.atomic():
            ClinicKey.objects.create(
                clinic_id=clinic.pk,
                public_key=key.public_key,
                wrapped=base64.b64encode(wrapped).decode(),
                wrapped_with=wrapped_with,
            )
    except IntegrityError:
        logger.warning("Clinic %s already has a live archive key; the stored one was not adopted", clinic.schema_name)
