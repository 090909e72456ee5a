"""The shell commands of docs/archive-format.md, pasted as an operator would, on real archives.

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
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connection
from django.db.models import JSONField, Value
from django_tenants.utils import schema_context

from backups import archive, clinic_keys, services
from backups.clinic_keys import identities_held
from backups.formats.json.payload import JSON_NULL, payload_models, read_json_payload
from backups.keys import archive_identities
from backups.models import Backup, ClinicKey, JobStatus
from backups.postgres import find_pg_tools
from backups.tests.helpers import damage_clinic, sha256_of, stored_path, table_checksums
from conftest import database_url
from dental.models import Patient

DOC = Path(settings.BASE_DIR) / "docs" / "archive-format.md"
SCHEMA = "restaura"  # the scratch_clinic fixture's clinic
PREVIOUS = SCHEMA + "__before_restore"
VARIABLES = {"ARCHIVE", "DEPLOYMENT_KEY", "CLINIC_KEY", "KEYS", "WORK", "PG_BIN", "DATABASE_URL", "SCHEMA"}
BLOCKS = {
    "variables",
    "clinic-key",
    "list",
    "manifest",
    "verify",
    "media-extract",
    "toc",
    "restore",
    "drop-previous",
    "json-summary",
}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh", "shell-session"}
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


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH holding every program of /usr/bin but ``missing``."""
    folder = tmp_path / ("bin-without-" + "-".join(missing))
    folder.mkdir()
    for entry in Path("/usr/bin").iterdir():
        if entry.name not in missing:
            (folder / entry.name).symlink_to(entry)
    return str(folder)


@pytest.fixture
def operator(tmp_path) -> dict[str, str]:
    """The variables of the doc's ``variables`` block, with real values; ``cwd`` is an empty folder."""
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir()
    return {
        "ARCHIVE": "",  # set by each test
        "DEPLOYMENT_KEY": str(settings.BACKUPS_AGE_IDENTITY_FILE),
        "CLINIC_KEY": "",  # set by take_clinic_key
        "KEYS": str(settings.BACKUPS_AGE_IDENTITY_FILE),
        "WORK": str(work),
        "PG_BIN": str(find_pg_tools().bin_dir),
        "DATABASE_URL": database_url(),
        "SCHEMA": SCHEMA,
    }


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
    backup = services.backup_run(
        backup_id=services.backup_request(clinic=clinic, payload_format=payload_format, enqueue=False).pk
    )
    assert backup.status == JobStatus.SUCCEEDED, backup.error
    return backup


def payload_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return archive.verify_archive(handle, identities=identities_held()).payload_sha256


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


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


@pytest.fixture
def drop_previous_schema(live_db):
    yield
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{PREVIOUS}" CASCADE')


# --- The document's own shape ------------------------------------------------------------


def test_every_shell_block_of_the_doc_is_tagged_and_safe_to_paste():
    text = DOC.read_text(encoding="utf-8")
    blocks = fenced_blocks(text)
    for fenced in blocks:
        where = f"{DOC.name}:{fenced.line}"
        if fenced.language in SHELL_LANGUAGES:
            assert fenced.language == "bash" and fenced.tag, f"{where}: a shell block without <!-- doc-test: … -->"
        assert not (fenced.tag and fenced.language != "bash"), f"{where}: a doc-test block must be ```bash"
    tagged = {fenced.tag: fenced.body for fenced in blocks if fenced.tag}
    assert set(tagged) == BLOCKS, "a block was added or removed: give it a test and update BLOCKS"
    declared = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", tagged["variables"], re.M))
    assert declared == VARIABLES, f"the doc declares {sorted(declared)}: the test sets {sorted(VARIABLES)}"
    for name, body in tagged.items():
        used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", body))
        assert used <= VARIABLES, f"block {name} uses undeclared variables {sorted(used - VARIABLES)}"
        if name == "variables":
            continue
        lines = body.splitlines()
        assert lines[:2] == ["(", "set -euo pipefail"] and lines[-1] == ")", (
            f"block {name}: not ( set -euo pipefail … )"
        )
        assert "\t" not in body, f"block {name} has a tab (a terminal would complete it when pasted)"
        assert "!" not in body.replace("!=", ""), f"block {name} has a ! that bash would history-expand"


@pytest.mark.django_db
def test_the_versions_the_doc_states_are_those_of_an_archive_the_application_writes():
    """The doc's title, its "Versions" paragraph and its "Layers" list state the versions that
    a backup made now carries (read from its manifest), and no other current version."""
    backup = make_backup("clinica")
    path = stored_path(backup.storage_name)
    with open(path, "rb") as handle, archive.open_archive(handle, identities=identities_held()) as reader:
        manifest = dict(reader.manifest)
    versions = {field: manifest[field] for field in ("archive_version", "format_version")}
    assert isinstance(manifest.get("media"), list)  # the newest format, the one with the clinic's files
    text = DOC.read_text(encoding="utf-8")
    title = re.match(r"# Backup archive format, version (\d+)", text)
    assert title and int(title.group(1)) == versions["archive_version"], text.splitlines()[0]
    for field, version in versions.items():
        stated = {int(n) for n in re.findall(rf'"{field}": (\d+)', text)}
        assert stated == {version}, f'the doc states "{field}": {sorted(stated)}; archives written say {version}'
    layers = text[text.index("- **tar** members") : text.index("### The manifest's media fields")]
    for field, version in versions.items():
        assert f'"{field}": {version}' in layers, f"the Layers list does not say {field} {version}"


# --- pg backups: open, verify, restore ---------------------------------------------------


def test_the_pasted_commands_open_verify_and_restore_a_real_backup(scratch_clinic, operator, drop_previous_schema):
    original = table_checksums(SCHEMA)
    backup = make_backup()
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
    assert f"TABLE {SCHEMA} dental_patient" in toc.stdout and "bienestar" not in toc.stdout

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


def test_a_failing_step_stops_the_pasted_restore_before_the_clinic_changes(
    scratch_clinic, operator, drop_previous_schema, tmp_path
):
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
    refused(operator, "pg_restore: error")

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


# --- the clinic's files (archive version 2) -----------------------------------------------


def test_the_pasted_commands_take_the_clinics_files_out_byte_for_byte(scratch_clinic, operator, settings, tmp_path):
    from django.core.files.base import ContentFile

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES}
    contents = [b"\x89PNG an x-ray" * 3000, bytes(range(256)) * 40, b""]
    written = {}
    with schema_context(SCHEMA):
        for index, patient in enumerate(Patient.objects.order_by("pk")[: len(contents)]):
            patient.xray.save(f"x-{index}.png", ContentFile(contents[index]), save=True)
            written[patient.xray.name] = contents[index]
    connection.set_schema_to_public()
    backup = make_backup()
    operator["ARCHIVE"] = str(stored_path(backup.storage_name))
    take_clinic_key(operator)
    elsewhere = tmp_path / "elsewhere"
    work = Path(operator["WORK"])

    listed = paste("list", operator, cwd=elsewhere)
    assert listed.status == 0, listed.stderr
    members = re.findall(r"\S+$", listed.stdout, re.M)
    assert members[-1] == "auth.json" and sorted(members[-4:-1]) == sorted("media/" + name for name in written)

    verified = paste("verify", operator, cwd=elsewhere)
    assert verified.status == 0, verified.stderr
    assert {str(p.relative_to(work / "media")): p.read_bytes() for p in (work / "media").rglob("*") if p.is_file()} == (
        written
    )

    extracted = paste("media-extract", operator, cwd=elsewhere)
    assert extracted.status == 0, extracted.stderr
    out = work / "unverified" / "media"
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == written
    for name, data in written.items():
        assert f"{hashlib.sha256(data).hexdigest()}  {out / name}" in extracted.stdout


# --- json backups ------------------------------------------------------------------------


def test_a_json_payload_is_what_the_doc_says_and_loads_through_the_application_only(scratch_clinic, operator, tmp_path):
    with schema_context(SCHEMA):
        patient_pk = Patient.objects.order_by("pk").first().pk
        Patient.objects.filter(pk=patient_pk).update(allergies=Value(None, output_field=JSONField()))
    connection.set_schema_to_public()
    backup = make_backup(payload_format="json")
    operator["ARCHIVE"] = str(stored_path(backup.storage_name))
    take_clinic_key(operator)
    elsewhere = tmp_path / "elsewhere"
    payload = Path(operator["WORK"]) / "payload"

    verified = paste("verify", operator, cwd=elsewhere)
    assert verified.status == 0, verified.stderr
    assert f"verified: clinic {SCHEMA} (id {scratch_clinic.pk}), json backup" in verified.stdout

    summary = paste("json-summary", operator, cwd=elsewhere)
    assert summary.status == 0, summary.stderr
    expected = {
        m._meta.label_lower: backup.manifest["tables"][m._meta.db_table]
        for m in payload_models()
        if backup.manifest["tables"][m._meta.db_table]
    }
    assert {model: int(rows) for model, rows in (line.split() for line in summary.stdout.split("\n") if line)} == (
        expected
    )
    assert expected["dental.patient"] == 30

    # The project's reader gives the JSON null back as JSON null (SQL NULL would be None).
    with open(payload, "rb") as handle:
        records = {(label, pk): fields for label, pk, fields in read_json_payload(handle)}
    assert records["dental.patient", patient_pk]["allergies"] is JSON_NULL

    def allergies_is_json_null() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT jsonb_typeof(allergies) FROM "{SCHEMA}".dental_patient WHERE id = %s', [patient_pk])
            return cursor.fetchone()[0] == "null"

    with schema_context(SCHEMA):
        Patient.objects.filter(pk=patient_pk).update(allergies=["látex"])
    connection.set_schema_to_public()
    before = table_checksums(SCHEMA)

    # Not a loaddata fixture, as the doc says: JSON null becomes SQL NULL and the load aborts.
    fixture = tmp_path / "payload.json"
    shutil.copyfile(payload, fixture)
    with schema_context(SCHEMA), pytest.raises(IntegrityError, match="allergies"):
        call_command("loaddata", str(fixture), verbosity=0)
    connection.set_schema_to_public()
    assert table_checksums(SCHEMA) == before

    # What the doc says to do with it: restore_clinic --file, the extracted payload as is.
    call_command("restore_clinic", SCHEMA, "--file", str(payload), "--yes")
    assert allergies_is_json_null()
    assert {t: n for t, n in row_counts(SCHEMA).items() if t.startswith("dental_")} == backup.manifest["tables"]
