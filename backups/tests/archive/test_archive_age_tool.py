"""Archives open with the age command-line tool, as docs/archive-format.md says. No database, no Django."""

import io
import json
import os
import shutil
import subprocess

import zstandard

from backups.archive import (
    identity_public_key,
    verify_archive,
    write_archive,
)
from backups.tests.archive.helpers import CHUNK, ESCROW, K1, K2, MANIFEST, tar_members

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
