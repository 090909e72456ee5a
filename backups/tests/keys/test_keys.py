"""Archive keys: the one key that encrypts, the old keys that only open, and the deploy checks.

Backups are made through the real services (pg_dump, zstd, age) into the test storage; the
checks run through Django's check framework and once through ``manage.py check --deploy``
in a production-configured process.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from backups import archive, keys
from backups.archive import KeyConfigError, generate_identity
from backups.keys import clinic as clinic_keys
from backups.models import Backup, ClinicKey, JobStatus
from backups.services import verification
from backups.services.backup import backup_request, backup_run
from backups.tests.helpers import storage_files, stored_path
from clinics.models import Clinic
from conftest import manage

# A well-formed age secret key with a wrong checksum: parses as nothing, must never be echoed.
MALFORMED = "AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" * 2


def make_backup(clinic: str = "clinica") -> Backup:
    return backup_run(backup_id=backup_request(clinic=clinic, enqueue=False).pk)


def opens_with(backup: Backup, identities: list[str]) -> bool:
    """Whether the stored archive decrypts and authenticates with exactly these keys."""
    with open(stored_path(backup.storage_name), "rb") as handle:
        try:
            archive.verify_archive(handle, identities=identities)
        except archive.ArchiveError:
            return False
    return True


def key_file(path: Path, *identities: str, header: str = "# created: 2025-01-01 (age-keygen)") -> str:
    path.write_text(header + "\n" + "".join(identity + "\n" for identity in identities))
    path.chmod(0o600)
    return str(path)


def backup_messages(*, deploy: bool = True) -> list[checks.CheckMessage]:
    messages = checks.run_checks(include_deployment_checks=deploy)
    return [message for message in messages if (message.id or "").startswith("backups.")]


# --- which key encrypts, which keys open -------------------------------------------------


@pytest.mark.django_db
def test_a_rotated_deployment_key_rewraps_clinic_keys_and_no_archive_is_rewritten(settings, stored_keys_put_back):
    clinic = Clinic.objects.get(schema_name="clinica")
    ClinicKey.objects.filter(clinic=clinic).delete()  # this test's clinic key is made under its keys
    session = keys.encryption_identity()  # wraps the other demo clinic's key
    old, new = generate_identity(), generate_identity()
    settings.BACKUPS_AGE_IDENTITY_FILE = None
    settings.BACKUPS_AGE_IDENTITY = old  # the earlier deployment
    before = make_backup()
    clinic_key = clinic_keys.identity_of(clinic)
    assert opens_with(before, [clinic_key]) and not opens_with(before, [old])  # the deployment key wraps, not opens
    untouched = stored_path(before.storage_name).read_bytes()

    settings.BACKUPS_AGE_IDENTITY = new  # this deployment; the old key may only open
    settings.BACKUPS_AGE_OLD_IDENTITIES = [old, session]
    assert keys.encryption_identity() == new and keys.archive_identities() == [new, old, session]
    assert clinic_keys.keys_needing_rewrap() == 2 and clinic_keys.keys_unopenable() == 0
    after = make_backup()  # the same clinic key, unwrapped with the old deployment key
    assert opens_with(after, [clinic_key]) and not opens_with(after, [new]) and not opens_with(after, [old])

    settings.BACKUPS_AGE_OLD_IDENTITIES = [session]  # retiring the old key too early...
    assert clinic_keys.keys_unopenable() == 1
    with pytest.raises(KeyConfigError, match="rotate_clinic_keys"):
        clinic_keys.reading_identities(clinic)  # ...is refused with what to do, not a silent failure
    settings.BACKUPS_AGE_OLD_IDENTITIES = [old, session]

    out = io.StringIO()
    call_command("rotate_clinic_keys", stdout=out)
    assert out.getvalue().startswith("2 clinic keys wrapped again")
    settings.BACKUPS_AGE_OLD_IDENTITIES = []  # now the old key can go
    assert clinic_keys.keys_needing_rewrap() == 0 and clinic_keys.keys_unopenable() == 0
    assert clinic_keys.identity_of(clinic) == clinic_key
    assert [key.identity for key in clinic_keys.stored_keys()["clinica"]] == [clinic_key]  # the bucket's copy too
    assert stored_path(before.storage_name).read_bytes() == untouched
    for backup in (before, after):
        assert verification.verify_stored(backup, clinic)["clinic"]["schema"] == "clinica"


@pytest.mark.django_db
def test_the_replaced_list_setting_is_refused_instead_of_silently_encrypting(settings):
    """BACKUPS_AGE_IDENTITIES used to put its first key before the key file's, as the encrypting key."""
    old = generate_identity()
    settings.BACKUPS_AGE_IDENTITIES = [old]
    before = storage_files()
    with pytest.raises(KeyConfigError, match="BACKUPS_AGE_IDENTITIES is no longer read") as info:
        keys.archive_identities()
    assert "BACKUPS_AGE_OLD_IDENTITIES" in str(info.value) and old not in str(info.value)
    with pytest.raises(CommandError, match="BACKUPS_AGE_IDENTITIES is no longer read"):
        call_command("backup_clinic", "clinica")
    assert not Backup.objects.exists()  # refused before anything is recorded
    # a scheduled backup (the worker's path) records the failure on the clinic's backup
    assert make_backup().status == JobStatus.FAILED
    assert storage_files() == before


AMBIGUOUS = {
    "key in the setting and in a file": ("both", "BACKUPS_AGE_IDENTITY and BACKUPS_AGE_IDENTITY_FILE"),
    "file with two keys": ("file2", "holds 2 keys; it must hold exactly one"),
    "two keys in the one-key setting": ("comma", "BACKUPS_AGE_IDENTITY holds more than one key"),
}


@pytest.mark.parametrize("case", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_an_ambiguous_encrypting_key_is_refused_with_a_clear_message(settings, tmp_path, case):
    kind, message = case
    first, second = generate_identity(), generate_identity()
    if kind == "both":
        settings.BACKUPS_AGE_IDENTITY = first
        settings.BACKUPS_AGE_IDENTITY_FILE = key_file(tmp_path / "key.txt", second)
    elif kind == "file2":
        settings.BACKUPS_AGE_IDENTITY_FILE = key_file(tmp_path / "keys.txt", first, second)
    else:
        settings.BACKUPS_AGE_IDENTITY = f"{first},{second}"
        settings.BACKUPS_AGE_IDENTITY_FILE = None
    with pytest.raises(KeyConfigError, match=message) as info:
        keys.encryption_identity()
    with pytest.raises(KeyConfigError, match=message):
        keys.archive_identities()
    assert "BACKUPS_AGE_OLD_IDENTITIES" in str(info.value)
    [error] = backup_messages()
    assert error.id == "backups.E001" and error.level == checks.ERROR and message in error.msg
    for secret in (first, second):
        assert secret not in str(info.value) and secret not in error.msg and secret not in (error.hint or "")


def test_a_malformed_old_key_is_refused_without_echoing_it(settings):
    settings.BACKUPS_AGE_OLD_IDENTITIES = [generate_identity(), MALFORMED]
    with pytest.raises(KeyConfigError, match="key #2 of BACKUPS_AGE_OLD_IDENTITIES is not a valid age secret key"):
        keys.archive_identities()
    [error] = backup_messages()
    assert error.id == "backups.E001" and MALFORMED not in error.msg and MALFORMED[16:40] not in error.msg


# --- deploy checks -------------------------------------------------------------------------


def test_deploy_check_errors_without_an_archive_key(tmp_path):
    with override_settings(BACKUPS_AGE_IDENTITY=None, BACKUPS_AGE_IDENTITY_FILE=None, BACKUPS_GENERATE_DEV_KEY=False):
        [error] = backup_messages()
        assert error.id == "backups.E001" and error.level == checks.ERROR
        assert "no archive key is configured" in error.msg
        assert backup_messages(deploy=False) == []  # a deploy check: runserver and migrate stay quiet
    missing = tmp_path / "etc" / "respaldo-key.txt"
    with override_settings(BACKUPS_AGE_IDENTITY_FILE=str(missing), BACKUPS_GENERATE_DEV_KEY=False):
        [error] = backup_messages()
        assert error.id == "backups.E001" and f"{missing} does not exist" in error.msg
    assert not missing.parent.exists()


def test_deploy_check_errors_on_a_malformed_key_without_echoing_it(tmp_path):
    with override_settings(BACKUPS_AGE_IDENTITY=MALFORMED, BACKUPS_AGE_IDENTITY_FILE=None):
        [error] = backup_messages()
    assert error.id == "backups.E001" and "BACKUPS_AGE_IDENTITY is not a valid age secret key" in error.msg
    path = key_file(tmp_path / "key.txt", MALFORMED)
    with override_settings(BACKUPS_AGE_IDENTITY_FILE=path, BACKUPS_GENERATE_DEV_KEY=False):
        [from_file] = backup_messages()
    assert from_file.id == "backups.E001" and f"The key in {path} is not a valid" in from_file.msg
    for message in (error, from_file):
        assert MALFORMED not in message.msg + (message.hint or "")
        assert MALFORMED[16:40] not in message.msg + (message.hint or "")


def test_deploy_check_warns_about_the_generated_development_key_and_never_creates_it(tmp_path):
    path = tmp_path / "local" / "backup-keys.txt"
    with override_settings(BACKUPS_AGE_IDENTITY_FILE=str(path), BACKUPS_GENERATE_DEV_KEY=True):
        [warning] = backup_messages()
        assert warning.id == "backups.W001" and warning.level == checks.WARNING
        assert not path.exists() and not path.parent.exists()  # a check writes nothing
        keys.archive_identities()  # the first backup generates it
        assert path.exists()
        [warning] = backup_messages()
        assert warning.id == "backups.W001"
    # the generated file copied to a production host is still the development key
    with override_settings(BACKUPS_AGE_IDENTITY_FILE=str(path), BACKUPS_GENERATE_DEV_KEY=False):
        [warning] = backup_messages()
        assert warning.id == "backups.W001"
        assert keys.encryption_identity() not in warning.msg + (warning.hint or "")


def test_deploy_checks_are_clean_with_a_proper_key(tmp_path):
    own = key_file(tmp_path / "key.txt", generate_identity())
    with override_settings(BACKUPS_AGE_IDENTITY_FILE=own, BACKUPS_GENERATE_DEV_KEY=False):
        assert backup_messages() == []
    with override_settings(
        BACKUPS_AGE_IDENTITY=generate_identity(),
        BACKUPS_AGE_IDENTITY_FILE=None,
        BACKUPS_AGE_OLD_IDENTITIES=[generate_identity(), generate_identity()],
        BACKUPS_GENERATE_DEV_KEY=False,
    ):
        assert backup_messages() == []


PRODUCTION = {
    "RESPALDO_ENV": "production",
    "SECRET_KEY": "x7#Lq2vP9!mZ4rT8wK1nB6yH3cF5jD0sG-aE_uQ2iO7pR4tY9lM",
    "ALLOWED_HOSTS": ".respaldo.example",
    "DEBUG": "false",
    "BACKUPS_AGE_IDENTITY": "",
    "BACKUPS_AGE_IDENTITY_FILE": "",
    "BACKUPS_AGE_OLD_IDENTITIES": "",
    "BACKUPS_AGE_IDENTITIES": "",
}


def test_manage_py_check_deploy_fails_in_production_without_a_key():
    result = manage("check", "--deploy", **PRODUCTION)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "(backups.E001)" in result.stderr and "no archive key is configured" in result.stderr
    key = generate_identity()
    result = manage("check", "--deploy", **{**PRODUCTION, "BACKUPS_AGE_IDENTITY": key})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert key not in result.stdout + result.stderr
