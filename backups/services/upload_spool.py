"""An upload on its way in: its declared size, a private spool (or the temporary file Django already
wrote) with its SHA-256, and a sniff of what kind of file it is. Used by ``backups.services.upload``.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import stat
import tempfile
from typing import BinaryIO

from backups.conf import conf
from backups.exceptions import UploadRefused
from backups.formats.json.parser import COPY_BYTES, human_size, not_recognized

SNIFF_BYTES = 512


def too_large_refusal(limit: int) -> UploadRefused:
    """The refusal of a file larger than ``limit`` bytes."""
    return UploadRefused("too_large", "upload.too_large", limit=human_size(limit))


def _declared_size(source: BinaryIO) -> int | None:
    """The bytes ``source`` says it holds from its position: an upload's ``size``, or a regular file's size."""
    size = getattr(source, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    try:
        info = os.fstat(source.fileno())
        return info.st_size - source.tell() if stat.S_ISREG(info.st_mode) else None
    except (AttributeError, OSError, ValueError):  # no file descriptor (BytesIO...), or not seekable
        return None


def _django_temporary_file(source: BinaryIO) -> BinaryIO | None:
    """Django's own temporary file of an uploaded file (private to this process, removed with the
    request), reopened for reading; None for anything else (a file in memory, a command's file)."""
    path = getattr(source, "temporary_file_path", None)
    if path is None:
        return None
    try:
        return open(path(), "rb")  # noqa: SIM115 - closed by the caller's with
    except OSError:
        return None


class _Discard:
    """A sink for ``_spool_upload`` when the upload is read in place (only its size and SHA-256 are wanted)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        return None


def _private_file() -> BinaryIO:
    """An unnamed temporary file (mode 0600): the OS removes it when closed, or if we die."""
    directory = conf.upload_tmp_dir
    return tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by the caller's with


def _spool_upload(source: BinaryIO, out: BinaryIO, limit: int) -> tuple[int, str]:
    """Copy ``source`` into ``out``; stop as soon as more than ``limit`` bytes came. Returns (size, sha256)."""
    total = 0
    digest = hashlib.sha256()
    while True:
        data = source.read(min(COPY_BYTES, limit + 1 - total))
        if data is None:
            raise TypeError("the uploaded file returned None (non-blocking streams are not supported)")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("the uploaded file must be opened in binary mode")
        if not data:
            break
        total += len(data)
        if total > limit:
            raise too_large_refusal(limit)
        digest.update(data)
        out.write(data)
    out.flush()
    return total, digest.hexdigest()


_AGE_MAGICS = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")
_COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x04\x22\x4d\x18", "lz4"),
)
_BZIP2 = re.compile(rb"BZh[1-9]")
_SPACE_BYTES = re.compile(rb"[^ \t\r\n\f\v]")
# How SQL scripts start: a comment, a psql meta-command, or a statement keyword.
_SQL_START = re.compile(
    rb"(?:--|/\*|\\[a-z]|(?:begin|start|commit|rollback|end|abort|savepoint|create|alter|drop|insert|update|delete"
    rb"|merge|select|with|values|table|set|reset|show|copy|truncate|grant|revoke|comment|do|lock|vacuum|analyze"
    rb"|reindex|cluster|call|execute|prepare|declare|explain|listen|notify|refresh|security|use|pragma)\b)",
    re.IGNORECASE,
)


def _first_non_space(stream: BinaryIO, offset: int) -> int | None:
    stream.seek(offset)
    while chunk := stream.read(COPY_BYTES):
        if match := _SPACE_BYTES.search(chunk):
            return offset + match.start()
        offset += len(chunk)
    return None


def _sniff(upload: BinaryIO, size: int) -> str:
    """``"archive"`` or ``"json"``, from the content; anything else is refused here."""
    if size == 0:
        raise UploadRefused("empty", "upload.empty")
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    if head.startswith(b"PGDMP"):
        raise UploadRefused("pg_dump", "upload.pg_dump")
    for magic, name in _COMPRESSED:
        if head.startswith(magic):
            raise _compressed(name)
    if _BZIP2.match(head):
        raise _compressed("bzip2")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UploadRefused("not_utf8", "upload.not_utf8.utf16")
    start = _first_non_space(upload, len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
    if start is None:
        raise UploadRefused("empty", "upload.empty")
    upload.seek(start)
    text = upload.read(SNIFF_BYTES)
    if text.startswith(_AGE_MAGICS):
        return "archive"
    if text[:1] in (b"[", b"{"):
        return "json"
    if _SQL_START.match(text):
        raise UploadRefused("sql", "upload.sql")
    raise not_recognized()


def _compressed(name: str) -> UploadRefused:
    return UploadRefused("compressed", "upload.compressed", format=name)
