"""Damaged and forged archives are refused: bit flips, truncation, files that are not archives, and
forgeries made with the public key only (built independently of the writer, following
docs/archive-format.md). No database, no Django.
"""

import io
import json
import os
import random
import tarfile

import pytest
import zstandard

from backups.archive import (
    ArchiveAuthError,
    ArchiveCorrupt,
    ArchiveError,
    ArchiveNotRecognized,
    ArchiveWrongKey,
    open_archive,
    verify_archive,
)
from backups.tests.archive.helpers import CHUNK, K1, doc_auth, doc_key_id, forge, make, read_all, seal, tar_stream


def good_members(payload=b"x" * 2500, chunk=CHUNK):
    manifest = json.dumps({"format_version": 1, "archive_version": 1}).encode()
    members = [("manifest.json", manifest)]
    for i in range(0, len(payload), chunk):
        members.append((f"payload/{i // chunk + 1:06d}", payload[i : i + chunk]))
    return members


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
