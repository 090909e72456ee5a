"""The backup commands on the command line: refusals are one clear line, and nothing changes.

Real processes (``manage.py`` run against the test database) where what reaches the
terminal matters, real files (sparse where size matters), real database.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from backups.models import Backup
from backups.tests.helpers import storage_files, table_checksums
from conftest import manage, subprocess_env

SQL_REFUSAL = (
    "This is an SQL script. For safety, Respaldo never runs SQL uploaded by a clinic; upload a backup "
    "downloaded from Respaldo, or a JSON export of the clinic's records, instead."
)


def state() -> tuple:
    """What a refused command must leave as it was: catalog rows, stored backups, the clinic's data."""
    return set(Backup.objects.values_list("pk", flat=True)), storage_files(), table_checksums("clinica")


def read_bytes() -> int:
    """Bytes this process has read so far (any file, pipe or socket), from /proc/self/io."""
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that are all holes: it costs no disk."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


@pytest.mark.django_db
def test_restore_from_a_file_over_the_limit_is_refused_from_its_size_without_copying_it(settings, tmp_path):
    settings.BACKUPS_MAX_UPLOAD_BYTES = 16 << 20
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.BACKUPS_UPLOAD_TMP_DIR = str(spool)
    huge = sparse_file(tmp_path / "huge.respaldo", 3 * 1024**3)
    before, read_before = state(), read_bytes()

    with pytest.raises(CommandError, match=r"^The file is larger than the 16\.0 MB limit\.$"):
        call_command("restore_clinic", "clinica", "--file", str(huge), "--yes")

    assert read_bytes() - read_before < 1 << 20  # not read, so not copied to a temporary file
    assert state() == before and list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "file", "env", "message"),
    [
        (("restore_clinic", "clinica", "--yes"), b"SELECT 1;\n", {}, SQL_REFUSAL),
        (
            ("restore_clinic", "clinica", "--yes"),
            3 * 1024**3,
            {"BACKUPS_MAX_UPLOAD_BYTES": str(1 << 20)},
            "The file is larger than the 1.0 MB limit.",
        ),
        (("restore_clinic", "clinica", "--backup", "999999", "--yes"), None, {}, "There is no backup #999999."),
        (("restore_clinic", "nowhere", "--backup", "1", "--yes"), None, {}, "There is no clinic 'nowhere'."),
        (("backup_clinic", "nowhere"), None, {}, "There is no clinic 'nowhere'."),
        (("list_backups", "nowhere"), None, {}, "There is no clinic 'nowhere'."),
    ],
    ids=["sql-file", "too-large-file", "no-backup", "restore-no-clinic", "backup-no-clinic", "list-no-clinic"],
)
def test_a_refusal_is_printed_once_and_the_exit_status_says_it_failed(live_db, tmp_path, args, file, env, message):
    if isinstance(file, bytes):
        path = tmp_path / "upload.sql"
        path.write_bytes(file)
        args = (*args, "--file", str(path))
    elif isinstance(file, int):
        args = (*args, "--file", str(sparse_file(tmp_path / "huge.respaldo", file)))
    before = state()

    result = manage(*args, **env)

    assert result.returncode != 0
    assert result.stderr.count(message) == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert state() == before


LEAN_CHECK = """
import sys
from django.core.management import execute_from_command_line
from django.conf import settings
import django
django.setup()
execute_from_command_line(["manage.py", "backup_clinic", "clinica", "--requested-by", "lean check"])
from backups.models import Backup
backup = Backup.objects.filter(requested_by="lean check").latest("pk")
execute_from_command_line(["manage.py", "restore_clinic", "clinica", "--backup", str(backup.pk), "--yes"])
heavy = ("boto3", "botocore", "storages.backends.s3", "import_export.admin", "openpyxl", "backups.admin")
heavy += ("clinic_site.urls",)
print("LOADED", sorted({name for name in sys.modules for part in heavy if name == part or name.startswith(part + ".")}))
"""


def test_the_backup_and_restore_commands_load_neither_boto3_nor_the_admin(live_db):
    """On the local disk, a nightly backup or a restore from the command line never loads boto3,
    the admin, its URLs or import-export (about 60 MB of a process that serves no page): a real
    process runs both commands, system checks included, and says which modules it loaded."""
    before = table_checksums("clinica")
    result = subprocess.run(
        [sys.executable, "-c", LEAN_CHECK],
        cwd=Path(settings.BASE_DIR),
        env=subprocess_env(DJANGO_SETTINGS_MODULE="clinic_site.settings"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "succeeded" in result.stdout, result.stdout
    assert "LOADED []" in result.stdout, result.stdout
    assert table_checksums("clinica") == before
