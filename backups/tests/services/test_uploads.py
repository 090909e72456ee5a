"""Uploading a file to become a clinic's backup: what is accepted, and what is refused.

Real database, real archives, real files. Every refusal is checked twice: its message, and
that nothing changed (no catalog row, no stored file, no temporary file, the clinic's data
as it was, down to a checksum of every row of every table of its schema).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import hmac
import io
import json
import lzma
import os
import subprocess
import tarfile
import tracemalloc
import zipfile
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pyrage
import pytest
import zstandard
from django.core.files.uploadedfile import SimpleUploadedFile, UploadedFile
from django.db import connection, models
from django.db.models import JSONField, Value
from django.utils import timezone, translation
from django_tenants.utils import schema_context
from pyrage import x25519

from backups import archive, exceptions, services
from backups.archive import KeyConfigError
from backups.clinic_keys import identities_held
from backups.formats.json.load import load_json_payload
from backups.formats.json.parser import JsonArray
from backups.formats.json.payload import payload_models, read_json_payload, write_json_payload
from backups.keys import archive_identities
from backups.messages_upload import UPLOAD_MESSAGES
from backups.models import Backup, JobStatus
from backups.postgres import find_pg_tools, libpq_environment
from backups.services.upload import UploadRefused, backup_from_upload
from backups.storage import StorageError
from backups.tests.helpers import (
    clinic_identity,
    dumpdata,
    sha256_of,
    storage_files,
    stored_path,
    table_checksums,
    temp_files_open,
)
from clinics.models import Clinic
from dental.models import Appointment, Dentist, InventoryItem, Invoice, Patient, Treatment

pytestmark = pytest.mark.django_db

THROUGH_TABLES = {"dental_treatment_materials", "dental_invoice_treatments"}


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def upload_tmp(settings, tmp_path) -> Path:
    """The folder uploads are spooled into, for this test."""
    folder = tmp_path / "uploads"
    folder.mkdir(mode=0o700)
    settings.BACKUPS_UPLOAD_TMP_DIR = str(folder)
    return folder


def state(schema: str = "clinica") -> tuple:
    return set(Backup.objects.values_list("pk", flat=True)), storage_files(), table_checksums(schema)


def refused(content: bytes | object, folder: Path, *, clinic: str = "clinica") -> UploadRefused:
    """Upload ``content``; assert it is refused and that nothing changed; return the refusal."""
    before = state(clinic)
    source = io.BytesIO(content) if isinstance(content, bytes) else content
    with pytest.raises(UploadRefused) as caught:
        backup_from_upload(clinic=clinic, source=source, filename="upload.bin", requested_by="admin")
    assert state(clinic) == before
    assert list(folder.iterdir()) == []
    assert not temp_files_open(folder)
    return caught.value


def test_an_upload_to_a_busy_clinic_is_refused_and_keeps_nothing(upload_tmp):
    """An uploaded file becomes a backup through the job states, so a busy clinic refuses it like a backup."""
    data, _original = real_backup("clinica")
    waiting = services.backup_request(clinic="clinica", enqueue=False)
    before = state("clinica")
    with pytest.raises(exceptions.ClinicBusy) as busy:
        backup_from_upload(clinic="clinica", source=io.BytesIO(data), filename="copia.respaldo")
    assert busy.value.code == "clinic_busy" and f"backup #{waiting.pk}" in str(busy.value)
    assert state("clinica") == before
    assert list(upload_tmp.iterdir()) == [] and not temp_files_open(upload_tmp)


_ARCHIVES: dict[str, tuple[bytes, dict]] = {}


def real_backup(schema: str) -> tuple[bytes, dict]:
    """(archive bytes, catalog manifest) of a real pg backup of a demo clinic, made once per session."""
    if schema not in _ARCHIVES:
        backup = services.backup_run(backup_id=services.backup_request(clinic=schema, enqueue=False).pk)
        assert backup.status == JobStatus.SUCCEEDED, backup.error
        _ARCHIVES[schema] = (stored_path(backup.storage_name).read_bytes(), backup.manifest)
        # as retention leaves the row (the file stays here): an upload of these bytes is a new backup,
        # whichever test made them (the catalog's own stored file is answered with its row instead)
        Backup.objects.filter(pk=backup.pk).update(expired_at=timezone.now())
    return _ARCHIVES[schema]


def clinic_manifest(schema: str = "clinica", payload_format: str = "pg") -> dict:
    clinic = Clinic.objects.get(schema_name=schema)
    return {
        "format_version": 1,
        "clinic": {"id": clinic.pk, "schema": schema, "name": clinic.name},
        "created_at": "2025-01-01T00:00:00+00:00",
        "kind": "manual",
        "payload_format": payload_format,
        "tables": {},
        "migrations": {},
        "postgresql": {"server": "16", "dump_tool": "16"},
    }


def make_archive(payload: io.RawIOBase | io.BytesIO, *, identities: list[str] | None = None, **kwargs) -> bytes:
    out = io.BytesIO()
    manifest = kwargs.pop("manifest", None) or clinic_manifest()
    archive.write_archive(payload, out, manifest=manifest, identities=identities or archive_identities(), **kwargs)
    return out.getvalue()


def one_per_line(records: list) -> bytes:
    """A fixture with record N on line N + 1 (to predict the line numbers of messages)."""
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode()


def payload_of(backup: Backup) -> bytes:
    with (
        open(stored_path(backup.storage_name), "rb") as handle,
        archive.open_archive(handle, identities=identities_held()) as reader,
    ):
        return reader.read()


def dental_state(schema: str = "clinica") -> tuple[dict, dict]:
    """(checksums of the payload tables but the through tables, the through tables' links as sets)."""
    tables = {model._meta.db_table for model in payload_models()}
    sums = {name: value for name, value in table_checksums(schema).items() if name in tables - THROUGH_TABLES}
    links = {}
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in payload_models():
            if model._meta.db_table in THROUGH_TABLES:
                a, b = (f.column for f in model._meta.local_concrete_fields if f.is_relation)
                cursor.execute(f"SELECT {qn(a)}, {qn(b)} FROM {qn(schema)}.{qn(model._meta.db_table)}")
                links[model._meta.db_table] = set(cursor.fetchall())
    return sums, links


def restore_payload(backup: Backup, schema: str = "clinica") -> dict[str, int]:
    with (
        open(stored_path(backup.storage_name), "rb") as handle,
        archive.open_archive(handle, identities=identities_held()) as reader,
        schema_context(schema),
    ):
        return load_json_payload(reader, expected_counts=backup.manifest["tables"])


def truncate_to_milliseconds(schema: str = "clinica") -> None:
    """Django's JSON serializer keeps milliseconds only: make the data what a fixture can express."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model in payload_models():
            for f in model._meta.concrete_fields:
                column, table = qn(f.column), f"{qn(schema)}.{qn(model._meta.db_table)}"
                if f.get_internal_type() == "DateTimeField":
                    cursor.execute(f"UPDATE {table} SET {column} = date_trunc('milliseconds', {column})")
                elif f.get_internal_type() == "TimeField":
                    cursor.execute(f"UPDATE {table} SET {column} = date_trunc('milliseconds', {column}::interval)")


class Endless(io.RawIOBase):
    """An endless binary stream of zeros that counts what was read from it."""

    def __init__(self, prefix: bytes = b"") -> None:
        super().__init__()
        self.prefix, self.bytes_read = prefix, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        head = self.prefix[self.bytes_read : self.bytes_read + len(view)]
        view[: len(head)] = head
        view[len(head) :] = bytes(len(view) - len(head))
        self.bytes_read += len(view)
        return len(view)


class Zeros(io.RawIOBase):
    """``size`` zero bytes, generated on the fly."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        memoryview(buffer).cast("B")[:count] = bytes(count)
        self.left -= count
        return count


# --- accepted: our own archive ---------------------------------------------------------


def test_own_archive_of_the_clinic_becomes_an_uploaded_backup(upload_tmp):
    data, original = real_backup("clinica")
    files, sums = storage_files(), table_checksums("clinica")
    upload = SimpleUploadedFile("copia.respaldo", data)

    backup = backup_from_upload(clinic="clinica", source=upload, filename="copia.respaldo", requested_by="ana@clinica")

    backup.refresh_from_db()
    assert (backup.kind, backup.status, backup.payload_format) == ("uploaded", "succeeded", "pg")
    assert backup.clinic.schema_name == "clinica" and backup.requested_by == "ana@clinica"
    assert backup.started_at <= backup.succeeded_at and not backup.error
    assert storage_files() - files == {backup.storage_name}
    assert backup.storage_name.startswith("clinics/clinica/") and backup.storage_name.endswith("-uploaded.respaldo")
    path = stored_path(backup.storage_name)
    assert path.read_bytes() == data
    assert backup.sha256 == sha256_of(path) == hashlib.sha256(data).hexdigest() and backup.size == len(data)
    assert backup.manifest["tables"] == original["tables"] and backup.manifest["tables"]["dental_patient"] == 8
    assert backup.manifest["clinic"]["schema"] == "clinica" and backup.manifest["payload_format"] == "pg"
    assert table_checksums("clinica") == sums
    assert list(upload_tmp.iterdir()) == [] and not temp_files_open(upload_tmp)


def test_the_upload_is_spooled_privately_in_the_configured_folder_and_always_removed(upload_tmp):
    data, _manifest = real_backup("clinica")
    seen: list[tuple[str, int]] = []

    class Watching(io.BytesIO):
        def read(self, size=-1):
            seen.extend(temp_files_open(upload_tmp))
            return super().read(size)

    backup = backup_from_upload(clinic=Clinic.objects.get(schema_name="clinica").pk, source=Watching(data))
    assert backup.status == JobStatus.SUCCEEDED
    assert seen and {mode for _path, mode in seen} == {0o600}
    assert all(path.startswith(str(upload_tmp)) for path, _mode in seen)
    assert not temp_files_open(upload_tmp) and list(upload_tmp.iterdir()) == []

    seen.clear()
    refused(Watching(b"SELECT 1;" + b" " * (3 << 20)), upload_tmp)
    assert seen and {mode for _path, mode in seen} == {0o600}


def test_a_web_upload_is_read_where_django_put_it_one_copy_on_disk(upload_tmp, settings, tmp_path, monkeypatch):
    """The console and the API receive files as Django's temporary file: no second, private copy."""
    from django.core.files.uploadedfile import TemporaryUploadedFile

    from backups.services import upload as uploads

    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    spooled: list[int] = []
    real_private_file = uploads._private_file
    monkeypatch.setattr(uploads, "_private_file", lambda: spooled.append(1) or real_private_file())

    def django_file(content: bytes) -> TemporaryUploadedFile:
        received = TemporaryUploadedFile("copia.respaldo", "application/octet-stream", len(content), None)
        received.write(content)
        received.seek(0)
        return received

    data, _manifest = real_backup("clinica")
    backup = backup_from_upload(clinic="clinica", source=django_file(data), filename="copia.respaldo")
    assert backup.status == JobStatus.SUCCEEDED and stored_path(backup.storage_name).read_bytes() == data
    assert backup.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(UploadRefused) as sql:
        backup_from_upload(clinic="clinica", source=django_file(b"SELECT 1;\n"))
    assert sql.value.code == "sql"
    assert spooled == [] and list(upload_tmp.iterdir()) == []
    backup_from_upload(clinic="clinica", source=io.BytesIO(data))  # anything else is still spooled privately
    assert spooled == [1]


# --- refused: archives -----------------------------------------------------------------


def test_another_clinics_archive_is_refused_and_its_own_clinic_accepts_it(upload_tmp):
    data, _manifest = real_backup("bienestar")
    error = refused(data, upload_tmp)
    assert str(error) == "This backup belongs to another clinic (bienestar); a clinic can only restore its own backups."
    assert error.code == "other_clinic"
    assert backup_from_upload(clinic="bienestar", source=io.BytesIO(data)).clinic.schema_name == "bienestar"


def test_an_archive_naming_the_clinic_schema_but_another_clinic_id_is_refused(upload_tmp):
    manifest = clinic_manifest()
    ours = manifest["clinic"]["id"]
    manifest["clinic"]["id"] += 1000  # the platform rebuilt, or the clinic deleted and created again
    error = refused(make_archive(io.BytesIO(b"PGDMP data"), manifest=manifest), upload_tmp)
    assert str(error) == (
        f"This backup was made for the clinic clinica when its internal id was {ours + 1000}; the clinic named "
        f"clinica here has id {ours}. The platform was rebuilt or the clinic was deleted and created again, so "
        "the backup may hold the data of another clinic that had the same name: it is refused. If it really is "
        "this clinic's data, ask the platform operator: they hold the key to open it and can restore it by hand "
        "(docs/archive-format.md, “Opening an archive by hand”)."
    )
    assert error.code == "other_clinic"

    manifest = clinic_manifest(payload_format="json")
    manifest["clinic"]["id"] = None
    error = refused(make_archive(io.BytesIO(b"[\n]\n"), manifest=manifest), upload_tmp)
    assert str(error).startswith(
        f"This backup was made for the clinic clinica when its internal id was null; the clinic named clinica "
        f"here has id {ours}."
    )
    assert str(error).endswith(
        "ask the platform operator: they hold the key to open it, and can take out its records "
        "(docs/archive-format.md, “Opening an archive by hand”) for you to upload here as a JSON export."
    )


def test_another_deployments_archive_is_refused(upload_tmp):
    data = make_archive(io.BytesIO(b"PGDMP data"), identities=[archive.generate_identity()])
    error = refused(data, upload_tmp)
    assert str(error) == (
        "This backup was not made by this Respaldo installation (or was made with a key it no longer has). "
        "If the platform was rebuilt from its backup storage, the operator must first run "
        "python manage.py import_backups: it brings back the clinics' archive keys."
    )
    assert error.code == "wrong_key"


def _tampered_real_archive() -> bytes:
    """Our archive, decrypted (as an escrow key holder can), one payload byte changed, re-encrypted to us."""
    data, _manifest = real_backup("clinica")
    identity = clinic_identity("clinica")
    plain = pyrage.decrypt(data, [x25519.Identity.from_str(identity)])
    raw = bytearray(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plain)).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(raw)), mode="r:") as tar:
        offset = tar.getmember("payload/000001").offset_data
    raw[offset + 100] ^= 0x01
    compressed = zstandard.ZstdCompressor(write_checksum=True).compress(bytes(raw))
    return pyrage.encrypt(compressed, [x25519.Recipient.from_str(archive.identity_public_key(identity))])


def _forged_with_our_public_key() -> bytes:
    """A well-formed archive for this clinic, encrypted to our public key, signed with another key."""
    ours = archive.identity_public_key(clinic_identity("clinica"))
    return make_archive(io.BytesIO(b"PGDMP forged"), identities=[archive.generate_identity()], extra_recipients=[ours])


@pytest.mark.parametrize("forge", [_tampered_real_archive, _forged_with_our_public_key], ids=["tampered", "forged"])
def test_an_archive_altered_and_reencrypted_to_our_public_key_is_refused(upload_tmp, forge):
    data = forge()
    assert data.startswith(b"age-encryption.org/")
    error = refused(data, upload_tmp)
    assert str(error) == "The file has been altered since it was made."
    assert error.code == "altered"


@pytest.mark.parametrize("cut", [60, 300, 0.5, -5000, -1], ids=["header", "after-header", "half", "near-end", "last"])
def test_a_truncated_archive_is_refused(upload_tmp, cut):
    data, _manifest = real_backup("clinica")
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    error = refused(data[:end], upload_tmp)
    assert str(error).startswith("The file is damaged or incomplete (")
    assert error.code == "damaged"


@pytest.mark.parametrize("position", [0.3, 0.5, -1])
def test_an_archive_with_one_flipped_bit_is_refused(upload_tmp, position):
    data, _manifest = real_backup("clinica")
    changed = bytearray(data)
    changed[int(len(data) * position) if isinstance(position, float) else position] ^= 0x10
    error = refused(bytes(changed), upload_tmp)
    assert str(error).startswith("The file is damaged or incomplete (")


def test_a_decompression_bomb_is_refused_without_unpacking_it(upload_tmp, settings):
    bomb = make_archive(Zeros(64 << 20), level=19)
    assert len(bomb) < 64 << 10  # 64 MB of payload in a few KB
    settings.BACKUPS_MAX_PAYLOAD_BYTES = 1 << 20
    error = refused(bomb, upload_tmp)
    assert "uncompressed size limit (1.0 MB)" in str(error)
    assert error.code == "unpacked_too_large"

    settings.BACKUPS_MAX_PAYLOAD_BYTES = 128 << 20  # the same authentic file passes a limit it fits
    assert backup_from_upload(clinic="clinica", source=io.BytesIO(bomb)).size == len(bomb)


def hand_made_archive(manifest: dict, payload: bytes) -> bytes:
    """An archive built by hand as docs/archive-format.md describes it, authenticated with our key.

    Unlike ``write_archive`` it takes any manifest (an older or newer format version).
    """
    identity = str(x25519.Identity.from_str(archive_identities()[0]))
    public = archive.identity_public_key(identity)
    auth_key = hmac.new(identity.encode(), b"respaldo/archive-auth/v1", hashlib.sha256).digest()
    members = [("manifest.json", json.dumps({**manifest, "archive_version": 1}).encode()), ("payload/000001", payload)]
    mac = hmac.new(auth_key, digestmod=hashlib.sha256)
    for name, content in members:
        mac.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    auth = {
        "alg": "HMAC-SHA256",
        "key_id": hashlib.sha256(public.encode()).hexdigest()[:16],
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "mac": mac.hexdigest(),
    }
    members.append(("auth.json", json.dumps(auth).encode()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
    compressed = zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue())
    return pyrage.encrypt(compressed, [x25519.Recipient.from_str(public)])


def test_a_hand_made_archive_of_the_current_format_is_accepted(upload_tmp):
    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(hand_made_archive(clinic_manifest(), b"PGDMP")))
    assert backup.status == JobStatus.SUCCEEDED and backup.payload_format == "pg"


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"format_version": 3}, "made by another version of Respaldo (backup format 3)"),
        ({"format_version": "1"}, 'made by another version of Respaldo (backup format "1")'),
        ({"payload_format": "mysql"}, 'a format this installation does not know ("mysql")'),
    ],
)
def test_an_authentic_archive_of_an_unknown_format_is_refused(upload_tmp, change, phrase):
    error = refused(hand_made_archive({**clinic_manifest(), **change}, b"PGDMP"), upload_tmp)
    assert phrase in str(error) and error.code == "unsupported_format"


# --- refused: database dumps and SQL ---------------------------------------------------


def _pg_dump(*args: str) -> bytes:
    tools = find_pg_tools()
    result = subprocess.run(
        [tools.pg_dump, "--schema=clinica", "--table=clinica.dental_dentist", *args],
        env=libpq_environment(),
        capture_output=True,
        check=True,
    )
    return result.stdout


def test_a_pg_dump_custom_file_is_refused(upload_tmp):
    dump = _pg_dump("--format=custom")
    assert dump.startswith(b"PGDMP") and b"dental_dentist" in dump
    error = refused(dump, upload_tmp)
    assert str(error) == (
        "This is a raw pg_dump file. For safety, Respaldo never runs database dumps uploaded by a clinic; "
        "upload a backup downloaded from Respaldo instead."
    )
    assert error.code == "pg_dump"


@pytest.mark.parametrize(
    "script",
    [
        None,  # a real plain-format pg_dump
        b"\n\n   insert into dental_patient (first_name) values ('x');",
        b"BEGIN;\nDROP TABLE dental_patient;\nCOMMIT;",
        b"\\connect clinica\n\\! rm -rf /\n",
        b"CREATE TABLE x (id int);",
        b"SET statement_timeout = 0;",
        b"\xef\xbb\xbf select 1;",
        b"/* dump */ UPDATE dental_patient SET notes = '';",
    ],
    ids=["pg_dump-plain", "insert", "begin", "psql-meta", "create", "set", "bom-select", "comment"],
)
def test_an_sql_script_is_refused(upload_tmp, script):
    data = script if script is not None else _pg_dump("--format=plain")
    error = refused(data, upload_tmp)
    assert str(error).startswith(
        "This is an SQL script. For safety, Respaldo never runs SQL uploaded by a clinic; upload a backup"
    )
    assert error.code == "sql"


# --- refused: other files --------------------------------------------------------------


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive_file:
        archive_file.writestr("export.json", data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (gzip.compress, "gzip"),
        (zstandard.compress, "zstd"),
        (_zip, "zip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
    ],
)
def test_a_compressed_file_is_refused(upload_tmp, compress, name):
    error = refused(compress(dumpdata("dental", indent=2).encode()), upload_tmp)
    assert str(error) == f"This is a compressed file ({name}); upload the backup file itself, not a compressed copy."
    assert error.code == "compressed"


@pytest.mark.parametrize(("content", "code"), [(b"", "empty"), (b" \n\t\r\n ", "empty"), (b"\xef\xbb\xbf\n", "empty")])
def test_an_empty_file_is_refused(upload_tmp, content, code):
    error = refused(content, upload_tmp)
    assert str(error) == "The file is empty." and error.code == code


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        b"X" + os.urandom(4096),
        "Nombre;Apellido\nZoë;Muñoz\n".encode(),
        b"42",
        b"true",
    ],
    ids=["png", "random", "csv", "json-number", "json-true"],
)
def test_any_other_file_is_refused(upload_tmp, content):
    error = refused(content, upload_tmp)
    assert str(error) == "This file is not a Respaldo backup or a JSON export of clinic records."
    assert error.code == "not_recognized"


def test_a_file_over_the_size_limit_is_refused_as_soon_as_the_limit_is_passed(upload_tmp, settings):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 64 << 10
    source = Endless(prefix=b"[")  # a JSON file without end
    error = refused(source, upload_tmp)
    assert str(error) == "The file is larger than the 64.0 KB limit."
    assert error.code == "too_large"
    assert (64 << 10) < source.bytes_read <= (64 << 10) + 1


def read_bytes() -> int:
    """Bytes this process has read so far (any file, pipe or socket), from /proc/self/io."""
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def test_a_file_larger_than_the_limit_is_refused_from_its_size_without_reading_it(upload_tmp, settings, tmp_path):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 16 << 20
    sparse = tmp_path / "huge.respaldo"
    with open(sparse, "wb") as handle:
        handle.truncate(3 * 1024**3)  # 3 GB of holes: no disk used
    with open(sparse, "rb") as handle:
        handle.seek(100)
        before = read_bytes()
        error = refused(handle, upload_tmp)
        assert read_bytes() - before < 1 << 20  # the file was not read (nor copied)
        assert handle.tell() == 100
    assert str(error) == "The file is larger than the 16.0 MB limit." and error.code == "too_large"

    with open(sparse, "r+b") as handle:  # a file within the limit from where it is read is read
        handle.truncate(16 << 20)
        handle.seek(10)
        handle.write(b"SELECT")
        handle.seek(10)
        error = refused(handle, upload_tmp)
    assert error.code == "sql"


def test_an_upload_declared_larger_than_the_default_limit_is_refused_unread(upload_tmp, settings):
    del settings.BACKUPS_MAX_UPLOAD_BYTES  # the default applies: 2 GiB
    content = Endless()
    error = refused(UploadedFile(file=content, name="huge.respaldo", size=3 * 1024**3), upload_tmp)
    assert str(error) == "The file is larger than the 2.0 GB limit."
    assert content.bytes_read == 0


# --- refused: JSON that is not the clinic's records ------------------------------------


def _domain_records() -> bytes:
    text = dumpdata("clinics.domain", schema="public", indent=2)
    assert '"model": "clinics.domain"' in text
    return text.encode()


def _users_of_the_clinic() -> bytes:
    text = dumpdata("auth.user", indent=2)
    assert '"model": "auth.user"' in text and "pbkdf2" in text
    return text.encode()


def _dental_then(record: dict) -> bytes:
    records = json.loads(dumpdata("dental"))
    return one_per_line([*records[:5], record, *records[5:]])


@pytest.mark.parametrize(
    ("make", "label"),
    [
        (_domain_records, "clinics.domain"),
        (_users_of_the_clinic, "auth.user"),
        (lambda: dumpdata("auth.permission").encode(), "auth.permission"),
        (lambda: dumpdata("clinics.clinic", schema="public").encode(), "clinics.clinic"),
        (lambda: _dental_then({"model": "sessions.session", "pk": "k", "fields": {}}), "sessions.session"),
        (
            lambda: _dental_then({"model": "django_q.schedule", "pk": 1, "fields": {"func": "os.system"}}),
            "django_q.schedule",
        ),
        (lambda: _dental_then({"model": "admin.logentry", "pk": 1, "fields": {}}), "admin.logentry"),
        (lambda: _dental_then({"model": "dental.xray", "pk": 1, "fields": {}}), "dental.xray"),
        (lambda: _dental_then({"model": "nothing", "pk": 1, "fields": {}}), "nothing"),
    ],
    ids=["domain", "users", "permissions", "clinics", "sessions", "django_q", "logentry", "unknown", "no-app"],
)
def test_records_that_are_not_clinic_data_are_refused(upload_tmp, make, label):
    error = refused(make(), upload_tmp)
    assert str(error) == (
        f'The file contains records of "{label}", which is not clinic data: only the clinic\'s records '
        "(patients, appointments, …) can be restored from a file."
    )
    assert error.code == "not_clinic_data"


def test_invalid_json_is_refused_with_its_line_and_column(upload_tmp):
    record = '{"model": "dental.dentist", "pk": 1, "fields": {"first_name": "Ana",}}'
    error = refused(f'[\n{{"model": "dental.dentist", "pk": 9, "fields": {{}}}},\n{record}\n]'.encode(), upload_tmp)
    assert str(error) == (
        "The file is not valid JSON: Expecting property name enclosed in double quotes "
        f"at line 3, column {record.index(',}') + 2}."
    )
    assert error.code == "invalid_json"


VALID = '{"model": "dental.dentist", "pk": 9, "fields": {}}'  # every field gets its default


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (f"[{VALID} {VALID}]", f"Expecting ',' delimiter at line 1, column {len(VALID) + 3}."),
        (f"[{VALID},\n ]", "a record is expected after the last comma at line 2, column 2."),
        (f"[{VALID}] []", f"Extra data after the end of the list at line 1, column {len(VALID) + 4}."),
        (f'[{VALID}, {{"model": "dental.dentist", "pk": 1, "fields": {{"first_name": "An', "it ends in the middle"),
        (f"[\n  {VALID}", "it ends in the middle"),
        (f"[{VALID},\n{{'model': 'dental.dentist'}}]", "enclosed in double quotes at line 2, column 2."),
        ('[{"model": "dental.dentist", "pk": 1, "fields": {"notes": "a\x01b"}}]', "Invalid control character"),
        (f"[{VALID}, tru", "Expecting value at line 1, column"),
    ],
    ids=["no-comma", "trailing-comma", "extra-data", "cut-string", "unclosed", "single-quotes", "control", "literal"],
)
def test_malformed_json_is_refused(upload_tmp, content, phrase):
    error = refused(content.encode(), upload_tmp)
    assert str(error).startswith("The file is not valid JSON: ") and phrase in str(error)
    assert error.code == "invalid_json"


def test_a_truncated_export_is_refused_as_incomplete(upload_tmp):
    data = dumpdata("dental", indent=2).encode()
    for cut in (len(data) // 3, len(data) - 3):
        error = refused(data[:cut], upload_tmp)
        assert "it ends in the middle of the list of records, so it is incomplete" in str(error)


def test_latin1_text_is_refused_as_not_utf8(upload_tmp):
    data = dumpdata("dental", indent=2).encode("latin-1", errors="replace")  # the demo names have ñ, á, ü...
    first = next(i for i, byte in enumerate(data) if byte >= 0x80)
    line = data[:first].count(b"\n") + 1
    error = refused(data, upload_tmp)
    assert str(error).startswith(
        f"The file is not UTF-8 text: byte {first + 1} (0x{data[first]:02X}, on line {line}) is not valid UTF-8."
    )
    assert error.code == "not_utf8"


def test_utf16_text_is_refused_as_not_utf8(upload_tmp):
    error = refused(dumpdata("dental", indent=2).encode("utf-16"), upload_tmp)
    assert str(error).startswith("The file is UTF-16 text") and error.code == "not_utf8"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"model": "dental.dentist", "pk": 1, "fields": {}}', "The file holds a single JSON object"),
        (b"  [ \n ] \n", "The file holds an empty list: there are no records to restore."),
        (b"[1, 2]", "Record 1 of the file (line 1) is not a record"),
    ],
)
def test_json_that_is_not_a_list_of_records_is_refused(upload_tmp, content, message):
    assert str(refused(content, upload_tmp)).startswith(message)


def _record(records: list, label: str) -> tuple[int, dict]:
    index = next(i for i, r in enumerate(records) if r["model"] == label)
    return index, records[index]


@pytest.mark.parametrize(
    ("label", "change", "code", "phrase"),
    [
        ("dental.patient", {"birth_date": "1990-13-45"}, "invalid_value", "field “birth_date”: “1990-13-45”"),
        ("dental.patient", {"favourite_colour": "azul"}, "invalid_value", "dental.patient has no such field"),
        ("dental.patient", {"national_id": None}, "invalid_value", "this field cannot be empty"),
        ("dental.patient", {"notes": {"a": 1}}, "invalid_value", "field “notes”: expected text, found an object"),
        ("dental.patient", {"consent_signature": "not base64!"}, "invalid_value", "is not valid base64"),
        ("dental.patient", {"notes": "nul\u0000byte"}, "invalid_value", "contains a NUL character"),
        ("dental.dentist", {"license_number": "X" * 41}, "invalid_value", "at most 40 are allowed"),
        ("dental.dentist", {"active": "maybe"}, "invalid_value", "field “active”:"),
        ("dental.dentist", {"works_from": "25:61"}, "invalid_value", "field “works_from”:"),
        ("dental.inventoryitem", {"unit_cost": "1.234"}, "invalid_value", "1.234 has more than 2 decimal places"),
        ("dental.inventoryitem", {"unit_cost": "123456789"}, "invalid_value", "is too large"),
        ("dental.inventoryitem", {"reorder_level": -1}, "invalid_value", "-1 is out of range (0 to 2147483647)"),
        ("dental.inventoryitem", {"reorder_level": 2.5}, "invalid_value", "expected a whole number"),
        ("dental.appointment", {"patient": ["CL00000000T"]}, "natural_keys", "natural keys"),
        ("dental.appointment", {"duration": "a while"}, "invalid_value", "field “duration”:"),
        ("dental.appointment", {"patient": 999999}, "missing_reference", "dental.patient id 999999"),
        ("dental.appointment", {"starts_at": "yesterday"}, "invalid_value", "field “starts_at”:"),
        ("dental.treatment", {"materials": [["SKU-1"]]}, "natural_keys", "natural keys"),
        ("dental.treatment", {"materials": 3}, "invalid_value", "expected a list of ids"),
        ("dental.treatment", {"materials": [999999]}, "missing_reference", "dental.inventoryitem id 999999"),
        ("dental.invoice", {"reference": "not-a-uuid"}, "invalid_value", "field “reference”:"),
        (
            "dental.appointment",
            {"status": "hacked"},
            "invalid_value",
            "field “status”: “hacked” is not one of the allowed values (scheduled, confirmed, completed, "
            "cancelled, no_show).",
        ),
        ("dental.appointment", {"status": "Scheduled"}, "invalid_value", "“Scheduled” is not one of the allowed"),
        ("dental.invoice", {"status": ""}, "invalid_value", "field “status”: “” is not one of the allowed values"),
        ("dental.payment", {"method": "bitcoin"}, "invalid_value", "field “method”: “bitcoin” is not one of the"),
    ],
)
def test_a_record_with_a_bad_value_is_refused_naming_record_and_field(upload_tmp, label, change, code, phrase):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, label)
    record["fields"].update(change)
    error = refused(one_per_line(records), upload_tmp)
    where = f"Record {index + 1} of the file (line {index + 2}"
    assert error.code == code, str(error)
    assert phrase in str(error)
    if code in ("invalid_value", "natural_keys"):
        assert str(error).startswith(f"{where}, {label} id {record['pk']}), field “")


@pytest.mark.parametrize(
    ("edit", "code", "phrase"),
    [
        (lambda r: r.pop("pk"), "natural_keys", "has no id (“pk”): files exported with natural keys"),
        (lambda r: r.update(pk=None), "natural_keys", "has no id"),
        (lambda r: r.update(extra=1), "invalid_record", "has unexpected keys (extra)"),
        (lambda r: r.update(fields=[]), "invalid_record", "has no “fields” object"),
        (lambda r: r["fields"].pop("created_at"), "invalid_value", "the field is missing"),
    ],
    ids=["no-pk", "null-pk", "extra-key", "fields-list", "missing-field"],
)
def test_a_malformed_record_is_refused(upload_tmp, edit, code, phrase):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, "dental.patient")
    edit(record)
    error = refused(one_per_line(records), upload_tmp)
    assert error.code == code and phrase in str(error), str(error)
    assert str(error).startswith(f"Record {index + 1} of the file (line {index + 2}")


@pytest.mark.parametrize(
    "name",
    [
        "../other/xrays/2024/01/a.png",
        "/etc/passwd",
        "xrays/../../bienestar/xrays/2024/01/a.png",
        "xrays/2024/../../../secret.png",
        "xrays\\..\\..\\bienestar\\a.png",
        "..\\..\\etc\\passwd",
        "C:\\Windows\\win.ini",
        "bienestar/xrays/2024/01/a.png",
        "clinica/xrays/2024/01/a.png",
        "xrays//etc/passwd",
        "./xrays/2024/01/a.png",
        "xrays/2024/01/",
        "xrays",
        "..",
    ],
)
def test_a_file_name_outside_the_clinics_media_folder_is_refused(upload_tmp, name):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, "dental.patient")
    record["fields"]["xray"] = name
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}, dental.patient id {record['pk']}), field “xray”: "
        f"“{name}” is not the name of a file of this clinic: it must be a path inside the clinic's “xrays/” "
        "folder (relative, without “..” or backslashes)."
    )
    assert error.code == "invalid_value"


def test_allowed_choices_and_file_names_inside_the_clinics_folder_are_accepted(upload_tmp):
    records = json.loads(dumpdata("dental"))
    _index, patient = _record(records, "dental.patient")
    _index, appointment = _record(records, "dental.appointment")
    patient["fields"]["xray"] = "xrays/2024/02/radiografía niño ñ (1).png"
    appointment["fields"]["status"] = "no_show"
    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(one_per_line(records)))
    payload = list(read_json_payload(io.BytesIO(payload_of(backup))))
    assert ("dental.patient", patient["pk"]) in {(label, pk) for label, pk, _f in payload}
    fields = {(label, pk): f for label, pk, f in payload}
    assert fields["dental.patient", patient["pk"]]["xray"] == "xrays/2024/02/radiografía niño ñ (1).png"
    assert fields["dental.appointment", appointment["pk"]]["status"] == "no_show"


BIG = "1" * 5000


@pytest.mark.parametrize(
    ("label", "edit", "number"),
    [
        ("dental.patient", lambda r: r.update(pk="@N@"), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(reorder_level="@N@"), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(reorder_level="@N@"), "-" + "9" * 4301),
        ("dental.patient", lambda r: r["fields"].update(allergies=[{"grado": "@N@"}]), BIG),
        ("dental.treatment", lambda r: r["fields"].update(materials=["@N@"]), BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(unit_cost="@N@"), BIG + ".25"),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "0." + BIG),
        ("dental.inventoryitem", lambda r: r["fields"].update(unit_cost="@N@"), "1e" + "9" * 30),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "1e5000"),
        ("dental.patient", lambda r: r["fields"].update(allergies=["@N@"]), "-2.5E-5000"),
    ],
    ids=["pk", "integer", "negative", "json", "m2m", "decimal", "fraction", "huge-exponent", "exponent", "tiny"],
)
def test_a_number_too_long_to_read_is_refused(upload_tmp, label, edit, number):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, label)
    edit(record)
    data = one_per_line(records).replace(b'"@N@"', number.encode())
    error = refused(data, upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}) holds a number of more than 4300 digits "
        f"({number[:20]}…), which cannot be restored."
    )
    assert error.code == "invalid_record"


@pytest.mark.parametrize(
    ("label", "name"),
    [("dental.inventoryitem", "reorder_level"), ("dental.inventoryitem", "unit_cost"), ("dental.patient", "pk")],
)
def test_a_number_too_long_to_read_given_as_text_is_refused(upload_tmp, label, name):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, label)
    where = f"{label} id {record['pk']}"
    if name == "pk":
        record["pk"] = BIG
        where = f"{label} id {json.dumps(BIG)[:60]}"
    else:
        record["fields"][name] = BIG
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {index + 1} of the file (line {index + 2}, {where}), field “{name}”: “{BIG[:20]}…” has more "
        "than 4300 digits, which cannot be restored."
    )
    assert error.code == "invalid_value"


def test_a_repeated_record_is_refused(upload_tmp):
    records = json.loads(dumpdata("dental"))
    index, record = _record(records, "dental.patient")
    records.append(record)
    error = refused(one_per_line(records), upload_tmp)
    assert str(error) == (
        f"Record {len(records)} of the file (line {len(records) + 1}) repeats dental.patient id {record['pk']}: "
        "each record may appear only once."
    )


def test_links_given_both_nested_and_as_through_records_are_refused(upload_tmp):
    records = json.loads(dumpdata("dental"))
    records.append({"model": "dental.treatment_materials", "pk": 1, "fields": {"treatment": 1, "inventoryitem": 1}})
    error = refused(one_per_line(records), upload_tmp)
    assert str(error).startswith("The file gives the links of “dental.treatment.materials” twice")


# --- refusals are rendered in the reader's language, when shown ------------------------


def test_a_refusal_raised_in_english_reads_in_spanish_when_shown_later(upload_tmp, settings):
    """A refusal keeps a code, a message id and JSON parameters, never a sentence: the sentence,
    inner reasons included, is made in the language of whoever reads it, now or from a stored record."""
    settings.BACKUPS_MAX_UPLOAD_BYTES = 64 << 10
    ours = clinic_manifest()["clinic"]["id"]
    manifest = clinic_manifest(payload_format="json")
    manifest["clinic"]["id"] = None
    records = json.loads(dumpdata("dental"))
    index, appointment = _record(records, "dental.appointment")
    appointment["fields"]["status"] = "hacked"
    where = f"(línea {index + 2}, dental.appointment id {appointment['pk']})"
    with translation.override("en"):
        errors = {
            "too_large": refused(Endless(prefix=b"["), upload_tmp),
            "sql": refused(b"SELECT 1;\n", upload_tmp),
            "other_clinic": refused(make_archive(io.BytesIO(b"[\n]\n"), manifest=manifest), upload_tmp),
            "altered": refused(_forged_with_our_public_key(), upload_tmp),
            "invalid_value": refused(one_per_line(records), upload_tmp),
        }
    spanish = {
        "too_large": "El archivo supera el límite de 64.0 KB.",
        "sql": (
            "Este archivo es un script SQL. Por seguridad, Respaldo nunca ejecuta SQL subido por una clínica; suba "
            "en su lugar un respaldo descargado de Respaldo o una exportación JSON de los registros de "
            "la clínica."
        ),
        "other_clinic": (
            "Este respaldo se hizo para la clínica clinica cuando su identificador interno era null; la clínica "
            f"llamada clinica aquí tiene el identificador {ours}. La plataforma se reconstruyó o la clínica se "
            "borró y se volvió a crear, así que el respaldo puede contener los datos de otra clínica que tenía el "
            "mismo nombre: se rechaza. Si de verdad son los datos de esta clínica, pídaselo al operador de la "
            "plataforma: tiene la clave para abrirla y puede extraer sus registros (docs/archive-format.md, "
            "«Opening an archive by hand») para que usted los suba aquí como una exportación JSON."
        ),
        "altered": "El archivo ha sido alterado desde que se creó.",
        "invalid_value": (
            f"El registro {index + 1} del archivo {where}, campo «status»: «hacked» no es uno de los valores "
            "permitidos (scheduled, confirmed, completed, cancelled, no_show)."
        ),
    }
    for code, error in errors.items():
        assert error.code == code
        stored = json.loads(json.dumps(error.record))  # what a job row keeps
        assert stored["code"] == code and stored["message_id"] == error.message_id
        with translation.override("es"):
            assert str(error) == spanish[code]
            assert exceptions.render(stored["message_id"], stored["params"]) == spanish[code]
        with translation.override("en"):
            assert not any(word in str(error) for word in ("El ", "Esta ", "Este ", "registro")), str(error)
    assert errors["invalid_value"].params["reason"] == {
        "message_id": "upload.sentence",
        "params": {
            "text": {
                "message_id": "upload.invalid_value.choices",
                "params": {"value": "hacked", "choices": "scheduled, confirmed, completed, cancelled, no_show"},
            }
        },
    }


def test_djangos_own_reason_for_a_bad_value_is_rendered_in_the_readers_language(upload_tmp):
    records = json.loads(dumpdata("dental"))
    index, patient = _record(records, "dental.patient")
    patient["fields"]["birth_date"] = "1990-13-45"
    with translation.override("es"):  # raised while another language is active: nothing of it is kept
        error = refused(one_per_line(records), upload_tmp)
    reason = error.params["reason"]
    assert reason == {"message_id": "upload.django.date_invalid", "params": {"value": "1990-13-45"}}
    with translation.override("en"):
        assert str(error) == (
            f"Record {index + 1} of the file (line {index + 2}, dental.patient id {patient['pk']}), field "
            "“birth_date”: “1990-13-45” value has the correct format (YYYY-MM-DD) but it is an invalid date."
        )
    with translation.override("es"):  # Django's own Spanish, inside ours
        assert str(error) == (
            f"El registro {index + 1} del archivo (línea {index + 2}, dental.patient id {patient['pk']}), campo "
            f"«birth_date»: {translation.gettext(UPLOAD_MESSAGES['upload.django.date_invalid']) % reason['params']}"
        )
        assert "1990-13-45" in str(error) and "fecha inválida" in str(error)


@pytest.mark.parametrize(
    "field_class",
    [
        models.IntegerField,
        models.FloatField,
        models.DecimalField,
        models.BooleanField,
        models.UUIDField,
        models.DateField,
        models.DateTimeField,
        models.TimeField,
        models.DurationField,
        models.GenericIPAddressField,
        models.JSONField,
    ],
)
def test_djangos_messages_for_bad_values_are_all_known_so_they_can_be_rendered_later(field_class):
    """A message Django has and we do not list would be kept in English only."""
    known = set(UPLOAD_MESSAGES.values())
    with translation.override(None):
        invalid = {
            str(text)
            for key, text in field_class().error_messages.items()
            if key.startswith("invalid") and key != "invalid_choice"  # what to_python() and validators raise
        }
    assert invalid and invalid <= known, invalid - known


# --- accepted: Django JSON exports -----------------------------------------------------


def _as_exported(text: str) -> bytes:
    return text.encode()


def _reversed_on_one_line(text: str) -> bytes:
    """Children before parents, pks descending, the whole file one line with no spaces."""
    return json.dumps(json.loads(text)[::-1], separators=(",", ":"), ensure_ascii=True).encode()


def _bom_crlf_tabs(text: str) -> bytes:
    return (
        b"\xef\xbb\xbf" + json.dumps(json.loads(text), indent="\t", ensure_ascii=False).replace("\n", "\r\n").encode()
    )


@pytest.mark.parametrize("shape", [_as_exported, _reversed_on_one_line, _bom_crlf_tabs])
def test_a_dumpdata_export_becomes_a_json_backup_that_restores_exactly(upload_tmp, shape):
    truncate_to_milliseconds("clinica")
    before = dental_state("clinica")
    all_before = table_checksums("clinica")
    files = storage_files()
    export = dumpdata("dental", indent=2)

    backup = backup_from_upload(
        clinic="clinica", source=SimpleUploadedFile("export.json", shape(export)), filename="export.json"
    )

    backup.refresh_from_db()
    assert (backup.kind, backup.status, backup.payload_format) == ("uploaded", "succeeded", "json")
    assert storage_files() - files == {backup.storage_name}
    assert backup.sha256 == sha256_of(stored_path(backup.storage_name))
    assert table_checksums("clinica") == all_before  # uploading changes nothing
    with schema_context("clinica"):
        expected = {m._meta.db_table: m.objects.count() for m in payload_models()}
    assert backup.manifest["tables"] == expected
    with connection.cursor() as cursor:
        cursor.execute('SELECT app, name FROM "clinica".django_migrations ORDER BY app, name')
        assert backup.manifest["migrations"]["dental"] == [n for a, n in cursor.fetchall() if a == "dental"]
    assert backup.manifest["postgresql"]["server"].split(".")[0].isdigit()

    payload = payload_of(backup)
    records = list(read_json_payload(io.BytesIO(payload)))
    order = [m._meta.label_lower for m in payload_models()]
    labels = [label for label, _pk, _fields in records]
    assert labels == sorted(labels, key=order.index)  # parents first, whatever the file's order
    for label in set(labels):
        pks = [pk for lab, pk, _f in records if lab == label]
        assert pks == sorted(pks) and len(set(pks)) == len(pks)

    with schema_context("clinica"):  # scramble, then restore from the uploaded backup
        Patient.objects.update(notes="borrado")
        Treatment.materials.through.objects.all().delete()
    assert dental_state("clinica") != before
    assert restore_payload(backup) == expected
    assert dental_state("clinica") == before


def test_many_to_many_lists_become_through_rows_and_keep_the_links(upload_tmp):
    with schema_context("clinica"):
        items = list(InventoryItem.objects.order_by("pk")[:3])
        first, second = Treatment.objects.order_by("pk")[:2]
        first.materials.set([items[2], items[0]])
        second.materials.set([])
        expected = {t.pk: {m.pk for m in t.materials.all()} for t in Treatment.objects.all()}
        invoices = {i.pk: {t.pk for t in i.treatments.all()} for i in Invoice.objects.all()}
    assert any(expected.values()) and any(invoices.values())
    export = json.loads(dumpdata("dental", indent=2))
    nested = {r["pk"]: r["fields"]["materials"] for r in export if r["model"] == "dental.treatment"}
    assert sorted(nested[first.pk]) == sorted([items[0].pk, items[2].pk]) and nested[second.pk] == []
    for record in export:  # a repeated id in a list is one link, as Django's m2m set() makes it
        if record["pk"] == first.pk and record["model"] == "dental.treatment":
            record["fields"]["materials"].append(items[0].pk)

    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(json.dumps(export, indent=2).encode()))

    records = list(read_json_payload(io.BytesIO(payload_of(backup))))
    through = [(pk, f) for label, pk, f in records if label == "dental.treatment_materials"]
    assert [pk for pk, _f in through] == list(range(1, len(through) + 1))  # numbered from 1 in file order
    assert {(f["treatment"], f["inventoryitem"]) for _pk, f in through} == {
        (t, m) for t, ms in expected.items() for m in ms
    }
    assert all("materials" not in f for label, _pk, f in records if label == "dental.treatment")
    assert backup.manifest["tables"]["dental_treatment_materials"] == len(through)

    with schema_context("clinica"):
        Treatment.materials.through.objects.all().delete()
        Treatment.invoices.through.objects.all().delete()
    restore_payload(backup)
    with schema_context("clinica"):
        assert {t.pk: {m.pk for m in t.materials.all()} for t in Treatment.objects.all()} == expected
        assert {i.pk: {t.pk for t in i.treatments.all()} for i in Invoice.objects.all()} == (invoices)
        new = Treatment.objects.create(
            patient=first.patient,
            dentist=first.dentist,
            tooth_number=11,
            procedure="x",
            cost=1,
            performed_on="2025-01-01",
        )
        new.materials.add(items[1])  # the through table's sequence was reset past the renumbered ids


def test_our_own_json_payload_uploaded_as_a_file_comes_back_byte_for_byte(upload_tmp):
    with schema_context("clinica"):
        dentist = Dentist.objects.create(
            first_name='Ñandú «Ågata» 😀 "x" \\ y\nz',
            last_name="",
            license_number="COL-UP-1",
            works_from=time(7, 15, 9, 123456),
        )
        patient = Patient.objects.create(
            first_name="Zoë", last_name="", national_id="UP-1", allergies=Value(None, JSONField()), notes="\t"
        )
        precise = Patient.objects.create(first_name="P", national_id="UP-2", consent_signature=bytes(range(256)))
        with connection.cursor() as cursor:  # numbers a float cannot hold: the ORM would round them
            cursor.execute(
                "UPDATE dental_patient SET allergies = %s::jsonb WHERE id = %s",
                [
                    '{"precise": 0.1000000000000000055511151231257827, "big": 1e40, "l": [null, true, "ü\\n"]}',
                    precise.pk,
                ],
            )
        Appointment.objects.create(
            patient=patient,
            dentist=dentist,
            starts_at=datetime(2025, 3, 30, 1, 59, 59, 999999, tzinfo=UTC),
            duration=timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5),
        )
        canonical = io.BytesIO()
        write_json_payload(canonical)
    assert b'"json_nulls": ["allergies"]' in canonical.getvalue()

    backup = backup_from_upload(clinic="clinica", source=io.BytesIO(canonical.getvalue()))

    assert payload_of(backup) == canonical.getvalue()


def test_a_large_export_streams_in_bounded_memory(upload_tmp):
    notes = "Historia clínica: " + "x" * 2000
    records = [
        {
            "model": "dental.patient",
            "pk": pk,
            "fields": {
                "first_name": f"Paciente {pk}",
                "last_name": "Ñúñez",
                "national_id": f"ID{pk:08d}",
                "birth_date": "1980-01-31",
                "phone": "",
                "email": "",
                "allergies": ["látex", {"grado": pk}],
                "notes": notes,
                "xray": "",
                "consent_signature": None,
                "created_at": "2024-05-06T07:08:09.123456Z",
            },
        }
        for pk in range(1, 12_001)
    ]
    data = json.dumps(records, indent=2, ensure_ascii=False).encode()
    del records
    assert len(data) > 24 << 20

    tracemalloc.start()
    try:
        backup = backup_from_upload(clinic="clinica", source=io.BytesIO(data))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert backup.manifest["tables"]["dental_patient"] == 12_000
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MB for a {len(data) / 2**20:.0f} MB file"


# --- failures that are not the file's -------------------------------------------------


def test_without_an_archive_key_nothing_is_read(upload_tmp, settings):
    settings.BACKUPS_AGE_IDENTITIES = []
    settings.BACKUPS_AGE_IDENTITY_FILE = None
    source, before = Endless(), state()
    with pytest.raises(KeyConfigError, match="no archive key is configured"):
        backup_from_upload(clinic="clinica", source=source)
    assert source.bytes_read == 0 and state() == before


def test_a_storage_failure_or_a_broken_upload_leaves_nothing(upload_tmp, settings, tmp_path):
    export = dumpdata("dental", indent=2).encode()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    good_storages = settings.STORAGES
    settings.STORAGES = {
        **good_storages,
        "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocker)}},
    }
    before = state()
    with pytest.raises(StorageError):
        backup_from_upload(clinic="clinica", source=io.BytesIO(export))
    settings.STORAGES = good_storages
    assert state() == before and list(upload_tmp.iterdir()) == [] and not temp_files_open(upload_tmp)

    class Disconnecting(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > len(export) // 2:
                raise ConnectionResetError("the browser went away")
            return super().read(min(size, 4096))

    with pytest.raises(ConnectionResetError):
        backup_from_upload(clinic="clinica", source=Disconnecting(export))
    assert state() == before and not temp_files_open(upload_tmp)


class Trickle(io.RawIOBase):
    """Gives at most ``step`` bytes per read: every record and character gets cut somewhere."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data[self.pos : self.pos + min(self.step, len(buffer))]
        memoryview(buffer).cast("B")[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_the_json_reader_is_independent_of_where_reads_cut_the_text(step):
    records = [
        {"model": "dental.patient", "pk": n, "fields": {"t": "ñ😀€" * n, "d": 1.5, "x": [None, True]}}
        for n in range(40)
    ]
    text, lines = "\ufeff[\r\n", []
    for record in records:
        lines.append(text.count("\n") + 1)
        text += json.dumps(record, ensure_ascii=False, indent=record["pk"] % 3 or None) + ",\n"
    text = text[:-2] + "]\n"
    got = list(JsonArray(Trickle(text.encode(), step)).elements())
    assert [value for _n, _line, value in got] == json.loads(text[1:], parse_float=Decimal)
    assert [line for _n, line, _v in got] == lines
    assert [n for n, _line, _v in got] == list(range(1, 41))

    broken = text.replace('"pk": 33, "fields": {', '"pk": 33, "fields": {,')
    line = broken[: broken.index('"fields": {,')].count("\n") + 1
    column = broken.index('"fields": {,') + 11 - broken.rfind("\n", 0, broken.index('"fields": {,'))
    with pytest.raises(UploadRefused, match=f"at line {line}, column {column}\\."):
        list(JsonArray(Trickle(broken.encode(), step)).elements())
    first_big = next(
        n for n, r in enumerate(records, 1) if len(json.dumps(r, ensure_ascii=False, indent=r["pk"] % 3 or None)) > 200
    )
    with pytest.raises(UploadRefused, match=f"Record {first_big} of the file is larger than 200 bytes"):
        list(JsonArray(Trickle(text.encode(), step), max_element_chars=200).elements())
