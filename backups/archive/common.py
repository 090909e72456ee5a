"""What the archive writer and reader share: format constants, errors, keys, tar helpers (see ``backups.archive``)."""

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

_BLOCK = tarfile.BLOCKSIZE  # 512
_RECORD = tarfile.RECORDSIZE  # 10240: tar streams are padded to whole records
_MAX_TAIL = 2 * _BLOCK + _RECORD  # end-of-archive blocks plus record padding
_PIECE = 256 << 10  # granularity fed to the compressor
_PAYLOAD_READ = 1 << 20  # largest single read() asked of the payload
_COPY = 1 << 20
_AGE_MAGICS = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")
_PIPE_SIZE = 1 << 20


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


class _Cancelled(Exception):
    """Raised inside the decrypt thread's writer when the reader is closed early."""


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class _Key:
    identity: Any  # pyrage.x25519.Identity
    public: str
    key_id: str
    auth_key: bytes


def _key_id(public_key: str) -> str:
    return hashlib.sha256(public_key.encode()).hexdigest()[:16]


def _parse_identity(value: object, position: int) -> _Key:
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
    return _Key(identity=identity, public=public, key_id=_key_id(public), auth_key=auth_key)


def _load_keys(identities: Sequence[str]) -> list[_Key]:
    if isinstance(identities, str | bytes):
        raise TypeError("identities must be a list of identity strings, not a single string")
    keys = [_parse_identity(value, n) for n, value in enumerate(identities, 1)]
    if not keys:
        raise KeyConfigError("no archive key is configured; refusing to read or write backups without one")
    return keys


def _parse_recipient(value: object, position: int) -> Any:
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


def _tar_header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o600
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> int:
    return -size % _BLOCK


def _mac_frame(name: str, size: int) -> bytes:
    return name.encode() + b"\0" + str(size).encode() + b"\0"


def _chunk_name(index: int) -> str:
    return f"{PAYLOAD_PREFIX}{index:06d}"


def _strict_json(data: bytes, what: str) -> Any:
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
