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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyrage
import zstandard
from pyrage import x25519

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
    "open_archive",
    "verify_archive",
    "write_archive",
]

ARCHIVE_VERSION = 1

MANIFEST_NAME = "manifest.json"
AUTH_NAME = "auth.json"
PAYLOAD_PREFIX = "payload/"
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


# --------------------------------------------------------------------------- writing


class _Sink:
    """The writer handed to ``encrypt_io``: forwards to ``out``, counts, hashes, keeps errors.

    pyrage ignores an error on its last flush, so the error is kept here and re-raised.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.error: BaseException | None = None
        self.bytes = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        try:
            rest = data
            while rest:
                written = self._out.write(rest)
                if written is None:  # some writers return None after writing everything
                    written = len(rest)
                if written <= 0:
                    raise OSError("the archive output accepted no bytes")
                rest = rest[written:]
        except BaseException as exc:
            self.error = exc
            raise
        self.sha256.update(data)
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._out, "flush", None)
        if flush is not None:
            try:
                flush()
            except BaseException as exc:
                self.error = exc
                raise


class _Source:
    """The reader handed to ``encrypt_io``: ``read(n)`` returns the next <= n bytes of zstd(tar).

    Pulls the payload one chunk at a time (one reusable buffer of ``chunk_size``).
    """

    def __init__(self, payload: BinaryIO, manifest_bytes: bytes, key: _Key, level: int, chunk_size: int) -> None:
        self._payload = payload
        self._manifest_bytes = manifest_bytes
        self._key = key
        self._chunk_size = chunk_size
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self._pieces = self._tar_stream()
        self._out = b""
        self._pos = 0
        self._finished = False
        self.error: BaseException | None = None
        self.payload_bytes = 0
        self.payload_sha256 = hashlib.sha256()
        self.done = False

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            raise self.error
        try:
            return self._read(size if size is not None and size > 0 else _COPY)
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self, size: int) -> bytes:
        while self._pos >= len(self._out):
            if self._finished:
                return b""
            piece = next(self._pieces, None)
            if piece is None:
                self._out = self._compressor.flush()
                self._finished = True
            else:
                self._out = self._compressor.compress(piece)
            self._pos = 0
        data = self._out[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def _read_chunk(self, buffer: bytearray) -> int:
        """Fill ``buffer`` from the payload; return the byte count (short only at EOF)."""
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            data = self._payload.read(min(len(buffer) - filled, _PAYLOAD_READ))
            if data is None:
                raise TypeError("the payload stream returned None (non-blocking streams are not supported)")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"the payload stream must return bytes, not {type(data).__name__}")
            if not data:
                break
            if len(data) > len(buffer) - filled:
                raise ValueError("the payload stream returned more bytes than requested")
            view[filled : filled + len(data)] = data
            filled += len(data)
        return filled

    def _tar_stream(self) -> Iterator[bytes | memoryview]:
        mtime = int(time.time())
        mac = hmac.new(self._key.auth_key, digestmod=hashlib.sha256)
        offset = 0

        def member(name: str, size: int) -> bytes:
            nonlocal offset
            offset += _BLOCK + size + _padding(size)
            return _tar_header(name, size, mtime)

        manifest = self._manifest_bytes
        mac.update(_mac_frame(MANIFEST_NAME, len(manifest)))
        mac.update(manifest)
        yield member(MANIFEST_NAME, len(manifest)) + manifest + bytes(_padding(len(manifest)))

        buffer = bytearray(self._chunk_size)
        index = 0
        while True:
            size = self._read_chunk(buffer)
            if size == 0:
                break
            index += 1
            chunk = memoryview(buffer)[:size]
            name = _chunk_name(index)
            mac.update(_mac_frame(name, size))
            mac.update(chunk)
            self.payload_sha256.update(chunk)
            self.payload_bytes += size
            yield member(name, size)
            for start in range(0, size, _PIECE):
                yield chunk[start : start + _PIECE]
            if _padding(size):
                yield bytes(_padding(size))
            if size < len(buffer):
                break  # short chunk: the payload hit EOF; do not read it again
        del buffer

        auth = {
            "alg": AUTH_ALG,
            "key_id": self._key.key_id,
            "payload_bytes": self.payload_bytes,
            "payload_sha256": self.payload_sha256.hexdigest(),
            "mac": mac.hexdigest(),
        }
        auth_bytes = json.dumps(auth, sort_keys=True).encode()
        yield member(AUTH_NAME, len(auth_bytes)) + auth_bytes + bytes(_padding(len(auth_bytes)))
        # End of archive: two zero blocks, then zeros up to a whole record (as tarfile does).
        tail = 2 * _BLOCK + (-(offset + 2 * _BLOCK) % _RECORD)
        yield bytes(tail)
        self.done = True


def _manifest_bytes(manifest: dict) -> bytes:
    if not isinstance(manifest, dict):
        raise TypeError("manifest must be a dict")
    if manifest.get("format_version") != 1:
        raise ValueError('manifest must contain "format_version": 1')
    stored = dict(manifest)
    stored["archive_version"] = ARCHIVE_VERSION
    data = json.dumps(stored, ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False).encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def write_archive(
    payload: BinaryIO,
    out: BinaryIO,
    *,
    manifest: dict,
    identities: Sequence[str],
    extra_recipients: Sequence[str] = (),
    level: int = 3,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ArchiveSummary:
    """Write an archive of ``payload`` (read with ``.read(n)`` until EOF) to ``out`` (``.write(b)``).

    Encrypted to ``identities[0]``'s public key plus ``extra_recipients`` (escrow keys that can
    decrypt but cannot authenticate), authenticated with ``identities[0]``. ``out`` is neither
    flushed-and-closed nor seeked: the caller owns it (it is flushed if it has ``flush``).

    Errors raised by ``payload.read`` or ``out.write`` propagate unchanged. ``KeyConfigError``
    if no identity is configured or a key string is malformed; ``ValueError`` for a bad
    manifest/level/chunk_size.
    """
    keys = _load_keys(identities)
    if isinstance(extra_recipients, str | bytes):
        raise TypeError("extra_recipients must be a list of public keys, not a single string")
    recipients = [keys[0].identity.to_public()]
    seen = {keys[0].public}
    for n, value in enumerate(extra_recipients, 1):
        recipient = _parse_recipient(value, n)
        if str(recipient) not in seen:
            seen.add(str(recipient))
            recipients.append(recipient)
    if isinstance(level, bool) or not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be an integer from 1 to {MAX_CHUNK_SIZE}")
    manifest_bytes = _manifest_bytes(manifest)

    source = _Source(payload, manifest_bytes, keys[0], level, chunk_size)
    sink = _Sink(out)
    try:
        pyrage.encrypt_io(source, sink, recipients)
    except Exception as exc:
        original = source.error or sink.error
        if original is not None:
            raise original from None
        raise ArchiveError(f"encryption failed: {exc}") from exc
    # pyrage drops errors from its final flush: look for them here.
    original = source.error or sink.error
    if original is not None:
        raise original
    if not source.done:
        raise ArchiveError("internal error: the archive was not written to the end")
    sink.flush()
    if sink.error is not None:
        raise sink.error
    return ArchiveSummary(
        payload_bytes=source.payload_bytes,
        payload_sha256=source.payload_sha256.hexdigest(),
        key_id=keys[0].key_id,
        manifest=json.loads(manifest_bytes),
        archive_bytes=sink.bytes,
        archive_sha256=sink.sha256.hexdigest(),
    )


# --------------------------------------------------------------------------- reading


class _Tap:
    """Wraps the archive stream for ``decrypt_io``: counts, hashes, keeps the first bytes and errors."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.error: BaseException | None = None
        self.bytes = 0
        self.sha256 = hashlib.sha256()
        self.head = b""
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        try:
            if size is None or size < 0:
                size = _COPY
            if self._pending:
                data, self._pending = self._pending[:size], self._pending[size:]
                return data
            data = self._stream.read(size)
            if data is None:
                raise TypeError("the archive stream returned None (non-blocking streams are not supported)")
            data = bytes(data)
        except BaseException as exc:
            self.error = exc
            raise
        self.bytes += len(data)
        self.sha256.update(data)
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        if len(data) > size:  # a misbehaving stream; pyrage would fail on it
            data, self._pending = data[:size], data[size:]
        return data


class _DecryptWorker:
    """Runs ``pyrage.decrypt_io(stream -> pipe)`` in a thread; the reader reads the pipe's other end.

    Holds no reference to the ``ArchiveReader`` so that an abandoned reader can be collected
    (its ``close()`` then stops this thread).
    """

    def __init__(self, stream: BinaryIO, identities: list[Any]) -> None:
        self.tap = _Tap(stream)
        self.error: BaseException | None = None
        self._cancelled = False
        read_fd, self._write_fd = os.pipe()
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self._write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self.pipe = open(read_fd, "rb", buffering=0)  # noqa: SIM115 -- closed in shutdown()
        self._thread = threading.Thread(
            target=self._run, args=(identities,), name="respaldo-archive-decrypt", daemon=True
        )
        self._thread.start()

    def _run(self, identities: list[Any]) -> None:
        try:
            pyrage.decrypt_io(self.tap, self, identities)
        except BaseException as exc:
            self.error = exc
        finally:
            os.close(self._write_fd)

    # The writer side, called by pyrage from the thread.
    def write(self, data: bytes) -> int:
        if self._cancelled:
            raise _Cancelled()
        return os.write(self._write_fd, data)

    def flush(self) -> None:
        return None

    def finish(self) -> None:
        """Wait for the thread (it has closed the pipe: the reader saw EOF)."""
        self._thread.join()

    def shutdown(self) -> None:
        """Stop the thread and close the pipe; safe to call more than once."""
        if self._thread.is_alive():
            self._cancelled = True
            # Drain until the thread closes its end: it is blocked in at most one write.
            with contextlib.suppress(OSError, ValueError):
                while self.pipe.read(_COPY):
                    pass
            self._thread.join()
        self.pipe.close()

    def failure(self) -> BaseException | None:
        """The thread's error as an ``ArchiveError`` (or the stream's own error), if any."""
        if self.tap.error is not None:
            return self.tap.error
        error = self.error
        if error is None or isinstance(error, _Cancelled):
            return None
        text = str(error)
        if isinstance(error, pyrage.DecryptError):
            head = self.tap.head.lstrip()
            if not head or not (head.startswith(_AGE_MAGICS) or any(m.startswith(head) for m in _AGE_MAGICS)):
                return ArchiveNotRecognized()
            if "No matching keys" in text:
                return ArchiveWrongKey()
            return ArchiveCorrupt(f"encryption header: {text}")
        if isinstance(error, OSError):
            return ArchiveCorrupt(f"encrypted data: {text}")
        return error


class ArchiveReader(io.RawIOBase):
    """A read-only file object over an archive's payload. Use ``open_archive`` to create one.

    ``manifest`` is available at once but is NOT authenticated until ``read`` has returned
    ``b""`` (which it only does after the MAC, sizes and hashes have been checked; otherwise it
    raises). ``summary`` is set at that point. Closing (or leaving the ``with`` block) stops the
    background thread and closes the pipe, also after an error or before the end.
    The input stream is read from that background thread until the reader is closed.
    """

    manifest: dict
    summary: ArchiveSummary | None

    def __init__(self, stream: BinaryIO, keys: list[_Key], max_payload_bytes: int | None) -> None:
        super().__init__()
        self.summary = None
        self.manifest = {}
        self._keys = {key.key_id: key for key in keys}
        self._macs = {key_id: hmac.new(key.auth_key, digestmod=hashlib.sha256) for key_id, key in self._keys.items()}
        self._max = max_payload_bytes
        self._sha = hashlib.sha256()
        self._payload_bytes = 0
        self._offset = 0  # position in the tar stream
        self._remaining = 0  # bytes left in the current payload member
        self._padding = 0
        self._next_chunk = 1
        self._eof = False
        self._failed: BaseException | None = None
        self._worker: _DecryptWorker | None = None
        self._zstd: Any = None
        try:
            self._worker = _DecryptWorker(stream, [key.identity for key in keys])
            self._zstd = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE).stream_reader(
                self._worker.pipe, read_size=128 << 10, read_across_frames=True, closefd=False
            )
            self._guarded(self._read_manifest)
        except BaseException:
            self.close()
            raise

    # -- io.RawIOBase

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(min(size, _COPY))
        count = self.readinto(buffer)
        return bytes(memoryview(buffer)[:count])

    def readall(self) -> bytes:
        parts = []
        while part := self.read(_COPY):
            parts.append(part)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        if not view:
            return 0
        return self._guarded(self._readinto, view)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._zstd is not None:
                with contextlib.suppress(Exception):
                    self._zstd.close()
            if self._worker is not None:
                self._worker.shutdown()
        finally:
            super().close()

    # -- internals

    def _guarded(self, func: Any, *args: Any) -> Any:
        if self._failed is not None:
            raise self._failed
        try:
            return func(*args)
        except ArchiveError as exc:
            error: BaseException = exc
        except zstandard.ZstdError as exc:
            error = ArchiveCorrupt(f"compressed data: {exc}")
        except BaseException as exc:
            error = exc
        # The decrypting thread's own error, if it has one, is the real cause.
        if self._worker is not None:
            self._worker.shutdown()
            error = self._worker.failure() or error
        self._failed = error
        raise error

    def _read_exact(self, size: int) -> bytes:
        parts = []
        wanted = size
        while wanted:
            data = self._zstd.read(min(wanted, _COPY))
            if not data:
                raise ArchiveCorrupt("the archive ends too early")
            parts.append(data)
            wanted -= len(data)
        self._offset += size
        return b"".join(parts)

    def _read_header(self) -> tarfile.TarInfo:
        block = self._read_exact(_BLOCK)
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except tarfile.EOFHeaderError:
            raise ArchiveCorrupt("the archive ends before its authentication record") from None
        except (tarfile.HeaderError, ValueError) as exc:
            raise ArchiveCorrupt(f"damaged tar header: {exc}") from None
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise ArchiveCorrupt(f"unexpected tar entry {info.name[:80]!r} of type {info.type!r}")
        if info.size < 0:
            raise ArchiveCorrupt("negative member size")
        return info

    def _mac_update(self, data: Any) -> None:
        for mac in self._macs.values():
            mac.update(data)

    def _read_small_member(self, info: tarfile.TarInfo, limit: int) -> bytes:
        if info.size > limit:
            raise ArchiveCorrupt(f"{info.name} is larger than {limit} bytes")
        data = self._read_exact(info.size)
        self._read_exact(_padding(info.size))
        return data

    def _read_manifest(self) -> None:
        info = self._read_header()
        if info.name != MANIFEST_NAME:
            raise ArchiveCorrupt(f"the first member is {info.name[:80]!r}, expected {MANIFEST_NAME!r}")
        data = self._read_small_member(info, MAX_MANIFEST_BYTES)
        self._mac_update(_mac_frame(MANIFEST_NAME, len(data)))
        self._mac_update(data)
        manifest = _strict_json(data, MANIFEST_NAME)
        if not isinstance(manifest, dict):
            raise ArchiveCorrupt(f"{MANIFEST_NAME} is not a JSON object")
        version = manifest.get("archive_version")
        if version != ARCHIVE_VERSION or isinstance(version, bool):
            raise ArchiveCorrupt(
                f"archive version {version!r} is not supported (this version of Respaldo reads {ARCHIVE_VERSION})"
            )
        self.manifest = manifest

    def _readinto(self, view: memoryview) -> int:
        while not self._eof:
            if self._remaining:
                count = self._zstd.readinto(view[: min(len(view), self._remaining)])
                if not count:
                    raise ArchiveCorrupt("the archive ends too early")
                data = view[:count]
                self._sha.update(data)
                self._mac_update(data)
                self._remaining -= count
                self._offset += count
                return count
            if self._padding:
                self._read_exact(self._padding)
                self._padding = 0
            self._next_member()
        return 0

    def _next_member(self) -> None:
        info = self._read_header()
        expected = _chunk_name(self._next_chunk)
        if info.name == expected:
            if info.size == 0:
                raise ArchiveCorrupt(f"{info.name} is empty")
            if self._max is not None and self._payload_bytes + info.size > self._max:
                raise ArchiveTooLarge(f"limit {self._max} bytes")
            self._next_chunk += 1
            self._payload_bytes += info.size
            self._remaining = info.size
            self._padding = _padding(info.size)
            self._mac_update(_mac_frame(info.name, info.size))
            return
        if info.name != AUTH_NAME:
            raise ArchiveCorrupt(f"unexpected member {info.name[:80]!r} where {expected!r} or {AUTH_NAME!r} belongs")
        auth = _strict_json(self._read_small_member(info, MAX_AUTH_BYTES), AUTH_NAME)
        self._read_tail()
        self._check_auth(auth)
        self._eof = True

    def _read_tail(self) -> None:
        """After auth.json: only zero blocks to a whole record, then the end of every layer."""
        tail = 0
        while data := self._zstd.read(_COPY):
            if data.count(0) != len(data):
                raise ArchiveCorrupt(f"data after {AUTH_NAME}")
            tail += len(data)
            if tail > _MAX_TAIL:
                raise ArchiveCorrupt(f"too much data after {AUTH_NAME}")
        if tail < 2 * _BLOCK or (self._offset + tail) % _RECORD:
            raise ArchiveCorrupt("the tar stream does not end properly")
        assert self._worker is not None
        if self._worker.pipe.read(1):
            raise ArchiveCorrupt("data after the compressed stream")
        self._worker.finish()
        failure = self._worker.failure()
        if failure is not None:
            raise failure

    def _check_auth(self, auth: Any) -> None:
        fields = {"alg", "key_id", "payload_bytes", "payload_sha256", "mac"}
        if not isinstance(auth, dict) or set(auth) != fields:
            raise ArchiveAuthError("the authentication record is malformed")
        if auth["alg"] != AUTH_ALG:
            raise ArchiveAuthError(f"unsupported algorithm {str(auth['alg'])[:40]!r}")
        key_id = auth["key_id"]
        if not isinstance(key_id, str) or key_id not in self._keys:
            raise ArchiveAuthError(f"made with a key this deployment does not have (key id {str(key_id)[:40]!r})")
        mac = auth["mac"]
        if not isinstance(mac, str) or not hmac.compare_digest(mac.encode(), self._macs[key_id].hexdigest().encode()):
            raise ArchiveAuthError("the authentication code does not match the contents")
        payload_sha256 = self._sha.hexdigest()
        if auth["payload_bytes"] != self._payload_bytes or isinstance(auth["payload_bytes"], bool):
            raise ArchiveAuthError("payload size does not match the authentication record")
        if auth["payload_sha256"] != payload_sha256:
            raise ArchiveAuthError("payload checksum does not match the authentication record")
        assert self._worker is not None
        self.summary = ArchiveSummary(
            payload_bytes=self._payload_bytes,
            payload_sha256=payload_sha256,
            key_id=key_id,
            manifest=self.manifest,
            archive_bytes=self._worker.tap.bytes,
            archive_sha256=self._worker.tap.sha256.hexdigest(),
        )


def open_archive(stream: BinaryIO, *, identities: Sequence[str], max_payload_bytes: int | None = None) -> ArchiveReader:
    """Open an archive for streaming its payload; the manifest is read (not yet trusted) at once.

    Raises ``KeyConfigError`` before touching ``stream`` if the keys are unusable, and
    ``ArchiveNotRecognized`` / ``ArchiveWrongKey`` / ``ArchiveCorrupt`` if the start of the
    file is already wrong. ``stream`` (anything with ``.read(n)``) is consumed from a
    background thread until the reader is closed; do not use it meanwhile. Errors raised by
    ``stream.read`` itself propagate unchanged.
    """
    keys = _load_keys(identities)
    if max_payload_bytes is not None and (
        isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) or max_payload_bytes < 0
    ):
        raise ValueError("max_payload_bytes must be None or a non-negative integer")
    return ArchiveReader(stream, keys, max_payload_bytes)


def verify_archive(
    stream: BinaryIO, *, identities: Sequence[str], max_payload_bytes: int | None = None
) -> ArchiveSummary:
    """Read a whole archive, discarding the payload; return its summary or raise ``ArchiveError``."""
    with open_archive(stream, identities=identities, max_payload_bytes=max_payload_bytes) as reader:
        buffer = bytearray(_COPY)
        while reader.readinto(buffer):
            pass
        assert reader.summary is not None
        return reader.summary
