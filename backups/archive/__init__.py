"""The backup archive file format (version 1): age( zstd( tar ) ), authenticated.

Pure Python, no Django. Everything streams: memory stays bounded (about ``chunk_size``
plus a few MB) whatever the payload size. See ``docs/archive-format.md`` for the format.

Layers, outside in:

* an **age** file (X25519 recipients) -- the deployment's key plus optional escrow keys;
* a **zstd** stream (one frame, with content checksum);
* a **ustar tar** stream: ``manifest.json``, ``payload/000001`` ..., ``auth.json`` (last).

``auth.json`` carries an HMAC-SHA256, under a key derived from the deployment's age
*identity* (secret), over every member before it. Anyone holding only a public key (or an
escrow identity) can build a valid age file but cannot produce that MAC.

pyrage notes (checked by experiment with pyrage 1.4.0):

* ``encrypt_io``/``decrypt_io`` keep the GIL while encrypting; they call back into Python
  for every 8 KiB read and every write.
* ``encrypt_io`` turns an exception raised by the reader into ``pyrage.EncryptError`` with
  only its text, and *silently ignores* a failing writer on its final flush (Rust
  ``BufWriter`` dropped). So both ends are wrapped here and their errors re-raised.
* ``decrypt_io`` raises ``pyrage.DecryptError`` for header problems ("No matching keys
  found", "Header is invalid", "Header MAC is invalid", "Incomplete header", "failed to
  fill whole buffer" -- the last also for an empty file) and a plain ``OSError``
  ("decryption error") for a damaged/truncated/extended body, after having written the
  chunks that did verify.

Modules: ``common`` (constants, errors, keys, tar helpers: what the others share),
``writer``, ``reader`` (with ``decrypt``, its decrypting thread) and ``media`` (the media
members). Nothing here imports any other module of Respaldo.
"""

from backups.archive.common import (
    ARCHIVE_VERSION,
    ArchiveAuthError,
    ArchiveCorrupt,
    ArchiveError,
    ArchiveNotRecognized,
    ArchiveSummary,
    ArchiveTooLarge,
    ArchiveWrongKey,
    KeyConfigError,
    generate_identity,
    identity_public_key,
    key_id,
)
from backups.archive.reader import ArchiveReader, open_archive, verify_archive
from backups.archive.writer import write_archive

__all__ = [
    "ARCHIVE_VERSION",
    "ArchiveAuthError",
    "ArchiveCorrupt",
    "ArchiveError",
    "ArchiveNotRecognized",
    "ArchiveReader",
    "ArchiveSummary",
    "ArchiveTooLarge",
    "ArchiveWrongKey",
    "KeyConfigError",
    "generate_identity",
    "identity_public_key",
    "key_id",
    "open_archive",
    "verify_archive",
    "write_archive",
]
