"""Reading an archive: age → zstd → tar members, checked member by member and authenticated at the end
(see ``backups.archive``). The age layer is decrypted in a background thread (``decrypt.DecryptWorker``)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import tarfile
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import zstandard

from backups.archive.common import (
    ARCHIVE_VERSIONS,
    AUTH_ALG,
    AUTH_NAME,
    BLOCK,
    COPY,
    MANIFEST_NAME,
    MAX_AUTH_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_TAIL,
    MAX_WINDOW_SIZE,
    MEDIA_PREFIX,
    RECORD,
    ArchiveAuthError,
    ArchiveCorrupt,
    ArchiveError,
    ArchiveKey,
    ArchiveSummary,
    ArchiveTooLarge,
    chunk_name,
    load_keys,
    mac_frame,
    padding,
    strict_json,
)
from backups.archive.decrypt import DecryptWorker
from backups.archive.media import MemberStream, media_entries

# Called with each media file's path and a stream of its bytes (the reader checks its SHA-256 after).
MediaSink = Callable[[str, MemberStream], None]

# --------------------------------------------------------------------------- reading


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

    def __init__(
        self,
        stream: BinaryIO,
        keys: list[ArchiveKey],
        max_payload_bytes: int | None,
        media_sink: MediaSink | None = None,
        verified: ArchiveSummary | None = None,
    ) -> None:
        super().__init__()
        self.summary = None
        self._verified = verified
        self.manifest = {}
        self._media_sink = media_sink
        self._media: list[dict] = []  # version 2: the manifest's media entries still to come
        self._media_bytes = 0
        self._keys = {key.key_id: key for key in keys}
        # A second reading of bytes verified already (``verified``) computes no MAC.
        self._macs = (
            {}
            if verified is not None
            else {key_id: hmac.new(key.auth_key, digestmod=hashlib.sha256) for key_id, key in self._keys.items()}
        )
        self._max = max_payload_bytes
        self._sha = hashlib.sha256()
        self._payload_bytes = 0
        self._offset = 0  # position in the tar stream
        self._remaining = 0  # bytes left in the current payload member
        self._padding = 0
        self._next_chunk = 1
        self._eof = False
        self._failed: BaseException | None = None
        self._worker: DecryptWorker | None = None
        self._zstd: Any = None
        try:
            self._worker = DecryptWorker(stream, [key.identity for key in keys])
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
        buffer = bytearray(min(size, COPY))
        count = self.readinto(buffer)
        return bytes(memoryview(buffer)[:count])

    def readall(self) -> bytes:
        parts = []
        while part := self.read(COPY):
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
            data = self._zstd.read(min(wanted, COPY))
            if not data:
                raise ArchiveCorrupt("the archive ends too early")
            parts.append(data)
            wanted -= len(data)
        self._offset += size
        return b"".join(parts)

    def _read_header(self) -> tarfile.TarInfo:
        block = self._read_exact(BLOCK)
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
        self._read_exact(padding(info.size))
        return data

    def _read_manifest(self) -> None:
        info = self._read_header()
        if info.name != MANIFEST_NAME:
            raise ArchiveCorrupt(f"the first member is {info.name[:80]!r}, expected {MANIFEST_NAME!r}")
        data = self._read_small_member(info, MAX_MANIFEST_BYTES)
        self._mac_update(mac_frame(MANIFEST_NAME, len(data)))
        self._mac_update(data)
        manifest = strict_json(data, MANIFEST_NAME)
        if not isinstance(manifest, dict):
            raise ArchiveCorrupt(f"{MANIFEST_NAME} is not a JSON object")
        version = manifest.get("archive_version")
        if version not in ARCHIVE_VERSIONS or isinstance(version, bool):
            raise ArchiveCorrupt(
                f"archive version {version!r} is not supported (this version of Respaldo reads {ARCHIVE_VERSIONS})"
            )
        if version >= 2:
            self._media = list(media_entries(manifest))
        self.manifest = manifest

    def _readinto(self, view: memoryview) -> int:
        while not self._eof:
            if self._remaining:
                count = self._zstd.readinto(view[: min(len(view), self._remaining)])
                if not count:
                    raise ArchiveCorrupt("the archive ends too early")
                data = view[:count]
                if self._verified is None:
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
        expected = chunk_name(self._next_chunk)
        if info.name.startswith(MEDIA_PREFIX) or (self._next_chunk == 0 and info.name != AUTH_NAME):
            self._read_media(info)
            return
        if info.name == expected:
            if info.size == 0:
                raise ArchiveCorrupt(f"{info.name} is empty")
            if self._max is not None and self._payload_bytes + info.size > self._max:
                raise ArchiveTooLarge(f"limit {self._max} bytes")
            self._next_chunk += 1
            self._payload_bytes += info.size
            self._remaining = info.size
            self._padding = padding(info.size)
            self._mac_update(mac_frame(info.name, info.size))
            return
        if info.name != AUTH_NAME:
            raise ArchiveCorrupt(f"unexpected member {info.name[:80]!r} where {expected!r} or {AUTH_NAME!r} belongs")
        if self._media:
            raise ArchiveCorrupt(f"media file {self._media[0]['path'][:80]!r} is missing")
        auth = strict_json(self._read_small_member(info, MAX_AUTH_BYTES), AUTH_NAME)
        self._read_tail()
        self._check_auth(auth)
        self._eof = True

    def _read_media(self, info: tarfile.TarInfo) -> None:
        """One media member, in the manifest's order and size, handed to the sink and checked."""
        self._next_chunk = 0  # the payload is over: no chunk may follow
        if not self._media or info.name != MEDIA_PREFIX + self._media[0]["path"]:
            expected = MEDIA_PREFIX + self._media[0]["path"] if self._media else AUTH_NAME
            raise ArchiveCorrupt(f"unexpected member {info.name[:80]!r} where {expected[:80]!r} belongs")
        entry = self._media.pop(0)
        if info.size != entry["size"]:
            raise ArchiveCorrupt(f"{info.name[:80]} does not have the size the manifest says")
        self._media_bytes += info.size
        if self._max is not None and self._payload_bytes + self._media_bytes > self._max:
            raise ArchiveTooLarge(f"limit {self._max} bytes")
        self._mac_update(mac_frame(info.name, info.size))

        def read_exact(size: int) -> bytes:
            data = self._read_exact(size)
            self._mac_update(data)
            return data

        member = MemberStream(read_exact, info.size)
        if self._media_sink is not None:
            self._media_sink(entry["path"], member)
        member.drain()
        self._read_exact(padding(info.size))
        if member.sha256.hexdigest() != entry["sha256"]:
            raise ArchiveAuthError(f"media file {entry['path'][:80]!r} does not match its checksum")

    def _read_tail(self) -> None:
        """After auth.json: only zero blocks to a whole record, then the end of every layer."""
        tail = 0
        while data := self._zstd.read(COPY):
            if data.count(0) != len(data):
                raise ArchiveCorrupt(f"data after {AUTH_NAME}")
            tail += len(data)
            if tail > MAX_TAIL:
                raise ArchiveCorrupt(f"too much data after {AUTH_NAME}")
        if tail < 2 * BLOCK or (self._offset + tail) % RECORD:
            raise ArchiveCorrupt("the tar stream does not end properly")
        assert self._worker is not None
        if self._worker.pipe.read(1):
            raise ArchiveCorrupt("data after the compressed stream")
        self._worker.finish()
        failure = self._worker.failure()
        if failure is not None:
            raise failure

    def _check_as_verified(self, auth: dict) -> None:
        """The end of a second reading: the record and sizes must be those the verification found."""
        verified = self._verified
        assert verified is not None and self._worker is not None
        same = (
            auth["key_id"] == verified.key_id
            and auth["payload_bytes"] == self._payload_bytes == verified.payload_bytes
            and auth["payload_sha256"] == verified.payload_sha256
            and self._worker.tap.bytes == verified.archive_bytes
            and self.manifest == verified.manifest
        )
        if not same:
            raise ArchiveAuthError("the archive differs from the copy that was verified")
        self.summary = verified

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
        if self._verified is not None:
            self._check_as_verified(auth)
            return
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


def open_archive(
    stream: BinaryIO,
    *,
    identities: Sequence[str],
    max_payload_bytes: int | None = None,
    media_sink: MediaSink | None = None,
    verified: ArchiveSummary | None = None,
) -> ArchiveReader:
    """Open an archive for streaming its payload; the manifest is read (not yet trusted) at once.

    ``media_sink(path, stream)`` is called for each media file (version 2) once the payload
    has been read, before ``read`` returns its final ``b""``; the file's SHA-256 is checked
    after it returns, and the MAC over everything at the end. ``max_payload_bytes`` bounds
    the payload and the media together.

    Raises ``KeyConfigError`` before touching ``stream`` if the keys are unusable, and
    ``ArchiveNotRecognized`` / ``ArchiveWrongKey`` / ``ArchiveCorrupt`` if the start of the
    file is already wrong. ``stream`` (anything with ``.read(n)``) is consumed from a
    background thread until the reader is closed; do not use it meanwhile. Errors raised by
    ``stream.read`` itself propagate unchanged.
    """
    keys = load_keys(identities)
    if max_payload_bytes is not None and (
        isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) or max_payload_bytes < 0
    ):
        raise ValueError("max_payload_bytes must be None or a non-negative integer")
    return ArchiveReader(stream, keys, max_payload_bytes, media_sink, verified)


def verify_archive(
    stream: BinaryIO, *, identities: Sequence[str], max_payload_bytes: int | None = None
) -> ArchiveSummary:
    """Read a whole archive, discarding the payload; return its summary or raise ``ArchiveError``."""
    with open_archive(stream, identities=identities, max_payload_bytes=max_payload_bytes) as reader:
        buffer = bytearray(COPY)
        while reader.readinto(buffer):
            pass
        assert reader.summary is not None
        return reader.summary
