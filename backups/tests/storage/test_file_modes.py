"""Who may read a clinic's files on the server: X-rays and local backups belong to the server account only.

Real storages on real folders; the umask is set to the usual 022 so that a file created with
the default mode (0666 minus the umask) would show up as 0644.
"""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django_tenants.utils import schema_context

from backups.storage import backup_key, store_stream
from dental.models import Patient

MiB = 1024 * 1024
KEY = backup_key(schema="clinica", kind="manual", created_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))


@pytest.fixture(autouse=True)
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def folders_between(path: Path, top: Path) -> list[Path]:
    """The folders from ``path``'s own up to ``top``, both included."""
    folders = [path.parent]
    while folders[-1] != top:
        assert top in folders[-1].parents, f"{path} is not under {top}"
        folders.append(folders[-1].parent)
    return folders


@pytest.mark.django_db
def test_an_xray_is_readable_by_the_server_account_only(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES}  # a new default storage, with MEDIA_ROOT above
    with schema_context("clinica"):
        patient = Patient.objects.order_by("pk").first()
        patient.xray.save("panoramica.png", ContentFile(b"\x89PNG\r\n\x1a\n" + os.urandom(4096)), save=True)
        path = Path(patient.xray.path)
    clinic_folder = tmp_path / "media" / "clinica"
    assert path.is_file() and clinic_folder in path.parents
    assert oct(mode(path)) == oct(0o600)
    for folder in folders_between(path, tmp_path / "media"):
        assert oct(mode(folder)) == oct(0o700), folder


def test_a_local_backup_file_is_private_from_its_first_byte(settings, tmp_path):
    """The file is looked at while the storage is still writing it, not after the save."""
    root = tmp_path / "backups"
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root), "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
        },
    }
    seen: list[tuple[int, int]] = []

    def produce(writer) -> None:
        writer.write(os.urandom(4 * MiB))  # more than the pipe holds: the storage is writing the file
        path = root / KEY
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append((path.stat().st_size, mode(path)))
        writer.write(os.urandom(MiB))

    stored, _ = store_stream(KEY, produce)
    [(size_then, mode_then)] = seen
    assert 0 < size_then < stored.size == 5 * MiB  # observed part-way
    assert oct(mode_then) == oct(0o600)
    assert oct(mode(root / stored.name)) == oct(0o600)
    for folder in folders_between(root / stored.name, root):
        assert oct(mode(folder)) == oct(0o700), folder
