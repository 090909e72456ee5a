"""A clinic's files (X-rays) in its backups: archived with the rows, restored byte for byte, switched
with the data, left alone by a failed restore, and reported absent for version-1 archives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django_tenants.utils import schema_context

from backups import archive
from backups.keys.clinic import identities_held
from backups.models import JobStatus, Restore
from backups.services import restore as restores
from backups.tests.helpers import SCHEMA, make_backup, stored_path
from dental.models import Patient

FILES = {0: b"\x89PNG first x-ray" * 5000, 1: os.urandom(300_000), 2: b""}


def _add_xrays() -> dict[str, bytes]:
    """Give the first patients an X-ray each, written through the default storage; {name: bytes}."""
    written = {}
    with schema_context(SCHEMA):
        for index, patient in enumerate(Patient.objects.order_by("pk")[: len(FILES)]):
            patient.xray.save(f"x-{index}.png", ContentFile(FILES[index]), save=True)
            written[patient.xray.name] = FILES[index]
    connection.set_schema_to_public()
    return written


def _clinic_files(media_root: Path) -> dict[str, bytes]:
    root = media_root / SCHEMA
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _xray_names() -> dict[int, str]:
    with schema_context(SCHEMA):
        names = dict(Patient.objects.exclude(xray="").values_list("pk", "xray"))
    connection.set_schema_to_public()
    return names


def _damage_files(written: dict[str, bytes], media_root: Path) -> None:
    """Delete one file, change another, add a stray one, and point a row elsewhere."""
    first, second = sorted(written)[:2]
    (media_root / SCHEMA / first).unlink()
    (media_root / SCHEMA / second).write_bytes(b"changed")
    (media_root / SCHEMA / "stray.txt").write_bytes(b"not named by any row")
    with schema_context(SCHEMA):
        Patient.objects.filter(xray=second).update(xray="xrays/elsewhere.png")
    connection.set_schema_to_public()


def _restore(backup_id: int) -> Restore:
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup_id, enqueue=False)
    return restores.restore_run(restore_id=restore.pk)


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_files_come_back_byte_for_byte(scratch_clinic, media_root, payload_format):
    written = _add_xrays()
    names = _xray_names()
    backup = make_backup(payload_format=payload_format)
    assert backup.manifest["format_version"] == 2
    assert backup.manifest["media"] == {"files": 3, "bytes": sum(map(len, written.values())), "missing": 0}
    _damage_files(written, media_root)

    restore = _restore(backup.pk)
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert restore.error == ""
    assert _clinic_files(media_root) == written  # exactly the files the rows name, stray one gone
    assert _xray_names() == names
    assert not (media_root / (SCHEMA + "__restoring")).exists()
    assert not (media_root / (SCHEMA + "__before_restore")).exists()
    folders = [media_root / SCHEMA, *(path for path in (media_root / SCHEMA).rglob("*") if path.is_dir())]
    assert len(folders) > 1 and {oct(stat.S_IMODE(folder.stat().st_mode)) for folder in folders} == {oct(0o700)}


def test_the_archive_holds_media_members_after_the_payload(scratch_clinic, media_root):
    written = _add_xrays()
    backup = make_backup()
    seen = {}

    def sink(path, stream):
        seen[path] = stream.read()

    with (
        stored_path(backup.storage_name).open("rb") as handle,
        archive.open_archive(handle, identities=identities_held(), media_sink=sink) as reader,
    ):
        assert reader.manifest["archive_version"] == 2
        while reader.read(1 << 20):
            pass
    assert seen == written


def test_a_missing_file_is_noted_and_the_backup_succeeds(scratch_clinic, media_root):
    written = _add_xrays()
    gone = sorted(written)[0]
    (media_root / SCHEMA / gone).unlink()
    backup = make_backup()
    assert backup.manifest["media"]["missing"] == 1
    assert gone in backup.error  # the note
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.SUCCEEDED and gone in restore.error
    assert _clinic_files(media_root) == {k: v for k, v in written.items() if k != gone}


def test_a_restore_failing_in_the_media_leaves_files_and_rows(scratch_clinic, media_root, monkeypatch):
    written = _add_xrays()
    backup = make_backup()
    _damage_files(written, media_root)
    before_files, before_names = _clinic_files(media_root), _xray_names()
    calls = []

    def failing_sink(self, path, stream):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, path, stream)

    from backups.media import MediaStaging

    original = MediaStaging.sink
    monkeypatch.setattr(MediaStaging, "sink", failing_sink)
    restore = _restore(backup.pk)
    assert restore.status == JobStatus.FAILED and restore.outcome == Restore.Outcome.UNCHANGED
    assert _clinic_files(media_root) == before_files
    assert _xray_names() == before_names
    assert not (media_root / (SCHEMA + "__restoring")).exists()


def test_a_version_1_archive_restores_rows_and_says_files_were_not_included(scratch_clinic, media_root, monkeypatch):
    written = _add_xrays()
    names = _xray_names()
    real_write = archive.write_archive

    def write_v1(*args, media=None, manifest, **kwargs):
        return real_write(*args, manifest={**manifest, "format_version": 1}, **kwargs)

    monkeypatch.setattr(archive, "write_archive", write_v1)
    backup = make_backup()
    monkeypatch.undo()
    assert backup.manifest["format_version"] == 1 and "media" not in backup.manifest
    _damage_files(written, media_root)
    files_now = _clinic_files(media_root)

    restore = _restore(backup.pk)
    assert restore.status == JobStatus.SUCCEEDED, restore.error
    assert restore.error_code == "media_not_in_backup"
    assert "files were not part" in restore.error or "before files were part" in restore.error
    assert _xray_names() == names  # rows restored
    assert _clinic_files(media_root) == files_now  # files left as they were


# --- the archive layer (no database) ----------------------------------------------------------


def _media_file(path: str, listed: bytes, actual: bytes | None = None):
    import hashlib
    import io

    from backups.archive.media import MediaFile

    data = listed if actual is None else actual
    return MediaFile(path, len(listed), hashlib.sha256(listed).hexdigest(), lambda: io.BytesIO(data))


def test_a_file_that_changes_while_it_is_written_fails_the_archive():
    import io

    from backups.archive.media import MediaChanged

    key = archive.generate_identity()
    for actual in (b"abd", b"ab", b"abcd"):
        with pytest.raises(MediaChanged):
            archive.write_archive(
                io.BytesIO(b"p"),
                io.BytesIO(),
                manifest={"format_version": 2},
                identities=[key],
                media=[_media_file("a.png", b"abc", actual)],
            )


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs", "a//b", "a/./b", ""])
def test_unsafe_media_paths_are_refused_by_the_writer(path):
    import io

    with pytest.raises(ValueError, match="media paths"):
        archive.write_archive(
            io.BytesIO(b"p"),
            io.BytesIO(),
            manifest={"format_version": 2},
            identities=[archive.generate_identity()],
            media=[_media_file(path, b"x")],
        )


def test_media_round_trip_and_version_1_without_media():
    import io

    key = archive.generate_identity()
    files = {"xrays/a.png": os.urandom(5_000_000), "b.txt": b"", "c/d/e.bin": b"xyz"}
    out = io.BytesIO()
    media = [_media_file(path, data) for path, data in files.items()]
    archive.write_archive(io.BytesIO(b"payload"), out, manifest={"format_version": 2}, identities=[key], media=media)
    seen = {}
    with archive.open_archive(
        io.BytesIO(out.getvalue()), identities=[key], media_sink=lambda p, s: seen.update({p: s.read()})
    ) as reader:
        assert reader.read() == b"payload"
    assert seen == files
    with pytest.raises(archive.ArchiveTooLarge):
        archive.verify_archive(io.BytesIO(out.getvalue()), identities=[key], max_payload_bytes=1_000_000)
    old = io.BytesIO()
    summary = archive.write_archive(io.BytesIO(b"p"), old, manifest={"format_version": 1}, identities=[key])
    assert summary.manifest["archive_version"] == 1 and "media" not in summary.manifest
    assert archive.verify_archive(io.BytesIO(old.getvalue()), identities=[key]).payload_bytes == 1


def test_a_worker_dying_between_the_commit_and_the_switch_is_completed_by_recovery(
    scratch_clinic, media_root, monkeypatch
):
    from backups.media import MediaStaging

    written = _add_xrays()
    names = _xray_names()
    backup = make_backup()
    _damage_files(written, media_root)
    real_switch = MediaStaging.switch

    def die(self):
        raise KeyboardInterrupt  # the worker is killed: no except clause of the restore runs

    monkeypatch.setattr(MediaStaging, "switch", die)
    restore = restores.restore_request(clinic=SCHEMA, backup_id=backup.pk, enqueue=False)
    with pytest.raises(KeyboardInterrupt):
        restores.restore_run(restore_id=restore.pk)
    restore.refresh_from_db()
    assert restore.status == JobStatus.RUNNING and restore.outcome == Restore.Outcome.RESTORED
    assert (media_root / (SCHEMA + "__restoring")).exists()
    monkeypatch.setattr(MediaStaging, "switch", real_switch)

    restores.restore_recover_crashed(restore)
    restore.refresh_from_db()
    assert restore.status == JobStatus.SUCCEEDED
    assert _clinic_files(media_root) == written and _xray_names() == names
    assert not (media_root / (SCHEMA + "__restoring")).exists()
