"""What the archive writer, reader and media modules share: format constants, errors, keys, tar helpers
(see ``backups.archive``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyrage
from pyrage import x25519

ARCHIVE_VERSION = 2  # the newest: version 2 adds the media members (the clinic's files)
ARCHIVE_VERSION_NO_MEDIA = 1  # what the writer still writes when given no media list
ARCHIVE_VERSIONS = (1, 2)  # what the reader reads

MANIFEST_NAME = "manifest.json"
AUTH_NAME = "auth.json"
PAYLOAD_PREFIX = "payload/"
MEDIA_PREFIX = "media/"
AUTH_ALG = "HMAC-SHA256"
AUTH_KEY_LABEL = b"respaldo/archive-auth/v1"

DEFAULT_CHUNK_SIZE = 4 << 20
MAX_CHUNK_SIZE = 256 << 20
MIN_LEVEL, MAX_LEVEL = 1, 19  # levels 20-22 need windows above the reader's cap
MAX_WINDOW_SIZE = 8 << 20  # largest window zstd uses at levels <= 19
MAX_MANIFEST_BYTES = 16 << 20
MAX_AUTH_BYTES = 64 << 10

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tar streams are padded to whole records
MAX_TAIL = 2 * BLOCK + RECORD  # end-of-archive blocks plus record padding
PIECE = 256 << 10  # granularity fed to the compressor
PAYLOAD_READ = 1 << 20  # largest single read() asked of the payload
COPY = 1 << 20
AGE_MAGICS = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")
PIPE_SIZE = 1 << 20


# --------------------------------------------------------------------------- errors


class ArchiveError(Exception):
    """Base class. ``str()`` is a sentence a clinic administrator can read."""

    code = "archive_error"  # the stable reason (backups.exceptions renders it translated)

    message = "The backup file could not be processed."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(f"{self.message} ({detail})" if detail else self.message)


class ArchiveNotRecognized(ArchiveError):
    """Not an age file at all: empty, garbage, a plain SQL dump..."""

    code = "not_recognized"  # the stable reason (backups.exceptions renders it translated)

    message = "This file is not a backup made by Respaldo (it is empty or not an encrypted backup archive)."


class ArchiveWrongKey(ArchiveError):
    """An age file, but none of the configured identities opens it."""

    code = "wrong_key"  # the stable reason (backups.exceptions renders it translated)

    message = (
        "This backup cannot be opened: it was not produced by this deployment, or it was encrypted "
        "with a key this deployment no longer has (or the start of the file is damaged)."
    )


class ArchiveCorrupt(ArchiveError):
    """Truncated or damaged: age/zstd/tar/JSON error, unexpected member name or order."""

    code = "damaged"  # the stable reason (backups.exceptions renders it translated)

    message = "This backup file is damaged or incomplete."


class ArchiveAuthError(ArchiveError):
    """The authentication record is missing, malformed, made with an unknown key, or wrong."""

    code = "tampered"  # the stable reason (backups.exceptions renders it translated)

    message = (
        "This backup failed its authenticity check: it was changed after it was made, "
        "or it was not made by this deployment."
    )


class ArchiveTooLarge(ArchiveError):
    """The payload is larger than the caller's ``max_payload_bytes``."""

    code = "unpacked_too_large"  # the stable reason (backups.exceptions renders it translated)

    message = "This backup's contents are larger than the allowed size; it was not unpacked."


class KeyConfigError(ArchiveError):
    """No identity configured, or an identity/recipient string that does not parse."""

    code = "key_config"  # the stable reason (backups.exceptions renders it translated)

    message = "Backup encryption is not configured correctly."


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class ArchiveKey:
    """A parsed identity: its public key, short id and the key its archives are authenticated with."""

    identity: Any  # pyrage.x25519.Identity
    public: str
    key_id: str
    auth_key: bytes


def key_id(public_key: str) -> str:
    """The short id of a public key, as the authentication record names it (16 hex digits)."""
    return hashlib.sha256(public_key.encode()).hexdigest()[:16]


def _parse_identity(value: object, position: int) -> ArchiveKey:
    if not isinstance(value, str):
        raise KeyConfigError(f"identity #{position} is not a string")
    try:
        identity = x25519.Identity.from_str(value.strip())
    except pyrage.IdentityError:
        # Never echo the value: it is a secret.
        raise KeyConfigError(f"identity #{position} is not a valid age secret key 'AGE-SECRET-KEY-1...'") from None
    canonical = str(identity)  # upper case; the auth key is derived from this form
    public = str(identity.to_public())
    auth_key = hmac.new(canonical.encode(), AUTH_KEY_LABEL, hashlib.sha256).digest()
    return ArchiveKey(identity=identity, public=public, key_id=key_id(public), auth_key=auth_key)


def load_keys(identities: Sequence[str]) -> list[ArchiveKey]:
    """The parsed keys of a list of identity strings; ``KeyConfigError`` if empty or malformed."""
    if isinstance(identities, str | bytes):
        raise TypeError("identities must be a list of identity strings, not a single string")
    keys = [_parse_identity(value, n) for n, value in enumerate(identities, 1)]
    if not keys:
        raise KeyConfigError("no archive key is configured; refusing to read or write backups without one")
    return keys


def parse_recipient(value: object, position: int) -> Any:
    """An extra (escrow) recipient, ``age1...``; ``KeyConfigError`` if malformed."""
    if not isinstance(value, str):
        raise KeyConfigError(f"extra recipient #{position} is not a string")
    try:
        return x25519.Recipient.from_str(value.strip())
    except pyrage.RecipientError:
        raise KeyConfigError(f"extra recipient #{position} is not a valid age public key 'age1...'") from None


def generate_identity() -> str:
    """A new X25519 age identity, ``"AGE-SECRET-KEY-1..."``."""
    return str(x25519.Identity.generate())


def identity_public_key(identity: str) -> str:
    """The age public key (``"age1..."``) of an identity string; ``KeyConfigError`` if malformed."""
    return _parse_identity(identity, 1).public


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class ArchiveSummary:
    """What an archive holds, as written or as verified.

    ``manifest`` is the manifest as stored (including ``archive_version``).
    ``archive_bytes``/``archive_sha256`` describe the age file itself (the stored object).
    """

    payload_bytes: int
    payload_sha256: str
    key_id: str
    manifest: dict
    archive_bytes: int
    archive_sha256: str


# --------------------------------------------------------------------------- tar helpers


def tar_header(name: str, size: int, mtime: int) -> bytes:
    """The ustar header block of a regular member (mode 0600, no owner names)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o600
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> int:
    """How many zero bytes follow a member of ``size`` bytes, up to a whole tar block."""
    return -size % BLOCK


def mac_frame(name: str, size: int) -> bytes:
    """What the MAC covers before each member's bytes: its name and size."""
    return name.encode() + b"\0" + str(size).encode() + b"\0"


def chunk_name(index: int) -> str:
    """The member name of payload chunk ``index`` (from 1): ``payload/000001``."""
    return f"{PAYLOAD_PREFIX}{index:06d}"


def strict_json(data: bytes, what: str) -> Any:
    """Parse JSON refusing duplicate keys and NaN/Infinity; ``ArchiveCorrupt`` naming ``what`` otherwise."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate key")
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"invalid constant {name}")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveCorrupt(f"{what} is not valid JSON: {exc}") from None
