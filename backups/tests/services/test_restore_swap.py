"""The bytes a restore loads are the bytes it verified, whatever happens to the stored object meanwhile.

A restore verifies the stored archive, then takes a safety backup (seconds to minutes), then
restores. Whoever can write to the backup storage (a leaked bucket credential, a shared
folder) could swap the object in that window. These tests hold the restore in its
safety-backup phase with a real lock, swap the object, and check what was loaded.
"""

import io
import threading
from pathlib import Path

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups import archive, storage
from backups.formats.pg import script as pg_script
from backups.keys import archive_identities
from backups.keys.clinic import identities_held
from backups.models import Backup, JobStatus, Restore
from backups.services import restore as restores
from backups.tests.helpers import (
    SCHEMA,
    damage_clinic,
    make_backup,
    other_connection,
    someone_waits_on_a_lock,
    stored_path,
    table_checksums,
    wait_for,
)
from dental.models import Patient

FILLER = "A" * 200  # a patient note whose bytes the forger overwrites in the payload


def injected_payload(payload: bytes, marker: Path) -> bytes:
    """The payload with a psql meta-command smuggled into a COPY block (same length, raw -Z0 dump)."""
    # notes, then the row's last columns (xray, consent_signature, created_at), the end-of-data
    # marker and a meta-command: what psql would run.
    injection = f"x\t\t\\N\t2020-01-01 00:00:00+00\n\\.\n\\! touch {marker}\n".encode()
    injection += b"B" * (len(FILLER) - len(injection))
    assert FILLER.encode() in payload and len(injection) == len(FILLER)
    return payload.replace(FILLER.encode(), injection)


def read_stored(backup: Backup) -> tuple[dict, bytes]:
    with (
        storage.open_stored(backup.storage_name) as stream,
        archive.open_archive(stream, identities=identities_held()) as reader,
    ):
        return dict(reader.manifest), reader.read()


def forged_archive(backup: Backup, marker: Path) -> bytes:
    """What someone holding only the deployment's PUBLIC key can make: a readable archive, wrong MAC."""
    manifest, payload = read_stored(backup)
    deployment_public = archive.identity_public_key(archive_identities()[0])
    out = io.BytesIO()
    archive.write_archive(
        io.BytesIO(injected_payload(payload, marker)),
        out,
        manifest=manifest,
        identities=[archive.generate_identity()],  # the forger's own key
        extra_recipients=[deployment_public],
    )
    return out.getvalue()


def restore_held_in_safety_backup(backup: Backup):
    """Start a restore in a thread and return once its safety backup waits on a lock we hold."""
    blocker = other_connection()
    blocker.execute("BEGIN")
    blocker.execute(f'LOCK TABLE "{SCHEMA}".dental_patient IN ACCESS EXCLUSIVE MODE')
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)

    def run() -> None:
        try:
            restores.restore_run(restore_id=restore.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()

    def safety_backup_waits() -> bool:
        row = Restore.objects.get(pk=restore.pk)
        return row.progress_phase == "safety backup" and row.safety_backup_id is not None and someone_waits_on_a_lock()

    wait_for(safety_backup_waits, what="the safety backup to wait on our lock")
    return restore, thread, blocker


def release(thread: threading.Thread, blocker) -> None:
    blocker.execute("ROLLBACK")
    blocker.close()
    thread.join(timeout=300)
    assert not thread.is_alive()


@pytest.mark.parametrize("swap_in", ["forged", "another clinic's backup"])
def test_an_object_swapped_during_the_safety_backup_is_never_loaded(scratch_clinic, tmp_path, swap_in):
    with schema_context(SCHEMA):
        Patient.objects.filter(pk=Patient.objects.order_by("pk").first().pk).update(notes=FILLER)
        # Data after the injected row, so that the payload's end (and its MAC) comes long after it.
        Patient.objects.bulk_create(
            Patient(first_name="Big", last_name="Notes", national_id=f"BIG-{n}", notes="x" * (64 << 10))
            for n in range(200)
        )
    connection.set_schema_to_public()
    backup = make_backup()
    as_backed_up = table_checksums(SCHEMA)
    damage_clinic()
    other_clinic = table_checksums("bienestar")
    marker = tmp_path / "psql-ran-a-shell-command"
    swapped = forged_archive(backup, marker) if swap_in == "forged" else make_backup("bienestar")
    replacement = swapped if isinstance(swapped, bytes) else stored_path(swapped.storage_name).read_bytes()

    restore, thread, blocker = restore_held_in_safety_backup(backup)
    stored_path(backup.storage_name).write_bytes(replacement)
    release(thread, blocker)

    restore.refresh_from_db()
    assert not marker.exists(), "a command from the swapped object ran"
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert restore.outcome == Restore.Outcome.RESTORED
    assert table_checksums(SCHEMA) == as_backed_up  # the verified backup, not the swapped object
    assert table_checksums("bienestar") == other_clinic
    assert stored_path(backup.storage_name).read_bytes() == replacement  # the swap really happened


def test_the_script_runner_refuses_psql_meta_commands(tmp_path):
    marker = tmp_path / "ran"
    script = (
        b"SET client_min_messages = warning;\n"
        b"COPY pg_temp.t (a) FROM stdin;\n1\n\\.\n"
        b"\\! touch " + str(marker).encode() + b"\n"
    )
    with other_connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE t (a int)")
        with pytest.raises(pg_script.ScriptError, match="psql meta-command"):
            pg_script.run_script(cursor, io.BytesIO(script))
    assert not marker.exists()


def test_the_script_runner_streams_copy_blocks_exactly(tmp_path):
    rows = [f"{n}\tline with a backslash \\\\ and tab \\t and \\\\. inside".encode() for n in range(50_000)]
    script = (
        b"\\restrict abc123\n"
        b"CREATE TEMP TABLE t (a int, b text);\n\n"
        b"COPY pg_temp.t (a, b) FROM stdin;\n" + b"\n".join(rows) + b"\n\\.\n"
        b"COPY pg_temp.t (a, b) FROM stdin;\n\\.\n"
        b"\n\\unrestrict abc123\n"
    )
    with other_connection() as conn, conn.cursor() as cursor:
        assert pg_script.run_script(cursor, _Trickle(script)) == (1, 2)
        count, distinct = cursor.execute("SELECT count(*), count(DISTINCT b) FROM pg_temp.t").fetchone()
        sample = cursor.execute("SELECT b FROM pg_temp.t WHERE a = 7").fetchone()[0]
    assert (count, distinct) == (50_000, 1)
    assert sample == "line with a backslash \\ and tab \t and \\. inside"


def test_a_script_cut_inside_a_copy_block_is_refused():
    with other_connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE t (a int)")
        with pytest.raises(pg_script.ScriptError, match="ends inside a COPY block"):
            pg_script.run_script(cursor, io.BytesIO(b"COPY pg_temp.t (a) FROM stdin;\n1\n2\n"))


class _Trickle(io.RawIOBase):
    """A stream that returns odd-sized pieces, so markers and lines fall across reads."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos, self._step = data, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._step = self._step % 7 + 1
        piece = self._data[self._pos : self._pos + min(size, self._step * 997)]
        self._pos += len(piece)
        return piece
