"""Upload failures that are not the file's: a busy clinic, no archive key, a storage failure or a
broken upload; nothing is kept.
"""

from __future__ import annotations

import io

import pytest

from backups import exceptions
from backups.archive import KeyConfigError
from backups.services.backup import backup_request
from backups.services.upload import backup_from_upload
from backups.storage import StorageError
from backups.tests.helpers import (
    dumpdata,
    temp_files_open,
)
from backups.tests.services.uploads.helpers import (
    Endless,
    real_backup,
    state,
)

pytestmark = pytest.mark.django_db


def test_an_upload_to_a_busy_clinic_is_refused_and_keeps_nothing(upload_tmp):
    """An uploaded file becomes a backup through the job states, so a busy clinic refuses it like a backup."""
    data, _original = real_backup("clinica")
    waiting = backup_request(clinic="clinica", enqueue=False)
    before = state("clinica")
    with pytest.raises(exceptions.ClinicBusy) as busy:
        backup_from_upload(clinic="clinica", source=io.BytesIO(data), filename="copia.respaldo")
    assert busy.value.code == "clinic_busy" and f"backup #{waiting.pk}" in str(busy.value)
    assert state("clinica") == before
    assert list(upload_tmp.iterdir()) == [] and not temp_files_open(upload_tmp)


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
