"""The bench's clinics and catalog housekeeping: forgetting a clinic's jobs, dropping a
clinic, making a backup, and copying a backup's payload or stored archive to a file.
"""

# ruff: noqa: S608 - bench-made SQL, from fixed names

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from django.conf import settings
from django.db import connection

from backups import archive, storage
from backups.keys.clinic import reading_identities
from backups.models import Backup, BackupPolicy, CloneJob, JobStatus, Restore
from backups.services.backup import backup_request, backup_run
from clinics.models import Clinic, Domain


def forget_jobs(clinic: Clinic, *, keep: set[int] = frozenset()) -> None:
    """Delete the clinic's restores, clone jobs and backups (and their stored archives), but ``keep``."""
    Restore.objects.filter(clinic=clinic).delete()
    CloneJob.objects.filter(source_backup__clinic=clinic).delete()
    for backup in Backup.objects.filter(clinic=clinic).exclude(pk__in=keep).order_by("-pk"):
        if backup.storage_name:
            with contextlib.suppress(Exception):
                storage.delete_stored(backup.storage_name)
        Backup.objects.filter(retry_of=backup).update(retry_of=None)
        backup.delete()


def drop_clinic(schema: str) -> None:
    """Drop a bench clinic: its schema, files, jobs, policy, domains and catalog row."""
    connection.set_schema_to_public()
    clinic = Clinic.objects.filter(schema_name=schema).first()
    CloneJob.objects.filter(target_schema=schema).delete()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    shutil.rmtree(Path(settings.MEDIA_ROOT) / schema, ignore_errors=True)
    if clinic is not None:
        forget_jobs(clinic)
        BackupPolicy.objects.filter(clinic=clinic).delete()
        Domain.objects.filter(tenant=clinic).delete()
        Clinic.objects.filter(pk=clinic.pk).delete()


def drop_leftover_schemas(schema: str) -> None:
    """Schemas a restore keeps aside (the undo window) or the raw restore moved aside."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s AND nspname <> %s", [schema + "\\_%", schema]
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP SCHEMA "{name}" CASCADE')


def make_backup(schema: str, payload_format: str = "pg") -> Backup:
    """A backup of the clinic, run in this process (untimed: what the steps restore or clone)."""
    row = backup_run(backup_id=backup_request(clinic=schema, payload_format=payload_format, enqueue=False).pk)
    if row.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"backup of {schema} failed: {row.error}")
    return row


def payload_to_file(row: Backup, path: Path) -> None:
    """The payload (pg_dump custom file or JSON) of our archive, decrypted, to ``path``."""
    with (
        storage.open_stored(row.storage_name) as stream,
        archive.open_archive(stream, identities=reading_identities(row.clinic)) as reader,
        open(path, "wb") as out,
    ):
        shutil.copyfileobj(reader, out, 1 << 20)


def stored_to_file(row: Backup, path: Path) -> None:
    """The stored archive (the ``.respaldo`` file, still encrypted), to ``path``."""
    with storage.open_stored(row.storage_name) as stream, open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)


def backup_id_from(stdout: str) -> int:
    """The backup id that ``manage.py backup_clinic`` printed ("#12 ...")."""
    found = re.search(r"^#(\d+) ", stdout, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no backup id in: {stdout[-500:]}")
    return int(found.group(1))
