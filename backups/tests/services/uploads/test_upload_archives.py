"""Uploading an archive to become a clinic's backup: our own archive is accepted; another clinic's or
deployment's, a tampered, truncated, forged or bomb archive is refused.

Real database, real archives, real files. Every refusal is checked twice: its message, and
that nothing changed (no catalog row, no stored file, no temporary file, the clinic's data
as it was, down to a checksum of every row of every table of its schema).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tarfile

import pyrage
import pytest
import zstandard
from django.core.files.uploadedfile import SimpleUploadedFile
from pyrage import x25519

from backups import archive
from backups.keys import archive_identities
from backups.models import JobStatus
from backups.services.upload import UploadRefused, backup_from_upload
from backups.tests.helpers import (
    clinic_identity,
    sha256_of,
    storage_files,
    stored_path,
    table_checksums,
    temp_files_open,
)
from backups.tests.services.uploads.helpers import (
    clinic_manifest,
    forged_with_our_public_key,
    make_archive,
    real_backup,
    refused,
)
from clinics.models import Clinic

pytestmark = pytest.mark.django_db


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


@pytest.mark.parametrize("forge", [_tampered_real_archive, forged_with_our_public_key], ids=["tampered", "forged"])
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
