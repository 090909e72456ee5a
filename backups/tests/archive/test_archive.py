"""Tests of the backup archive format (backups/archive.py). No database, no Django.

Forged archives are built here with the standard library (tarfile), zstandard and pyrage,
independently of the writer, following docs/archive-format.md.
"""

import gc
import hashlib
import hmac
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519

from backups import archive
from backups.archive import (
    ArchiveAuthError,
    ArchiveCorrupt,
    ArchiveError,
    ArchiveNotRecognized,
    ArchiveTooLarge,
    ArchiveWrongKey,
    KeyConfigError,
    generate_identity,
    identity_public_key,
    open_archive,
    verify_archive,
    write_archive,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
CHUNK = 1000  # small chunks: many members from small payloads
K1 = generate_identity()
K2 = generate_identity()
ESCROW = generate_identity()
MANIFEST = {"format_version": 1, "schema": "clinic_a", "tables": {"patients": 3}}


def make(payload: bytes, *, identities=(K1,), extra=(), chunk_size=CHUNK, manifest=MANIFEST, **kw):
    out = io.BytesIO()
    summary = write_archive(
        io.BytesIO(payload),
        out,
        manifest=manifest,
        identities=list(identities),
        extra_recipients=list(extra),
        chunk_size=chunk_size,
        **kw,
    )
    return out.getvalue(), summary


def read_all(data: bytes, identities=(K1,), **kw) -> tuple[bytes, archive.ArchiveSummary, dict]:
    with open_archive(io.BytesIO(data), identities=list(identities), **kw) as reader:
        payload = reader.read()
        return payload, reader.summary, reader.manifest


def age_plaintext(data: bytes, identity: str) -> bytes:
    return pyrage.decrypt(data, [x25519.Identity.from_str(identity)])


def tar_members(plaintext: bytes) -> list[tuple[str, bytes]]:
    tar_bytes = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plaintext)).read()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


# --- an independent implementation of the documented format, for forging ---------------


def doc_auth_key(identity: str) -> bytes:
    return hmac.new(identity.encode(), b"respaldo/archive-auth/v1", hashlib.sha256).digest()


def doc_key_id(identity: str) -> str:
    return hashlib.sha256(identity_public_key(identity).encode()).hexdigest()[:16]


def doc_auth(members, identity: str, *, key_id: str | None = None) -> bytes:
    mac = hmac.new(doc_auth_key(identity), digestmod=hashlib.sha256)
    payload = b"".join(data for name, data in members if name.startswith("payload/"))
    for name, data in members:
        mac.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return json.dumps(
        {
            "alg": "HMAC-SHA256",
            "key_id": key_id or doc_key_id(identity),
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "mac": mac.hexdigest(),
        }
    ).encode()


def tar_stream(members, *, fmt=tarfile.USTAR_FORMAT, tweak=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if tweak:
                tweak(info)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seal(plaintext: bytes, recipients=(K1,)) -> bytes:
    """Encrypt with public keys only, as anyone could."""
    return pyrage.encrypt(plaintext, [x25519.Recipient.from_str(identity_public_key(r)) for r in recipients])


def forge(members, *, recipients=(K1,), **kw) -> bytes:
    return seal(zstandard.ZstdCompressor().compress(tar_stream(members, **kw)), recipients)


def good_members(payload=b"x" * 2500, chunk=CHUNK):
    manifest = json.dumps({"format_version": 1, "archive_version": 1}).encode()
    members = [("manifest.json", manifest)]
    for i in range(0, len(payload), chunk):
        members.append((f"payload/{i // chunk + 1:06d}", payload[i : i + chunk]))
    return members


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def decrypt_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "respaldo-archive-decrypt"]


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


# --- keys ------------------------------------------------------------------------------


def test_key_rotation():
    payload = os.urandom(3000)
    data, summary = make(payload, identities=[K1])
    assert read_all(data, identities=[K2, K1])[0] == payload
    with pytest.raises(ArchiveWrongKey, match="no longer has"):
        verify_archive(io.BytesIO(data), identities=[K2])
    # After rotation the first key encrypts and authenticates; the old one is only a fallback.
    data2, summary2 = make(payload, identities=[K2, K1])
    assert summary2.key_id == doc_key_id(K2) != summary.key_id
    assert verify_archive(io.BytesIO(data2), identities=[K2]).payload_sha256 == summary.payload_sha256
    with pytest.raises(ArchiveWrongKey):
        verify_archive(io.BytesIO(data2), identities=[K1])


def test_key_configuration_errors_fail_closed():
    class Untouchable:
        def read(self, n):
            raise AssertionError("the stream must not be read")

        def write(self, b):
            raise AssertionError("the output must not be written")

    for call in (
        lambda ids: write_archive(Untouchable(), Untouchable(), manifest=MANIFEST, identities=ids),
        lambda ids: open_archive(Untouchable(), identities=ids),
        lambda ids: verify_archive(Untouchable(), identities=ids),
    ):
        with pytest.raises(KeyConfigError, match="no archive key"):
            call([])
        bad = "AGE-SECRET-KEY-1NOTAREALKEYATALLQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
        with pytest.raises(KeyConfigError) as info:
            call([K1, bad])
        assert bad not in str(info.value) and "#2" in str(info.value)
        with pytest.raises(TypeError):
            call(K1)  # a bare string is not a list of keys
    with pytest.raises(KeyConfigError) as info:
        make(b"", extra=[ESCROW])  # a secret key where a public key belongs: not echoed
    assert ESCROW not in str(info.value)
    with pytest.raises(KeyConfigError):
        make(b"", extra=["age1notakey"])
    with pytest.raises(KeyConfigError):
        identity_public_key("not a key")


def test_identity_helpers_and_canonical_form():
    identity = generate_identity()
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert identity_public_key(identity) == str(x25519.Identity.from_str(identity).to_public())
    assert identity_public_key(identity).startswith("age1")
    # Surrounding whitespace (a key read from a file) and lower case name the same key.
    data, summary = make(b"abc", identities=[f"  {identity.lower()}\n"])
    assert summary.key_id == doc_key_id(identity)
    assert read_all(data, identities=[identity])[0] == b"abc"


# --- escrow ----------------------------------------------------------------------------


def test_escrow_can_decrypt_but_not_authenticate():
    payload = os.urandom(2500)
    data, summary = make(payload, extra=[identity_public_key(ESCROW)])
    members = tar_members(age_plaintext(data, ESCROW))
    assert b"".join(b for n, b in members if n.startswith("payload/")) == payload
    with pytest.raises(ArchiveAuthError, match="key this deployment does not have"):
        verify_archive(io.BytesIO(data), identities=[ESCROW])
    assert verify_archive(io.BytesIO(data), identities=[K1]) == summary


def _escrow_tamper(auth_for):
    """The escrow holder decrypts, edits the payload and re-encrypts to the deployment's key."""
    data, _ = make(b"A" * 2500, extra=[identity_public_key(ESCROW)])
    members = tar_members(age_plaintext(data, ESCROW))
    members = [(n, b.replace(b"A", b"B", 1) if n == "payload/000002" else b) for n, b in members]
    body, auth = members[:-1], members[-1][1]
    return forge([*body, ("auth.json", auth_for(body, auth))], recipients=[K1, ESCROW])


@pytest.mark.parametrize(
    "auth_for",
    [
        pytest.param(lambda body, auth: auth, id="auth-unchanged"),
        pytest.param(lambda body, auth: doc_auth(body, ESCROW), id="mac-with-escrow-key"),
        pytest.param(lambda body, auth: doc_auth(body, ESCROW, key_id=doc_key_id(K1)), id="escrow-mac-deploy-keyid"),
        pytest.param(
            lambda body, auth: json.dumps(
                {**json.loads(doc_auth(body, ESCROW)), "key_id": doc_key_id(K1), "mac": json.loads(auth)["mac"]}
            ).encode(),
            id="hashes-updated-old-mac",
        ),
    ],
)
def test_escrow_tampering_is_refused(auth_for):
    forged = _escrow_tamper(auth_for)
    with pytest.raises(ArchiveAuthError):
        verify_archive(io.BytesIO(forged), identities=[K1])


# --- damage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    payload = random.Random(7).randbytes(200_000)  # several 64 KiB age chunks
    data, _ = make(payload, chunk_size=50_000)
    return data


def _open_fails(data: bytes) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        verify_archive(io.BytesIO(data), identities=[K1])
    return info.value


def test_bit_flips_anywhere_are_refused(sample):
    header_end = sample.index(b"\n---") + 1
    header_end = sample.index(b"\n", header_end) + 1
    lines = sample[:header_end].split(b"\n")
    # age cannot tell a damaged recipient stanza from one made for another key.
    stanza_start = len(lines[0]) + 1
    stanza_end = stanza_start + len(lines[1]) + 1 + len(lines[2]) + 1
    positions = {0, 5, stanza_start + 3, header_end - 5, header_end, header_end + 1, len(sample) // 2}
    positions |= {len(sample) - 1, len(sample) - 17, *range(1, len(sample), len(sample) // 40)}
    for pos in sorted(positions):
        damaged = bytearray(sample)
        damaged[pos] ^= 1 << (pos % 8)
        error = _open_fails(bytes(damaged))
        allowed = (ArchiveCorrupt, ArchiveNotRecognized)
        if stanza_start <= pos < stanza_end:
            allowed += (ArchiveWrongKey,)
        assert isinstance(error, allowed), (pos, error)
    assert isinstance(_open_fails(bytes([sample[0] ^ 1]) + sample[1:]), ArchiveNotRecognized)
    assert isinstance(_open_fails(sample[:-1] + bytes([sample[-1] ^ 0x80])), ArchiveCorrupt)


def test_a_second_reading_of_verified_bytes_skips_the_mac_but_still_refuses_other_or_damaged_bytes(sample):
    """``verified=``: the payload of the very bytes verified comes back whole, with their summary;
    other bytes (another archive made with the same key) or damaged bytes are still refused."""
    summary = verify_archive(io.BytesIO(sample), identities=[K1])
    payload, again, manifest = read_all(sample, verified=summary)
    assert payload == read_all(sample)[0] and again == summary and manifest == summary.manifest

    same_key_other, _ = make(os.urandom(5000))  # authentic, but not what was verified
    reader = open_archive(io.BytesIO(same_key_other), identities=[K1], verified=summary)
    with reader, pytest.raises(ArchiveAuthError, match="differs from the copy that was verified"):
        reader.read()
    for pos in (len(sample) // 2, len(sample) - 17):  # age authenticates every chunk it decrypts
        damaged = bytearray(sample)
        damaged[pos] ^= 0x10
        with pytest.raises(ArchiveCorrupt):
            read_all(bytes(damaged), verified=summary)


def test_truncation_is_refused(sample):
    header_end = sample.index(b"\n", sample.index(b"\n---") + 1) + 1
    cuts = [1, 10, 21, 40, header_end - 1, header_end, header_end + 1, header_end + 100, len(sample) // 2]
    for cut in [*cuts, len(sample) - 17, len(sample) - 1]:
        assert isinstance(_open_fails(sample[:cut]), ArchiveCorrupt), cut
    for cut in [len(sample) - 17, len(sample) - 1]:  # the start is intact: opening works, the end fails
        with open_archive(io.BytesIO(sample[:cut]), identities=[K1]) as reader:
            with pytest.raises(ArchiveCorrupt, match="damaged or incomplete"):
                reader.read()
            with pytest.raises(ArchiveCorrupt):  # errors are sticky: never a clean EOF later
                reader.read(1)
            assert reader.summary is None
    assert isinstance(_open_fails(sample + b"\0"), ArchiveCorrupt)


def test_files_that_are_not_archives():
    sql = b"-- PostgreSQL database dump\nSET statement_timeout = 0;\nCREATE TABLE p (id int);\n" * 20
    plain_tar = zstandard.ZstdCompressor().compress(tar_stream(good_members()))
    for data in [b"", random.Random(1).randbytes(5000), sql, plain_tar, b"\n\n"]:
        error = _open_fails(data)
        assert isinstance(error, ArchiveNotRecognized), (data[:20], error)
        assert "not a backup made by Respaldo" in str(error)


# --- forgeries with the public key only -------------------------------------------------


def test_documented_format_is_accepted():
    """Positive control for the forgeries below: built by hand from the documentation."""
    members = good_members(b"hello" * 700)
    data = forge([*members, ("auth.json", doc_auth(members, K1))])
    payload, summary, manifest = read_all(data)
    assert payload == b"hello" * 700 and manifest["format_version"] == 1
    assert summary.key_id == doc_key_id(K1)


def _symlink(info):
    if info.name == "payload/000001":
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        info.size = 0


def _hardlink(info):
    if info.name == "payload/000001":  # keeps its data: only the entry type differs
        info.type = tarfile.LNKTYPE
        info.linkname = "manifest.json"


def _pax(info):
    info.pax_headers = {"comment": "x" * 1000}


M = good_members()
AUTH = doc_auth(M, K1)
FORGERIES = {
    "no-auth": ([*M], {}, ArchiveCorrupt),
    "member-after-auth": ([*M, ("auth.json", AUTH), ("payload/000004", b"DROP TABLE p;")], {}, ArchiveCorrupt),
    "second-auth": ([*M, ("auth.json", AUTH), ("auth.json", AUTH)], {}, ArchiveCorrupt),
    "wrong-mac": (
        [*M, ("auth.json", json.dumps({**json.loads(AUTH), "mac": "0" * 64}).encode())],
        {},
        ArchiveAuthError,
    ),
    "auth-missing-field": ([*M, ("auth.json", b'{"alg": "HMAC-SHA256"}')], {}, ArchiveAuthError),
    "auth-not-json": ([*M, ("auth.json", b"{not json")], {}, ArchiveCorrupt),
    "auth-first": ([("auth.json", AUTH), *M], {}, ArchiveCorrupt),
    "payload-before-manifest": ([M[1], M[0], *M[2:], ("auth.json", AUTH)], {}, ArchiveCorrupt),
    "chunk-skipped": ([M[0], *M[2:], ("auth.json", doc_auth([M[0], *M[2:]], K1))], {}, ArchiveCorrupt),
    "chunks-swapped": ([M[0], M[2], M[1], M[3], ("auth.json", AUTH)], {}, ArchiveCorrupt),
    "foreign-member": ([*M[:2], ("evil.sql", b"\\! rm -rf /"), *M[2:], ("auth.json", AUTH)], {}, ArchiveCorrupt),
    "symlink": ([*M, ("auth.json", AUTH)], {"tweak": _symlink}, ArchiveCorrupt),
    "hardlink-with-valid-mac": ([*M, ("auth.json", AUTH)], {"tweak": _hardlink}, ArchiveCorrupt),
    "pax-header": ([*M, ("auth.json", AUTH)], {"fmt": tarfile.PAX_FORMAT, "tweak": _pax}, ArchiveCorrupt),
    "manifest-not-json": ([("manifest.json", b"\xff"), *M[1:], ("auth.json", AUTH)], {}, ArchiveCorrupt),
    "manifest-newer-version": (
        [("manifest.json", b'{"archive_version": 3}'), *M[1:], ("auth.json", AUTH)],
        {},
        ArchiveCorrupt,
    ),
    "empty-tar": ([], {}, ArchiveCorrupt),
}
# Valid MACs (made with the deployment's key, as a buggy writer would): structure is still checked.
_EMPTY = [M[0], ("payload/000001", b""), ("payload/000002", b"x" * 2500)]
_MISNAMED = [("notes.json", M[0][1]), *M[1:]]
_WRONG_SHA = json.dumps({**json.loads(AUTH), "payload_sha256": "0" * 64}).encode()
_WRONG_SIZE = json.dumps({**json.loads(AUTH), "payload_bytes": 2499}).encode()
FORGERIES |= {
    "empty-chunk": ([*_EMPTY, ("auth.json", doc_auth(_EMPTY, K1))], {}, ArchiveCorrupt),
    "manifest-misnamed": ([*_MISNAMED, ("auth.json", doc_auth(_MISNAMED, K1))], {}, ArchiveCorrupt),
    "payload-sha256-mismatch": ([*M, ("auth.json", _WRONG_SHA)], {}, ArchiveAuthError),
    "payload-bytes-mismatch": ([*M, ("auth.json", _WRONG_SIZE)], {}, ArchiveAuthError),
}


@pytest.mark.parametrize("case", FORGERIES)
def test_forged_archives_are_refused(case):
    members, options, expected = FORGERIES[case]
    with pytest.raises(expected):
        verify_archive(io.BytesIO(forge(members, **options)), identities=[K1])


def test_forged_stream_layers_are_refused():
    members = [*M, ("auth.json", AUTH)]
    tar = tar_stream(members)
    compress = zstandard.ZstdCompressor().compress
    assert read_all(seal(compress(tar)))[0] == b"x" * 2500  # control
    cases = {
        "garbage-after-frame": compress(tar) + b"garbage",
        "nonzero-after-auth": compress(tar[:-1] + b"\1"),
        "tar-end-missing": compress(tar[: tar.index(AUTH) + 512]),
        "frame-truncated": compress(tar)[:-200],
        "not-zstd": tar,
    }
    for name, plaintext in cases.items():
        with pytest.raises(ArchiveCorrupt):
            verify_archive(io.BytesIO(seal(plaintext)), identities=[K1])
            pytest.fail(f"{name} was accepted")


# --- size limits and bombs --------------------------------------------------------------


def test_max_payload_bytes():
    payload = os.urandom(CHUNK * 3)
    data, summary = make(payload)
    assert verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=len(payload)) == summary
    with pytest.raises(ArchiveTooLarge):
        verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=len(payload) - 1)
    with pytest.raises(ArchiveTooLarge, match="larger than the allowed size"):
        verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=0)
    assert verify_archive(io.BytesIO(make(b"")[0]), identities=[K1], max_payload_bytes=0).payload_bytes == 0


def _bomb(member_size: int, members: int) -> bytes:
    """~1 MB of ciphertext expanding to members * member_size bytes (multi-frame zstd)."""
    compress = zstandard.ZstdCompressor(level=1).compress
    zeros = compress(bytes(member_size))
    header = tarfile.TarInfo("manifest.json")
    manifest = b'{"archive_version": 1}'
    header.size = len(manifest)
    parts = [compress(header.tobuf(tarfile.USTAR_FORMAT) + manifest + bytes(-len(manifest) % 512))]
    for i in range(1, members + 1):
        info = tarfile.TarInfo(f"payload/{i:06d}")
        info.size = member_size
        parts += [compress(info.tobuf(tarfile.USTAR_FORMAT)), zeros]
    return seal(b"".join(parts))


def test_decompression_bomb_is_stopped_early():
    bomb = _bomb(8 << 20, 512)  # 4 GiB of zeros
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ArchiveTooLarge):
            verify_archive(io.BytesIO(bomb), identities=[K1], max_payload_bytes=32 << 20)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.5, elapsed  # expanding and hashing 4 GiB takes several seconds
    assert peak < 16 << 20, peak

    # A single member that merely claims to be huge is refused at its header.
    info = tarfile.TarInfo("payload/000001")
    info.size = (8 << 30) - 1
    manifest = b'{"archive_version": 1}'
    head = tarfile.TarInfo("manifest.json")
    head.size = len(manifest)
    tar = head.tobuf(tarfile.USTAR_FORMAT) + manifest + bytes(-len(manifest) % 512) + info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ArchiveTooLarge):
        verify_archive(io.BytesIO(seal(zstandard.ZstdCompressor().compress(tar))), identities=[K1], max_payload_bytes=1)


# --- memory and streaming ----------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading, time, tracemalloc
    from backups.archive import generate_identity, open_archive, write_archive

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    SIZE = 200 * 1000 * 1000
    # Slices of a random pool, 3 MiB apart: incompressible within zstd's 2 MiB window, and cheap.
    POOL = os.urandom(17 << 20)

    class Payload:  # generator-like: only .read(n)
        def __init__(self):
            self.left, self.offset, self.sha = SIZE, 0, hashlib.sha256()
        def read(self, n):
            n = min(n, self.left, 1 << 20)
            self.offset = (self.offset + (3 << 20) + 7919) % (16 << 20)
            data = POOL[self.offset : self.offset + n]
            self.left -= n
            self.sha.update(data)
            return data

    key = generate_identity()
    payload = Payload()
    read_fd, write_fd = os.pipe()
    result = {}

    def produce():
        with open(write_fd, "wb") as out:
            result["written"] = write_archive(payload, out, manifest={"format_version": 1}, identities=[key])

    base = rss("VmRSS")
    tracemalloc.start()
    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    sha, total = hashlib.sha256(), 0
    with open(read_fd, "rb") as stream, open_archive(stream, identities=[key]) as reader:
        buf = bytearray(1 << 16)
        while n := reader.readinto(buf):
            sha.update(memoryview(buf)[:n])
            total += n
        summary = reader.summary
    producer.join()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({
        "ok": sha.hexdigest() == payload.sha.hexdigest() == summary.payload_sha256 and total == SIZE
              and summary == result["written"],
        "archive_bytes": summary.archive_bytes,
        "seconds": elapsed, "traced_peak": peak, "rss_growth": rss("VmHWM") - base,
    }))
    """
)


def test_memory_stays_bounded_for_200_mb():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print(report)
    assert report["ok"], report
    assert report["archive_bytes"] > 190_000_000  # really incompressible: nothing was cheated
    assert report["traced_peak"] < 40_000_000, report  # the payload alone would be 200 MB
    assert report["rss_growth"] < 40_000_000, report


# --- threads and file descriptors ----------------------------------------------------------


def test_no_thread_or_fd_leaks():
    payload = os.urandom(4 << 20)  # more than the pipe holds: the thread is blocked writing
    data, _ = make(payload, chunk_size=1 << 20)
    gc.collect()
    base_fds, base_threads = fds(), len(decrypt_threads())

    with open_archive(io.BytesIO(data), identities=[K1]) as reader:
        assert reader.read(10) == payload[:10]
        assert len(decrypt_threads()) == base_threads + 1
    start = time.perf_counter()
    reader.close()
    assert time.perf_counter() - start < 1

    reader = open_archive(io.BytesIO(data), identities=[K1])
    reader.read(10)
    del reader  # abandoned without close()
    gc.collect()

    failures = [
        lambda: verify_archive(io.BytesIO(data), identities=[K2]),
        lambda: verify_archive(io.BytesIO(data[: len(data) // 2]), identities=[K1]),
        lambda: verify_archive(io.BytesIO(b"garbage"), identities=[K1]),
        lambda: verify_archive(io.BytesIO(data), identities=[K1], max_payload_bytes=2 << 20),
    ]
    for failure in failures:
        with pytest.raises(ArchiveError):
            failure()

    class BrokenStorage:
        def __init__(self):
            self.inner = io.BytesIO(data)

        def read(self, n):
            if self.inner.tell() > len(data) // 2:
                raise ConnectionError("storage went away")
            return self.inner.read(n)

    with pytest.raises(ConnectionError, match="storage went away"):  # the storage's own error, unchanged
        verify_archive(BrokenStorage(), identities=[K1])

    assert len(decrypt_threads()) == base_threads
    assert fds() == base_fds


# --- the age command-line tool ------------------------------------------------------------


def test_age_cli_opens_archives(tmp_path):
    age = shutil.which("age")
    assert age, "the `age` command is missing: install the Debian package `age` (make test does: make system-deps)"
    tar = shutil.which("tar")
    assert tar, "the `tar` command is missing: install the Debian package `tar`"
    payload = os.urandom(CHUNK * 3 + 7)
    archive_path = tmp_path / "backup.respaldo"
    with archive_path.open("wb") as out:
        summary = write_archive(
            io.BytesIO(payload),
            out,
            manifest=MANIFEST,
            identities=[K1],
            extra_recipients=[identity_public_key(ESCROW)],
            chunk_size=CHUNK,
        )
    for name, identity in [("keys.txt", K1), ("escrow.txt", ESCROW)]:
        (tmp_path / name).write_text(f"# {name}\n{identity}\n")
        plaintext = subprocess.run(
            [age, "-d", "-i", str(tmp_path / name), str(archive_path)], capture_output=True, check=True
        ).stdout
        members = tar_members(plaintext)
        assert [n for n, _ in members] == ["manifest.json", *[f"payload/{i:06d}" for i in range(1, 5)], "auth.json"]
        assert json.loads(members[0][1]) == summary.manifest
        assert b"".join(b for n, b in members[1:-1]) == payload
        assert json.loads(members[-1][1])["key_id"] == summary.key_id
        # The documented shell command for getting the pg_dump file out.
        tar_bytes = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plaintext)).read()
        extracted = subprocess.run(
            [tar, "-xO", "--wildcards", "payload/*"], input=tar_bytes, capture_output=True, check=True
        ).stdout
        assert extracted == payload

    # An operator re-encrypting with the age tool (e.g. to a new key) keeps the archive authentic.
    plaintext = subprocess.run(
        [age, "-d", "-i", str(tmp_path / "keys.txt"), str(archive_path)], capture_output=True, check=True
    ).stdout
    reencrypted = subprocess.run(
        [age, "-r", identity_public_key(K2)], input=plaintext, capture_output=True, check=True
    ).stdout
    assert verify_archive(io.BytesIO(reencrypted), identities=[K2, K1]).payload_sha256 == summary.payload_sha256
