"""Helpers shared by the upload tests: real and hand-made archives, the state an upload must leave
as it was, and checks of what a refusal says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.utils import timezone

from backups import archive
from backups.keys import archive_identities
from backups.keys.clinic import identities_held
from backups.models import Backup, JobStatus
from backups.services.backup import backup_request, backup_run
from backups.services.upload import UploadRefused, backup_from_upload
from backups.tests.helpers import (
    clinic_identity,
    storage_files,
    stored_path,
    table_checksums,
    temp_files_open,
)
from clinics.models import Clinic


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


_ARCHIVES: dict[str, tuple[bytes, dict]] = {}


def real_backup(schema: str) -> tuple[bytes, dict]:
    """(archive bytes, catalog manifest) of a real pg backup of a demo clinic, made once per session."""
    if schema not in _ARCHIVES:
        backup = backup_run(backup_id=backup_request(clinic=schema, enqueue=False).pk)
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


def forged_with_our_public_key() -> bytes:
    """A well-formed archive for this clinic, encrypted to our public key, signed with another key."""
    ours = archive.identity_public_key(clinic_identity("clinica"))
    return make_archive(io.BytesIO(b"PGDMP forged"), identities=[archive.generate_identity()], extra_recipients=[ours])


def record_of(records: list, label: str) -> tuple[int, dict]:
    """(index, record) of the first record of model ``label`` in ``records``."""
    index = next(i for i, r in enumerate(records) if r["model"] == label)
    return index, records[index]
