"""The backup archive format (backups/archive/): what is written reads back, member layout, file
interfaces, parameters, multithreaded compression. No database, no Django.
"""

import hashlib
import io
import json
import os
import random
import shutil

import pytest

from backups.archive import (
    open_archive,
    verify_archive,
    write_archive,
)
from backups.tests.archive.helpers import (
    CHUNK,
    K1,
    MANIFEST,
    age_plaintext,
    doc_auth,
    doc_key_id,
    make,
    read_all,
    tar_members,
)

# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK * 3 + 7])
def test_round_trip(size):
    payload = random.Random(size).randbytes(size)
    data, written = make(payload, manifest={**MANIFEST, "note": "ñandú €"})
    got, summary, manifest = read_all(data, identities=[K1])
    assert got == payload
    assert manifest == {**MANIFEST, "note": "ñandú €", "archive_version": 1}
    assert summary == written
    assert summary.payload_bytes == size
    assert summary.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert summary.archive_bytes == len(data)
    assert summary.archive_sha256 == hashlib.sha256(data).hexdigest()
    assert summary.key_id == doc_key_id(K1)
    assert summary.manifest == manifest
    assert verify_archive(io.BytesIO(data), identities=[K1]) == written


@pytest.mark.parametrize(("size", "chunks"), [(0, 0), (1, 1), (CHUNK, 1), (CHUNK * 3 + 7, 4)])
def test_member_layout(size, chunks):
    payload = os.urandom(size)
    data, summary = make(payload)
    members = tar_members(age_plaintext(data, K1))
    names = [name for name, _ in members]
    assert names == ["manifest.json", *[f"payload/{i:06d}" for i in range(1, chunks + 1)], "auth.json"]
    assert all(0 < len(body) <= CHUNK for name, body in members if name.startswith("payload/"))
    assert b"".join(body for name, body in members if name.startswith("payload/")) == payload
    auth = json.loads(members[-1][1])
    assert auth == json.loads(doc_auth(members[:-1], K1))  # the documented MAC construction
    assert auth["payload_bytes"] == size and auth["payload_sha256"] == summary.payload_sha256


def test_manifest_archive_version_is_overwritten_and_format_version_required():
    data, summary = make(b"abc", manifest={"format_version": 1, "archive_version": 99})
    assert summary.manifest["archive_version"] == 1
    assert read_all(data)[2]["archive_version"] == 1
    with pytest.raises(ValueError, match="format_version"):
        make(b"abc", manifest={"schema": "x"})


def test_reader_file_interfaces():
    payload = os.urandom(CHUNK * 5 + 3)
    data, written = make(payload)
    with open_archive(io.BytesIO(data), identities=[K1]) as reader:
        assert reader.readable() and not reader.seekable() and not reader.writable()
        assert reader.summary is None  # nothing is authenticated yet
        assert reader.read(0) == b""
        first = reader.read(7)
        buf = bytearray(100)
        n = reader.readinto(buf)
        out = io.BytesIO()
        shutil.copyfileobj(reader, out, 333)
        assert first + bytes(buf[:n]) + out.getvalue() == payload
        assert reader.summary == written
        assert reader.read() == b"" and reader.read(10) == b"" and reader.readinto(buf) == 0
    assert reader.closed
    with pytest.raises(ValueError):
        reader.read(1)


def test_payload_read_in_short_pieces_like_a_pipe():
    payload = os.urandom(CHUNK * 4 + 1)

    class Trickle:
        def __init__(self):
            self.pos = 0

        def read(self, n):
            n = min(n, 37, len(payload) - self.pos)
            self.pos += n
            return payload[self.pos - n : self.pos]

    out = io.BytesIO()
    summary = write_archive(Trickle(), out, manifest=MANIFEST, identities=[K1], chunk_size=CHUNK)
    members = tar_members(age_plaintext(out.getvalue(), K1))
    assert [len(b) for n, b in members if n.startswith("payload/")] == [CHUNK] * 4 + [1]
    assert read_all(out.getvalue())[0] == payload and summary.payload_bytes == len(payload)


def test_write_propagates_payload_and_output_errors():
    class FailingPayload:
        def read(self, n):
            raise OSError("pg_dump exited with status 1")

    with pytest.raises(OSError, match="pg_dump exited"):
        write_archive(FailingPayload(), io.BytesIO(), manifest=MANIFEST, identities=[K1])

    class FailingOut:
        def write(self, b):
            raise OSError("disk full")

    # A small archive fits in pyrage's internal buffer, whose final flush error pyrage drops.
    with pytest.raises(OSError, match="disk full"):
        write_archive(io.BytesIO(b"tiny"), FailingOut(), manifest=MANIFEST, identities=[K1])
    with pytest.raises(OSError, match="disk full"):
        write_archive(io.BytesIO(os.urandom(300_000)), FailingOut(), manifest=MANIFEST, identities=[K1])

    class NoneReturningOut(io.BytesIO):
        def write(self, b):
            super().write(b)

    out = NoneReturningOut()
    write_archive(io.BytesIO(b"abc"), out, manifest=MANIFEST, identities=[K1])
    assert read_all(out.getvalue())[0] == b"abc"


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="level"):
        make(b"", level=22)  # needs a window larger than the reader accepts
    with pytest.raises(ValueError, match="chunk_size"):
        make(b"", chunk_size=0)
    data, _ = make(os.urandom(5000), level=19)
    assert read_all(data)[1].payload_bytes == 5000
    with pytest.raises(ValueError):
        open_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=-1)
    with pytest.raises(ValueError, match="threads"):
        make(b"", threads=-1)


def test_multithreaded_compression_reads_back_and_is_standard_zstd():
    payload = b"".join(os.urandom(64) * 512 for _ in range(200))  # ~6.5 MB, compressible: several zstd jobs
    data, summary = make(payload, threads=2, level=1)
    assert read_all(data)[0] == payload and summary.payload_bytes == len(payload)
    members = dict(tar_members(age_plaintext(data, K1)))  # any zstd decoder, any tar reader
    assert b"".join(body for name, body in sorted(members.items()) if name.startswith("payload/")) == payload
