"""Media members of a version-2 archive: a clinic's files, after the payload (see ``backups.archive``).

Each file is one tar member ``media/<path>``, in the order of the manifest's ``media`` list
(``{"path", "size", "sha256"}``), which the writer fills in. The writer streams each file in
pieces and refuses one whose size or SHA-256 changed since it was listed; the reader checks
each member's name and size against the manifest before reading it, hands its bytes to the
caller's ``media_sink`` as they come, and its SHA-256 after it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from backups.archive.common import COPY, MEDIA_PREFIX, PAYLOAD_READ, ArchiveCorrupt, ArchiveError

_SHA256 = re.compile(r"[0-9a-f]{64}")
# The tar name must fit a ustar header: at most 255 bytes (prefix/name split at a slash).
_MAX_NAME_BYTES = 255


class MediaChanged(ArchiveError):
    """A file changed (size or content) between being listed and being written."""

    code = "media_changed"

    message = "A clinic file changed while the backup was being written."


def media_path_ok(path: object) -> bool:
    """Whether ``path`` is a safe relative file path: no absolute path, ``..``, ``.`` or empty parts."""
    if not isinstance(path, str) or not path or "\0" in path or "\\" in path:
        return False
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return False
    return len((MEDIA_PREFIX + path).encode("utf-8")) <= _MAX_NAME_BYTES


@dataclass(frozen=True)
class MediaFile:
    """A file to put in an archive: its path (relative to the clinic's media root), size, SHA-256, opener."""

    path: str
    size: int
    sha256: str
    open: Callable[[], BinaryIO]

    def entry(self) -> dict[str, Any]:
        """The file's entry in the manifest's ``media`` list."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def media_entries(manifest: dict) -> list[dict[str, Any]]:
    """The manifest's ``media`` list, checked (``ArchiveCorrupt`` if malformed)."""
    entries = manifest.get("media")
    if not isinstance(entries, list):
        raise ArchiveCorrupt('a version 2 manifest needs a "media" list')
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise ArchiveCorrupt("malformed media entry in the manifest")
        path, size, sha256 = entry["path"], entry["size"], entry["sha256"]
        if not media_path_ok(path) or path in seen:
            raise ArchiveCorrupt(f"invalid or repeated media path {str(path)[:80]!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ArchiveCorrupt(f"invalid size for media file {path[:80]!r}")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ArchiveCorrupt(f"invalid sha256 for media file {path[:80]!r}")
        seen.add(path)
    return entries


def stream_media_file(media: MediaFile, mac: Any) -> Iterator[bytes]:
    """The file's bytes in pieces, fed to ``mac``; ``MediaChanged`` if they are not what was listed."""
    digest = hashlib.sha256()
    left = media.size
    with media.open() as handle:
        while left:
            data = handle.read(min(left, PAYLOAD_READ))
            if not data:
                raise MediaChanged(f"{media.path} is shorter than listed")
            data = bytes(data)
            digest.update(data)
            mac.update(data)
            left -= len(data)
            yield data
        if handle.read(1):
            raise MediaChanged(f"{media.path} is longer than listed")
    if digest.hexdigest() != media.sha256:
        raise MediaChanged(f"{media.path} changed after it was listed")


class MemberStream:
    """A read-only stream over one media member's content, fed to the reader's MAC and a SHA-256."""

    def __init__(self, read_exact: Callable[[int], bytes], size: int) -> None:
        self._read_exact = read_exact
        self.left = size
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the member (all that is left when negative); ``b""`` at its end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(COPY), b""))
        wanted = min(size, self.left, COPY)
        if not wanted:
            return b""
        data = self._read_exact(wanted)
        self.sha256.update(data)
        self.left -= len(data)
        return data

    def drain(self) -> None:
        """Read whatever the sink left unread."""
        while self.read(COPY):
            pass
