"""Helpers shared by the archive tests: keys, archives written and read back, an independent
implementation of the documented format (docs/archive-format.md) for forging, built with the
standard library (tarfile), zstandard and pyrage, independently of the writer; and the
document's shell blocks, read and pasted as an operator would."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyrage
import zstandard
from django.conf import settings
from django.db import connection
from pyrage import x25519

from backups import archive
from backups.archive import (
    generate_identity,
    identity_public_key,
    open_archive,
    write_archive,
)
from backups.keys import clinic as clinic_keys
from backups.models import Backup, ClinicKey, JobStatus
from backups.services.backup import backup_request, backup_run
from backups.tests.helpers import stored_path

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


DOC = Path(settings.BASE_DIR) / "docs" / "archive-format.md"
SCHEMA = "restaura"  # the scratch_clinic fixture's clinic
SYSTEM_PATH = "/usr/bin:/bin"
STATUS = re.compile(r"^__pasted_block_status=(\d+)$", re.M)


# --- Reading the document ----------------------------------------------------------------


@dataclass(frozen=True)
class Fenced:
    language: str
    tag: str | None
    body: str
    line: int


def fenced_blocks(text: str) -> list[Fenced]:
    """Every fenced code block of a Markdown text, with the doc-test tag on the line before."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\S*)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{DOC.name}:{i + 1}: unclosed code block"
        tag = re.fullmatch(r"<!-- doc-test: ([\w-]+) -->", lines[i - 1].strip()) if i else None
        blocks.append(Fenced(opening.group(1), tag and tag.group(1), "\n".join(lines[i + 1 : end]) + "\n", i + 1))
        i = end + 1
    return blocks


def doc_blocks() -> dict[str, str]:
    """The doc's tagged shell blocks, by name."""
    tagged = [block for block in fenced_blocks(DOC.read_text(encoding="utf-8")) if block.tag]
    names = [block.tag for block in tagged]
    assert len(names) == len(set(names)), f"a doc-test name is used twice: {names}"
    return {block.tag: block.body for block in tagged}


def block(name: str) -> str:
    blocks = doc_blocks()
    assert name in blocks, f"{DOC.name} has no block tagged <!-- doc-test: {name} --> (it has {sorted(blocks)})"
    return blocks[name]


# --- Pasting a block -----------------------------------------------------------------------


@dataclass
class Pasted:
    status: int
    stdout: str
    stderr: str


def paste(name: str, variables: dict[str, str], *, cwd: Path, path: str = SYSTEM_PATH) -> Pasted:
    """Type the variables, paste block ``name`` into an interactive bash, report its exit status.

    The shell must survive the block (a ``set -e`` outside a subshell would close the
    operator's terminal) and must still read what was pasted after it.
    """
    assignments = "".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items())
    typed = assignments + block(name) + 'echo "__pasted_block_status=$?"\n'
    home = cwd.parent / "home"  # where bash keeps its history
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        ["/bin/bash", "--norc", "--noprofile", "-i"],
        input=typed,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb"},
        timeout=300,
    )
    statuses = STATUS.findall(result.stdout)
    assert statuses, f"the pasted block {name!r} ended the shell or ate what was pasted after it:\n{result.stderr}"
    return Pasted(int(statuses[-1]), STATUS.sub("", result.stdout), result.stderr)


def take_clinic_key(operator: dict[str, str], schema: str = SCHEMA) -> None:
    """Paste the doc's clinic-key block: KEYS becomes the deployment key plus the clinic's own key,
    taken out of its wrapped copy in the backup storage."""
    live = ClinicKey.objects.get(clinic__schema_name=schema, erased_at__isnull=True)
    operator["CLINIC_KEY"] = str(stored_path(clinic_keys.stored_key_name(live)))
    operator["KEYS"] = str(Path(operator["WORK"]).parent / "keys.txt")
    elsewhere = Path(operator["WORK"]).parent / "elsewhere"
    pasted = paste("clinic-key", operator, cwd=elsewhere)
    assert pasted.status == 0, pasted.stderr
    assert oct(Path(operator["KEYS"]).stat().st_mode & 0o777) == "0o600"
    assert clinic_keys.identity_of(live.clinic) in Path(operator["KEYS"]).read_text()


def make_backup(clinic: str = SCHEMA, payload_format: str = "pg") -> Backup:
    backup = backup_run(backup_id=backup_request(clinic=clinic, payload_format=payload_format, enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    return backup


def row_counts(schema: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            [schema],
        )
        counts = {}
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"')
            counts[table] = cursor.fetchone()[0]
        return counts
