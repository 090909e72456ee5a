"""Refusals keep a code and parameters; the sentence is rendered in the reader's language when shown."""

import json

import pytest
from django.test import override_settings
from django.utils import translation

from backups.exceptions import ClinicBusy, RespaldoError, render
from backups.models import Backup, JobStatus, Restore
from backups.services import restore as restores
from backups.services.backup import backup_request, backup_run
from backups.tests.helpers import SCHEMA, make_backup, stored_path


def in_language(language: str, show) -> str:
    with translation.override(language):
        return show()


def test_a_busy_clinic_reads_in_the_readers_language(scratch_clinic):
    backup_request(clinic=SCHEMA, enqueue=False)
    with pytest.raises(ClinicBusy) as busy:
        backup_request(clinic=SCHEMA, enqueue=False)
    assert busy.value.code == "clinic_busy"
    assert in_language("es", lambda: str(busy.value)).startswith(f"La clínica {SCHEMA} ya tiene el respaldo n.º ")
    assert in_language("en", lambda: str(busy.value)).startswith(f"Clinic {SCHEMA} already has backup #")
    assert json.loads(json.dumps(busy.value.record))["code"] == "clinic_busy"


def test_another_clinics_backup_reads_in_spanish(scratch_clinic):
    theirs = make_backup("bienestar")
    with pytest.raises(RespaldoError) as refused:
        restores.restore_request(clinic=SCHEMA, backup_id=theirs.pk, enqueue=False)
    assert refused.value.code == "backup_of_other_clinic"
    assert in_language("es", lambda: str(refused.value)) == (
        f"El respaldo n.º {theirs.pk} pertenece a otra clínica; una clínica solo se puede restaurar desde sus "
        "propios respaldos."
    )


def test_a_tampered_archive_is_stored_as_a_code_and_shown_in_each_readers_language(scratch_clinic):
    backup = make_backup()
    path = stored_path(backup.storage_name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    Backup.objects.filter(pk=backup.pk).update(sha256=__import__("hashlib").sha256(bytes(data)).hexdigest())
    restore = restores.restore_run(
        restore_id=restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False).pk
    )
    row = Restore.objects.get(pk=restore.pk)
    assert row.status == JobStatus.FAILED and row.error_code in {"tampered", "damaged"}
    spanish = in_language("es", row.error_message)
    assert "La clínica no ha cambiado." in spanish
    assert spanish.startswith(("Este respaldo no ha superado", "Este archivo de respaldo está dañado"))
    # the age library's words ("encrypted data: decryption error") are said in Spanish too
    assert "decryption" not in spanish and "encrypted data" not in spanish, spanish
    assert "los datos cifrados no se pueden descifrar" in spanish, spanish
    assert in_language("en", row.error_message).endswith("The clinic is unchanged.")
    assert row.error.endswith("The clinic is unchanged.")  # the English text, for logs


@override_settings(BACKUPS_AGE_IDENTITY_FILE=None, BACKUPS_AGE_IDENTITY="", BACKUPS_GENERATE_DEV_KEY=False)
def test_a_missing_key_reads_in_spanish(scratch_clinic):
    backup = backup_run(backup_id=backup_request(clinic=SCHEMA, enqueue=False).pk)
    assert backup.status == JobStatus.FAILED and backup.error_code == "key_config"
    assert in_language("es", backup.error_message).startswith("El cifrado de los respaldos no está bien configurado.")


def test_a_code_this_release_does_not_know_still_shows_something():
    assert render("from_a_newer_release", {"n": 1}) == "from_a_newer_release {'n': 1}"
