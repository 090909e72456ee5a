"""Every command refuses a refused archive-key setting with one line, a non-zero exit, no traceback.

Real ``manage.py`` processes, since the keys are read from the environment at start-up, on
the test database and storage; the archive a command is given is a real backup of a demo
clinic, made with the proper key before the setting is broken.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.utils import translation

from backups.archive import generate_identity
from backups.exceptions import UploadRefused
from backups.models import Backup, ClinicKey, CloneJob, JobStatus, Restore
from backups.services.backup import backup_request, backup_run
from backups.tests.helpers import storage_files, stored_path, table_checksums
from clinics.models import Clinic
from conftest import manage

# The refused settings (README, "Archive keys"), as environment variables, and what the refusal says.
REFUSED = {
    "former list setting": (
        lambda tmp: {"BACKUPS_AGE_IDENTITIES": generate_identity()},
        "BACKUPS_AGE_IDENTITIES is no longer read",
    ),
    "key file with two keys": (
        lambda tmp: {"BACKUPS_AGE_IDENTITY_FILE": key_file(tmp / "two.txt", generate_identity(), generate_identity())},
        "holds 2 keys; it must hold exactly one",
    ),
    "key and key file": (
        lambda tmp: {
            "BACKUPS_AGE_IDENTITY": generate_identity(),
            "BACKUPS_AGE_IDENTITY_FILE": str(settings.BACKUPS_AGE_IDENTITY_FILE),
        },
        "in BACKUPS_AGE_IDENTITY and BACKUPS_AGE_IDENTITY_FILE: set only one",
    ),
    "comma in the key": (
        lambda tmp: {
            "BACKUPS_AGE_IDENTITY": f"{generate_identity()},{generate_identity()}",
            "BACKUPS_AGE_IDENTITY_FILE": "",
        },
        "BACKUPS_AGE_IDENTITY holds more than one key",
    ),
}

# Every command that reads or writes archives (``{backup}``/``{file}``: a real backup of clinica).
COMMANDS = [
    ("backup_clinic", "clinica"),
    ("backup_clinic", "--all"),
    ("restore_clinic", "clinica", "--backup", "{backup}", "--yes"),
    ("restore_clinic", "clinica", "--file", "{file}", "--yes"),
    ("verify_backups",),
    ("verify_backups", "clinica", "--drill"),
    ("clone_clinic", "{backup}", "clon_llaves"),
    ("import_backups",),
    ("rotate_clinic_keys",),
]


def key_file(path, *identities: str) -> str:
    path.write_text("# created: 2025-01-01 (age-keygen)\n" + "".join(f"{identity}\n" for identity in identities))
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("refused", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_key_setting_is_one_line_and_a_failed_exit_for_every_command(live_db, tmp_path, refused):
    env_for, message = refused
    env = env_for(tmp_path)
    backup = backup_run(backup_id=backup_request(clinic="clinica", enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED
    values = {"backup": str(backup.pk), "file": str(stored_path(backup.storage_name))}
    files, data = storage_files(), {schema: table_checksums(schema) for schema in ("clinica", "bienestar")}
    clinics, restores = set(Clinic.objects.values_list("pk", flat=True)), Restore.objects.count()

    wrong = []
    for command in COMMANDS:
        result = manage(*[arg.format(**values) for arg in command], **env)
        lines = result.stderr.strip().splitlines()
        if result.returncode == 0 or "Traceback" in result.stderr or len(lines) != 1 or message not in lines[0]:
            wrong.append(f"{' '.join(command)}: exit {result.returncode}, {len(lines)} lines: {lines[-1:]}")
    clones = list(CloneJob.objects.filter(source_backup=backup).values_list("status", flat=True))
    CloneJob.objects.filter(source_backup=backup).delete()  # they would keep the backup from being cleaned up
    assert wrong == [], "\n".join(wrong)
    assert clones == []

    assert storage_files() == files
    assert {schema: table_checksums(schema) for schema in data} == data
    assert set(Clinic.objects.values_list("pk", flat=True)) == clinics and Restore.objects.count() == restores
    assert set(Backup.objects.filter(pk__gt=backup.pk).values_list("status", flat=True)) <= {JobStatus.FAILED}


IMPORT_ADVICE = (
    "If the platform was rebuilt from its backup storage, the operator must first run python manage.py import_backups"
)


def test_an_archive_whose_clinic_key_the_catalog_lost_names_import_backups(scratch_clinic, tmp_path):
    """A platform rebuilt without ``import_backups``: the bucket holds the clinic's archive and its
    wrapped key, the catalog has neither. The refusal tells the operator what to run."""
    backup = backup_run(backup_id=backup_request(clinic="restaura", enqueue=False).pk)
    assert backup.status == JobStatus.SUCCEEDED
    copy = tmp_path / "restaura.respaldo"
    copy.write_bytes(stored_path(backup.storage_name).read_bytes())
    ClinicKey.objects.filter(clinic=scratch_clinic).delete()  # the catalog rebuilt empty, keys/ objects still there
    files, data, backups = storage_files(), table_checksums("restaura"), Backup.objects.count()

    result = manage("restore_clinic", "restaura", "--file", str(copy), "--yes")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "CommandError: This backup was not made by this Respaldo installation (or was made with a key it no longer "
        "has). " + IMPORT_ADVICE + ": it brings back the clinics' archive keys."
    ], result.stderr[-2000:]
    assert storage_files() == files and table_checksums("restaura") == data and Backup.objects.count() == backups
    with translation.override("es"):
        spanish = str(UploadRefused("wrong_key", "upload.wrong_key"))
    assert "python manage.py import_backups" in spanish and spanish.startswith("Este respaldo no se hizo")
    assert "Si la plataforma se reconstruyó" in spanish
