"""Writing an archive: payload → tar members → zstd → age, authenticated (see ``backups.archive``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import pyrage
import zstandard

from backups.archive.common import (
    ARCHIVE_VERSION,
    ARCHIVE_VERSION_NO_MEDIA,
    AUTH_ALG,
    AUTH_NAME,
    BLOCK,
    COPY,
    DEFAULT_CHUNK_SIZE,
    MANIFEST_NAME,
    MAX_CHUNK_SIZE,
    MAX_LEVEL,
    MAX_MANIFEST_BYTES,
    MEDIA_PREFIX,
    MIN_LEVEL,
    PAYLOAD_READ,
    PIECE,
    RECORD,
    ArchiveError,
    ArchiveKey,
    ArchiveSummary,
    chunk_name,
    load_keys,
    mac_frame,
    padding,
    parse_recipient,
    tar_header,
)
from backups.archive.media import MediaFile, media_path_ok, stream_media_file

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

    def __init__(
        self,
        payload: BinaryIO,
        manifest_bytes: bytes,
        key: ArchiveKey,
        level: int,
        chunk_size: int,
        media: Sequence[MediaFile] = (),
        threads: int = 0,
    ) -> None:
        self._payload = payload
        self._media = media
        self._manifest_bytes = manifest_bytes
        self._key = key
        self._chunk_size = chunk_size
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads).compressobj()
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
            return self._read(size if size is not None and size > 0 else COPY)
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
            data = self._payload.read(min(len(buffer) - filled, PAYLOAD_READ))
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
            offset += BLOCK + size + padding(size)
            return tar_header(name, size, mtime)

        manifest = self._manifest_bytes
        mac.update(mac_frame(MANIFEST_NAME, len(manifest)))
        mac.update(manifest)
        yield member(MANIFEST_NAME, len(manifest)) + manifest + bytes(padding(len(manifest)))

        buffer = bytearray(self._chunk_size)
        index = 0
        while True:
            size = self._read_chunk(buffer)
            if size == 0:
                break
            index += 1
            chunk = memoryview(buffer)[:size]
            name = chunk_name(index)
            mac.update(mac_frame(name, size))
            mac.update(chunk)
            self.payload_sha256.update(chunk)
            self.payload_bytes += size
            yield member(name, size)
            for start in range(0, size, PIECE):
                yield chunk[start : start + PIECE]
            if padding(size):
                yield bytes(padding(size))
            if size < len(buffer):
                break  # short chunk: the payload hit EOF; do not read it again
        del buffer

        for media in self._media:
            name = MEDIA_PREFIX + media.path
            mac.update(mac_frame(name, media.size))
            yield member(name, media.size)
            yield from stream_media_file(media, mac)
            if padding(media.size):
                yield bytes(padding(media.size))

        auth = {
            "alg": AUTH_ALG,
            "key_id": self._key.key_id,
            "payload_bytes": self.payload_bytes,
            "payload_sha256": self.payload_sha256.hexdigest(),
            "mac": mac.hexdigest(),
        }
        auth_bytes = json.dumps(auth, sort_keys=True).encode()
        yield member(AUTH_NAME, len(auth_bytes)) + auth_bytes + bytes(padding(len(auth_bytes)))
        # End of archive: two zero blocks, then zeros up to a whole record (as tarfile does).
        tail = 2 * BLOCK + (-(offset + 2 * BLOCK) % RECORD)
        yield bytes(tail)
        self.done = True


def _manifest_bytes(manifest: dict, media: Sequence[MediaFile] | None) -> bytes:
    """The stored manifest: the caller's, with ``archive_version`` and (version 2) the ``media`` list."""
    if not isinstance(manifest, dict):
        raise TypeError("manifest must be a dict")
    if manifest.get("format_version") not in (1, 2) or isinstance(manifest.get("format_version"), bool):
        raise ValueError('manifest must contain "format_version": 1 or 2')
    stored = dict(manifest)
    stored["archive_version"] = ARCHIVE_VERSION_NO_MEDIA
    if media is not None:
        paths = [item.path for item in media]
        if not all(media_path_ok(path) for path in paths) or len(set(paths)) != len(paths):
            raise ValueError("media paths must be unique, relative and without '.' or '..' parts")
        stored["archive_version"] = ARCHIVE_VERSION
        stored["media"] = [item.entry() for item in media]
    data = json.dumps(stored, ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False).encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def _recipients(key: ArchiveKey, extra_recipients: Sequence[str]) -> list[Any]:
    """The deployment's public key, then each escrow key once."""
    if isinstance(extra_recipients, str | bytes):
        raise TypeError("extra_recipients must be a list of public keys, not a single string")
    recipients = [key.identity.to_public()]
    seen = {key.public}
    for n, value in enumerate(extra_recipients, 1):
        recipient = parse_recipient(value, n)
        if str(recipient) not in seen:
            seen.add(str(recipient))
            recipients.append(recipient)
    return recipients


def write_archive(
    payload: BinaryIO,
    out: BinaryIO,
    *,
    manifest: dict,
    identities: Sequence[str],
    extra_recipients: Sequence[str] = (),
    level: int = 3,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    media: Sequence[MediaFile] | None = None,
    threads: int = 0,
) -> ArchiveSummary:
    """Write an archive of ``payload`` (read with ``.read(n)`` until EOF) to ``out`` (``.write(b)``).

    ``media``: the clinic's files, written after the payload as ``media/<path>`` members
    (archive version 2, the manifest's ``media`` list filled in here); ``None`` writes a
    version-1 archive. A file whose size or SHA-256 is not what its ``MediaFile`` says raises
    ``MediaChanged``.

    Encrypted to ``identities[0]``'s public key plus ``extra_recipients`` (escrow keys that can
    decrypt but cannot authenticate), authenticated with ``identities[0]``. ``out`` is neither
    flushed-and-closed nor seeked: the caller owns it (it is flushed if it has ``flush``).

    ``threads``: zstd worker threads (0 compresses in the calling thread); any standard zstd
    decoder reads either kind of frame.

    Errors raised by ``payload.read`` or ``out.write`` propagate unchanged. ``KeyConfigError``
    if no identity is configured or a key string is malformed; ``ValueError`` for a bad
    manifest/level/chunk_size.
    """
    keys = load_keys(identities)
    recipients = _recipients(keys[0], extra_recipients)
    if isinstance(level, bool) or not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be an integer from 1 to {MAX_CHUNK_SIZE}")
    manifest_bytes = _manifest_bytes(manifest, media)

    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 64:
        raise ValueError("threads must be an integer from 0 to 64")
    source = _Source(payload, manifest_bytes, keys[0], level, chunk_size, media or (), threads)
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
