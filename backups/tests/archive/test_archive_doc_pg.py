"""The shell commands of docs/archive-format.md, pasted as an operator would, on real pg backups:
open, verify, restore; a failing step stops the restore; damaged or forged archives are refused.

The blocks are read from the document itself (the convention is described at its top) and
pasted into an interactive ``bash`` (history expansion on, no rc files), after the
variable assignments an operator would type, from an empty directory, with
``PATH=/usr/bin:/bin``: the real ``age``, ``zstd``, ``tar`` and Debian's ``python3``, and
the PostgreSQL client tools the project itself picks for the test database.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from django.db import connection

from backups import archive
from backups.keys import archive_identities
from backups.keys.clinic import identities_held
from backups.tests.archive.helpers import (
    SCHEMA,
    SYSTEM_PATH,
    make_backup,
    paste,
    row_counts,
    take_clinic_key,
)
from backups.tests.helpers import damage_clinic, sha256_of, stored_path, table_checksums

PREVIOUS = SCHEMA + "__before_restore"


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH holding every program of /usr/bin but ``missing``."""
    folder = tmp_path / ("bin-without-" + "-".join(missing))
    folder.mkdir()
    for entry in Path("/usr/bin").iterdir():
        if entry.name not in missing:
            (folder / entry.name).symlink_to(entry)
    return str(folder)


def payload_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return archive.verify_archive(handle, identities=identities_held()).payload_sha256


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def drop_previous_schema(live_db):
    yield
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{PREVIOUS}" CASCADE')


# --- pg backups: open, verify, restore ---------------------------------------------------


# The payload a pg backup has today (a plain SQL script) and the one older archives have.
TOC_LINE = {"sql": f'CREATE TABLE "{SCHEMA}"."dental_patient"', "custom": f"TABLE {SCHEMA} dental_patient"}


@pytest.mark.parametrize("payload", ["sql", "custom"])
def test_the_pasted_commands_open_verify_and_restore_a_real_backup(
    scratch_clinic, operator, drop_previous_schema, settings, payload
):
    settings.BACKUPS_PG_PAYLOAD = payload
    original = table_checksums(SCHEMA)
    backup = make_backup()
    assert backup.manifest["postgresql"]["payload"] == payload
    path = stored_path(backup.storage_name)
    damage_clinic()
    damaged = table_checksums(SCHEMA)
    assert damaged != original
    operator["ARCHIVE"] = str(path)
    take_clinic_key(operator)
    elsewhere = Path(operator["WORK"]).parent / "elsewhere"
    work = Path(operator["WORK"])

    listed = paste("list", operator, cwd=elsewhere)
    assert listed.status == 0, listed.stderr
    assert re.findall(r"\S+$", listed.stdout, re.M) == ["manifest.json", "payload/000001", "auth.json"]

    shown = paste("manifest", operator, cwd=elsewhere)
    assert shown.status == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert manifest["clinic"]["schema"] == SCHEMA and manifest["tables"] == backup.manifest["tables"]

    verified = paste("verify", operator, cwd=elsewhere)
    assert verified.status == 0, verified.stderr
    assert f"verified: clinic {SCHEMA} (id {scratch_clinic.pk}), pg backup" in verified.stdout
    assert sha256_of(work / "payload") == payload_sha256(path)
    assert json.loads((work / "manifest.json").read_text())["tables"] == backup.manifest["tables"]
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json", "payload", "payload.sha256"]
    assert list(elsewhere.iterdir()) == []  # nothing written where the operator happened to be

    toc = paste("toc", operator, cwd=elsewhere)
    assert toc.status == 0, toc.stderr
    assert TOC_LINE[payload] in toc.stdout and "bienestar" not in toc.stdout

    restored = paste("restore", operator, cwd=elsewhere)
    assert restored.status == 0, restored.stderr
    assert f"restored {SCHEMA}; its previous data is in schema {PREVIOUS}" in restored.stdout
    assert row_counts(SCHEMA) == backup.manifest["tables"]
    assert table_checksums(SCHEMA) == original  # every table, users and migrations included
    assert table_checksums(PREVIOUS) == damaged

    dropped = paste("drop-previous", operator, cwd=elsewhere)
    assert dropped.status == 0, dropped.stderr
    assert PREVIOUS not in schemas() and table_checksums(SCHEMA) == original
    again = paste("drop-previous", operator, cwd=elsewhere)
    assert again.status != 0 and table_checksums(SCHEMA) == original


@pytest.mark.parametrize(
    ("payload", "cut_short"), [("sql", "the script is cut short"), ("custom", "pg_restore: error")]
)
def test_a_failing_step_stops_the_pasted_restore_before_the_clinic_changes(
    scratch_clinic, operator, drop_previous_schema, tmp_path, settings, payload, cut_short
):
    settings.BACKUPS_PG_PAYLOAD = payload
    backup = make_backup()
    operator["ARCHIVE"] = str(stored_path(backup.storage_name))
    take_clinic_key(operator)
    elsewhere = tmp_path / "elsewhere"
    work = Path(operator["WORK"])
    assert paste("verify", operator, cwd=elsewhere).status == 0
    damage_clinic()  # so that a restore that did happen would show
    before = {name: table_checksums(name) for name in (SCHEMA, "bienestar")}

    def refused(variables: dict[str, str], reason: str) -> None:
        result = paste("restore", variables, cwd=elsewhere)
        assert result.status != 0, result.stdout
        assert reason in result.stdout + result.stderr, result.stdout + result.stderr
        assert {name: table_checksums(name) for name in before} == before
        assert PREVIOUS not in schemas() and "bienestar__before_restore" not in schemas()

    no_pg_restore = tmp_path / "pg-bin-without-pg_restore"
    no_pg_restore.mkdir()
    (no_pg_restore / "psql").symlink_to(Path(operator["PG_BIN"]) / "psql")
    refused({**operator, "PG_BIN": str(no_pg_restore)}, "missing tool: ")
    refused({**operator, "SCHEMA": "bienestar"}, f"this backup is of clinic {SCHEMA}, not of bienestar")

    payload = work / "payload"
    good = payload.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    payload.write_bytes(bytes(damaged))
    refused(operator, "payload: FAILED")  # changed since it was verified

    payload.write_bytes(good[: len(good) // 2])  # a dump pg_restore cannot read, even if sha256 agreed
    (work / "payload.sha256").write_text(f"{hashlib.sha256(payload.read_bytes()).hexdigest()}  payload\n")
    refused(operator, cut_short)

    payload.write_bytes(good)
    (work / "payload.sha256").write_text(f"{hashlib.sha256(good).hexdigest()}  payload\n")
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["tables"]["dental_patient"] += 1  # fails last, after the rename and the whole restore
    (work / "manifest.json").write_text(json.dumps(manifest))
    refused(operator, "table dental_patient: not")

    manifest["tables"]["dental_patient"] -= 1
    (work / "manifest.json").write_text(json.dumps(manifest))
    assert paste("restore", operator, cwd=elsewhere).status == 0  # the control: same files, restored
    assert table_checksums(SCHEMA) != before[SCHEMA] and table_checksums(PREVIOUS) == before[SCHEMA]


def test_the_pasted_verify_refuses_damaged_forged_or_unopenable_archives(live_db, operator, tmp_path):
    backup = make_backup("clinica")
    path = stored_path(backup.storage_name)
    elsewhere = tmp_path / "elsewhere"
    work = Path(operator["WORK"])
    with open(path, "rb") as handle, archive.open_archive(handle, identities=identities_held()) as reader:
        manifest, payload = dict(reader.manifest), reader.read()
    identities = archive_identities()  # the rewritten archives are the deployment key's (as before clinic keys)

    def rewritten(name: str, data: bytes, *, auth_identity: str) -> str:
        """The same manifest and ``data``, in 4 KiB chunks, encrypted to our key, authenticated with another."""
        target = tmp_path / name
        with open(target, "wb") as out:
            archive.write_archive(
                io.BytesIO(data),
                out,
                manifest=manifest,
                identities=[auth_identity],
                extra_recipients=[archive.identity_public_key(identities[0])],
                chunk_size=4096,
            )
        return str(target)

    def refused(archive_path: str, reason: str, *, path: str = SYSTEM_PATH) -> None:
        for name in ("payload", "manifest.json", "payload.sha256"):  # an earlier run's results
            (work / name).write_bytes(b"stale")
        result = paste("verify", {**operator, "ARCHIVE": archive_path}, cwd=elsewhere, path=path)
        assert result.status != 0, result.stdout
        assert reason in result.stdout + result.stderr, result.stdout + result.stderr
        assert list(work.iterdir()) == []  # nothing left that the restore block could use

    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "flipped.respaldo").write_bytes(bytes(flipped))
    refused(str(tmp_path / "flipped.respaldo"), "age or zstd failed")

    (tmp_path / "truncated.respaldo").write_bytes(path.read_bytes()[:-100])
    refused(str(tmp_path / "truncated.respaldo"), "age or zstd failed")

    changed = bytearray(payload)
    changed[100] ^= 0x01
    forged = rewritten("forged.respaldo", bytes(changed), auth_identity=archive.generate_identity())
    refused(forged, "AUTHENTICATION FAILED")  # age, zstd and tar are fine: only the MAC tells

    refused(str(path), "missing tool: zstd", path=path_without(tmp_path, "zstd"))

    # The control: the same rewriting, authenticated with our key, verifies (chunks joined in order).
    genuine = rewritten("rechunked.respaldo", payload, auth_identity=identities[0])
    result = paste("verify", {**operator, "ARCHIVE": genuine}, cwd=elsewhere)
    assert result.status == 0, result.stderr
    assert (work / "payload").read_bytes() == payload
    assert sha256_of(work / "payload") == (work / "payload.sha256").read_text().split()[0]
