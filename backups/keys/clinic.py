"""Per-clinic archive keys: crypto-erasure of one clinic's backups, wherever their copies are.

Each clinic gets its own age identity, generated the first time one of its archives is
written. Its archives are encrypted to that key alone (plus the clinic's own escrow key, if it
set one, which we never hold) and authenticated with it; the deployment's key does not open
them. The clinic key is kept only *wrapped* (age-encrypted to the deployment's archive key),
and only in one place: the object ``keys/<schema>/<clinic id>-<key id>.age`` of the backup
storage. The catalog row (``ClinicKey``) holds public metadata only (public key, which
deployment key wrapped it, when and why it was erased): never a byte that opens an archive.
That is what makes erasure real: PostgreSQL keeps what a row once held in dead tuples, in its
write-ahead log, on its replicas and in the platform's own database backups, none of which a
``DELETE``/``UPDATE`` reaches; a storage object deleted in every version is gone.

* **Reading** a clinic's archive: :func:`reading_identities` -- the clinic's live key, then the
  deployment keys (which still open archives written before clinic keys existed). The key is
  read from storage and unwrapped once per process, then kept in memory (keyed by public key),
  and that copy is used only for a row the catalog still shows live, wrapped with a configured
  deployment key.
* **Erasing** (:func:`erase_clinic_key`): with the clinic's key rows locked, the stored object
  is deleted (every version, on a versioned bucket), this process's memory copy dropped, then
  the row marked erased. From then on no key this deployment holds opens any archive encrypted
  to it: a copy in a download folder, another bucket or an old disk is unreadable, and no
  byte of the catalog database (data files, WAL, ``pg_dump``) opens it. The next backup of the
  clinic, if it still exists, gets a new key. Caveats, said in the README: a copy of the
  ``keys/`` objects taken before the erasure, S3 versions kept under object lock, and database
  WAL or backups from before migration 0021 (when the catalog still held the wrapped key).
* **Rotation** of the deployment key (:func:`rewrap_clinic_keys`, ``rotate_clinic_keys``):
  every live clinic key is unwrapped with any configured key and its stored object replaced by
  one wrapped to the new key; no archive is rewritten.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import IO

import pyrage
from django.db import IntegrityError, transaction
from django.utils import timezone
from pyrage import x25519

from backups import archive, storage
from backups.archive import KeyConfigError, generate_identity, identity_public_key
from backups.audit import audit
from backups.keys.deployment import encryption_identity, old_identities
from backups.models import AuditEntry, ClinicKey
from backups.storage import StorageError, StoredObjectNotFound
from clinics.models import Clinic

logger = logging.getLogger(__name__)

KEYS_PREFIX = "keys"
WRAP_FORMAT = "respaldo-clinic-key"
WRAP_VERSION = 1
PENDING_SUFFIX = ".new"  # the replacement written first while a key is wrapped again (rotation)

# public key -> (deployment key id it was wrapped with, identity): this process's copies of the
# clinic keys it unwrapped. Never written anywhere; see _unwrap_row for when one is used.
_cache: dict[str, tuple[str, str]] = {}
_cache_lock = threading.Lock()


def key_id(public_key: str) -> str:
    """The short id of a public key, as the archive's authentication record names it."""
    return archive.key_id(public_key)


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
    wrapped_with: str = ""  # the id of the deployment key that opened it

    @property
    def public_key(self) -> str:
        return identity_public_key(self.identity)


def _unwrap(data: bytes) -> UnwrappedKey:
    """Open a wrapped clinic key with the deployment keys; KeyConfigError if none opens it."""
    text, opened_with = None, ""
    for value in deployment_identities():
        try:
            text = pyrage.decrypt(data, [x25519.Identity.from_str(value)])
        except pyrage.DecryptError:
            continue
        opened_with = key_id(identity_public_key(value))
        break
    if text is None:
        raise KeyConfigError(
            "A clinic's archive key is wrapped with a deployment key that is no longer configured: "
            "put that key back in BACKUPS_AGE_OLD_IDENTITIES and run `manage.py rotate_clinic_keys`."
        )
    try:
        lines = text.decode().splitlines()
    except UnicodeDecodeError:
        raise KeyConfigError("A wrapped clinic archive key is malformed.") from None
    fields = dict(line[2:].split(": ", 1) for line in lines[1:] if line.startswith("# ") and ": " in line)
    keys = [line for line in lines if line and not line.startswith("#")]
    if not lines or lines[0] != f"# {WRAP_FORMAT} v{WRAP_VERSION}" or len(keys) != 1:
        raise KeyConfigError("A wrapped clinic archive key is not in a known format.")
    try:
        key = UnwrappedKey(
            clinic_id=int(fields["clinic_id"]), schema=fields["schema"], identity=keys[0], wrapped_with=opened_with
        )
    except (KeyError, ValueError):
        raise KeyConfigError("A wrapped clinic archive key does not say whose it is.") from None
    identity_public_key(key.identity)  # KeyConfigError if it is not a key
    return key


def _stored_name(schema: str, clinic_id: int, public_key: str) -> str:
    return f"{KEYS_PREFIX}/{schema}/{clinic_id}-{key_id(public_key)}.age"


def stored_key_name(row: ClinicKey) -> str:
    """The storage name of a clinic key's wrapped copy."""
    return _stored_name(row.clinic.schema_name, row.clinic_id, row.public_key)


def _read_wrapped(schema: str, clinic_id: int, public_key: str) -> bytes:
    """The stored wrapped key (or, after a rotation interrupted between its two writes, its
    replacement); KeyConfigError if neither is there, StorageError if the storage fails."""
    name = _stored_name(schema, clinic_id, public_key)
    for candidate in (name, name + PENDING_SUFFIX):
        try:
            return storage.read_stored_bytes(candidate, limit=64 * 1024)
        except StoredObjectNotFound:
            continue
        except ValueError:
            raise KeyConfigError(f"The stored archive key {candidate} of clinic #{clinic_id} is malformed.") from None
    raise KeyConfigError(
        f"The archive key of clinic #{clinic_id} is missing from the backup storage ({name}): its archives "
        "cannot be opened. Put the object back from a copy of the bucket, if one exists."
    )


def _configured_key_ids() -> set[str]:
    return {key_id(identity_public_key(value)) for value in deployment_identities()}


def _unwrap_row(row: ClinicKey) -> str:
    """The identity of a live key row: read from storage and unwrapped, or this process's copy.

    The memory copy serves only a row the catalog shows live (callers pass rows they have just
    read), wrapped with a deployment key still configured; an erased row drops it.
    """
    if row.erased_at is not None:
        forget(row.public_key)
        raise KeyConfigError(f"The archive key of clinic #{row.clinic_id} was erased.")
    with _cache_lock:
        cached = _cache.get(row.public_key)
    if cached is not None and cached[0] == row.wrapped_with and cached[0] in _configured_key_ids():
        return cached[1]
    key = _unwrap(_read_wrapped(row.clinic.schema_name, row.clinic_id, row.public_key))
    if key.clinic_id != row.clinic_id or key.public_key != row.public_key:
        raise KeyConfigError(f"The archive key of clinic #{row.clinic_id} does not belong to it.")
    with _cache_lock:
        _cache[row.public_key] = (row.wrapped_with, key.identity)
    return key.identity


def forget(public_key: str | None = None) -> None:
    """Drop this process's memory copy of a clinic key (of every key, without an argument)."""
    with _cache_lock:
        if public_key is None:
            _cache.clear()
        else:
            _cache.pop(public_key, None)


# --- a clinic's key -------------------------------------------------------------------


def live_key(clinic: Clinic) -> ClinicKey | None:
    """The clinic's key that is not erased, if it has one."""
    return ClinicKey.objects.filter(clinic_id=clinic.pk, erased_at__isnull=True).select_related("clinic").first()


def writing_identity(clinic: Clinic) -> str:
    """The identity new archives of ``clinic`` are encrypted to and authenticated with (created on first use).

    A new key is stored wrapped in the backup storage BEFORE its catalog row exists, so no
    archive can be encrypted to a key the bucket lacks; the row holds its public key only.
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
            ClinicKey.objects.create(clinic_id=clinic.pk, public_key=public, wrapped_with=wrapped_with)
    except IntegrityError:  # another process created the clinic's key first: use that one
        storage.purge_stored(name)
        row = live_key(clinic)
        assert row is not None
        return _unwrap_row(row)
    with _cache_lock:
        _cache[public] = (wrapped_with, identity)
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
    rows = ClinicKey.objects.filter(erased_at__isnull=True).select_related("clinic").order_by("pk")
    own = [_unwrap_row(row) for row in rows]
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
    others = ClinicKey.objects.filter(erased_at__isnull=True).exclude(clinic_id=exclude.pk).select_related("clinic")
    for row in others:
        try:
            identities.append(_unwrap_row(row))
        except (KeyConfigError, StorageError):
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
    """Destroy the clinic's key: its stored object (every version, and any rotation leftover),
    this process's memory copy, then the row marked erased (the catalog never held the key).

    Returns whether there was a key to erase. The key rows stay locked throughout, so a rotation
    cannot write the key back meanwhile. A storage failure raises ``StorageError`` with the
    catalog unchanged (try again). Archives of the clinic written before clinic keys (to the
    deployment key) are not affected by this: delete them (``erase_clinic_backups`` does).
    """
    with transaction.atomic():
        rows = list(ClinicKey.objects.select_for_update().filter(clinic_id=clinic.pk, erased_at__isnull=True))
        for row in rows:
            name = _stored_name(clinic.schema_name, clinic.pk, row.public_key)
            storage.purge_stored(name)
            storage.purge_stored(name + PENDING_SUFFIX)
            forget(row.public_key)
        erased = ClinicKey.objects.filter(pk__in=[row.pk for row in rows], erased_at__isnull=True).update(
            erased_at=timezone.now(), erased_by=actor[:254], erase_reason=reason[:200]
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
    """Wrap every live clinic key again to the current deployment key (its stored object replaced); returns how many.

    Run after rotating the deployment key (the old one moved to ``BACKUPS_AGE_OLD_IDENTITIES``);
    once it has run, the old deployment key only opens archives written before clinic keys.
    The new wrapping is stored first under ``<name>.new`` (read if the run stops before the
    swap), then the old object is deleted in every version and the new one put in its place.
    Each row is locked meanwhile, so an erasure waits and then deletes both.
    """
    current = key_id(identity_public_key(encryption_identity()))
    count = 0
    pending = ClinicKey.objects.filter(erased_at__isnull=True).exclude(wrapped_with=current)
    for pk in pending.values_list("pk", flat=True):
        with transaction.atomic():
            row = ClinicKey.objects.select_for_update(of=("self",)).select_related("clinic").filter(pk=pk).first()
            if row is None or row.erased_at is not None or row.wrapped_with == current:
                continue
            identity = _unwrap_row(row)
            wrapped, wrapped_with = _wrap(row.clinic_id, row.clinic.schema_name, identity)
            name = _stored_name(row.clinic.schema_name, row.clinic_id, row.public_key)
            storage.purge_stored(name + PENDING_SUFFIX)
            storage.store_bytes(name + PENDING_SUFFIX, wrapped)
            storage.purge_stored(name)
            storage.store_bytes(name, wrapped)
            storage.purge_stored(name + PENDING_SUFFIX)
            ClinicKey.objects.filter(pk=row.pk).update(wrapped_with=wrapped_with)
            with _cache_lock:
                _cache[row.public_key] = (wrapped_with, identity)
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
        if not name.endswith((".age", ".age" + PENDING_SUFFIX)):  # a replacement left by an interrupted rotation too
            continue
        try:
            key = _unwrap(storage.read_stored_bytes(name))
        except (KeyConfigError, ValueError, KeyError, TypeError) as exc:
            logger.warning("The stored clinic key %r cannot be opened: %s", name, exc)
            continue
        if all(known.public_key != key.public_key for known in found.get(key.schema, [])):
            found.setdefault(key.schema, []).append(key)
    return found


def adopt_key(clinic: Clinic, key: UnwrappedKey) -> None:
    """Record a clinic key found in storage in the catalog (a rebuilt platform); known keys are left alone.

    The row holds its public key and which deployment key wraps the stored object (the key
    stays in storage only; ``rotate_clinic_keys`` wraps it to the current deployment key).
    """
    if key.clinic_id != clinic.pk or ClinicKey.objects.filter(public_key=key.public_key).exists():
        return
    try:
        with transaction.atomic():
            ClinicKey.objects.create(clinic_id=clinic.pk, public_key=key.public_key, wrapped_with=key.wrapped_with)
    except IntegrityError:
        logger.warning("Clinic %s already has a live archive key; the stored one was not adopted", clinic.schema_name)
