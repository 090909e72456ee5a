"""Verification and restore drills: real archives, real pg_restore, a real second session on the live clinic."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from backups.models import AuditEntry, Backup
from backups.operations import drills
from backups.signals import drill_finished
from backups.tests.helpers import (
    SCHEMA,
    Gate,
    add_filler,
    corrupt,
    locks_on_live,
    make_backup,
    other_connection,
    schemas,
    table_checksums,
    work_on_the_live_clinic,
)


@pytest.fixture
def announced():
    """The backups ``drill_finished`` was sent for, in order."""
    seen: list[Backup] = []

    def receiver(sender, backup, **kwargs):
        seen.append(backup)

    drill_finished.connect(receiver, dispatch_uid="test_drills")
    yield seen
    drill_finished.disconnect(dispatch_uid="test_drills")


def entries(backup: Backup) -> list[tuple[str, str]]:
    return list(
        AuditEntry.objects.filter(backup_id_ref=backup.pk, action__in=["verified", "drilled"])
        .order_by("id")
        .values_list("action", "details__outcome")
    )


def test_verify_ok(scratch_clinic, announced):
    backup = make_backup()
    checked = drills.verify(backup.pk)
    assert checked.verified_at is not None
    assert checked.drill_status == "" and checked.drilled_at is None  # a verification is not a drill
    assert entries(backup) == [("verified", "succeeded")]
    assert [b.pk for b in announced] == [backup.pk]


def test_a_corrupted_object_fails_verify_and_drill_and_marks_the_backup(scratch_clinic, announced):
    backup = make_backup()
    corrupt(backup)
    checked = drills.verify(backup)
    assert checked.verified_at is None
    assert checked.drill_status == "failed"
    assert checked.drill_error["code"] in {"tampered", "damaged", "archive_changed"}, checked.drill_error
    drilled = drills.drill(backup)
    assert drilled.drill_status == "failed" and drilled.drilled_at is not None and drilled.verified_at is None
    assert drilled.drill_error["code"] in {"tampered", "damaged", "archive_changed"}
    assert entries(backup) == [("verified", "failed"), ("drilled", "failed")]
    assert AuditEntry.objects.filter(backup_id_ref=backup.pk, action="drilled").get().details["error"]["code"]
    assert [b.drill_status for b in announced] == ["failed", "failed"]
    assert drills.failed_drills().filter(pk=backup.pk).exists()  # counts as a failed backup
    assert f"{SCHEMA}__drill_{backup.pk}" not in schemas()
    with pytest.raises(CommandError, match="1 of 1 checks failed"):
        call_command("verify_backups", SCHEMA)


@pytest.mark.parametrize("payload_format", ["pg", "json"])
def test_a_good_drill_leaves_nothing_and_marks_the_backup_verified(scratch_clinic, announced, payload_format, capsys):
    live = table_checksums(SCHEMA)
    backup = make_backup(payload_format=payload_format)
    drilled = drills.drill(backup)
    assert drilled.drill_status == "succeeded", drilled.drill_error
    assert drilled.drilled_at and drilled.verified_at and drilled.drill_error == {}
    assert not {s for s in schemas() if "__drill_" in s}
    assert table_checksums(SCHEMA) == live
    assert entries(backup) == [("drilled", "succeeded")]
    assert [b.pk for b in announced] == [backup.pk]
    call_command("verify_backups", SCHEMA, "--drill")
    assert f"{SCHEMA}: backup #{backup.pk} (manual, {payload_format}) drill ok" in capsys.readouterr().out


def test_a_leftover_scratch_schema_is_dropped_first(scratch_clinic):
    backup = make_backup()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{SCHEMA}__drill_{backup.pk}"')
    assert drills.drill(backup).drill_status == "succeeded"
    assert f"{SCHEMA}__drill_{backup.pk}" not in schemas()


def test_the_live_clinic_is_neither_touched_nor_locked_during_a_drill(scratch_clinic, monkeypatch):
    """The drill is held in the middle of the COPY of a 300,000-row table while another session
    (lock_timeout 2s) reads, writes, locks rows, creates a table and renames the live schema."""
    add_filler()
    backup = make_backup()
    from backups.formats import pg as scratch  # the pg format restores into the scratch schema

    real_restore = scratch.restore_into_pg
    gates: list[Gate] = []
    pids: list[int] = []

    def held_restore(payload, **kwargs):
        gate = Gate(payload, pause_at=8 << 20)
        gates.append(gate)
        pids.append(kwargs["cursor"].connection.info.backend_pid)
        return real_restore(gate, **kwargs)

    monkeypatch.setattr(scratch, "restore_into_pg", held_restore)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["backup"] = drills.drill(backup.pk)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    worker, observer = other_connection(), other_connection()
    worker.execute("SET lock_timeout = '2s'")
    worker.execute(f"SET search_path TO {SCHEMA}, public")
    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = timezone.now() + timedelta(seconds=60)
        while not (gates and gates[0].paused.is_set()):
            assert timezone.now() < deadline and thread.is_alive(), outcome
            threading.Event().wait(0.1)
        for round_ in range(1, 4):
            work_on_the_live_clinic(worker, round_)  # a wait on a lock fails here after 2 s
            assert locks_on_live(observer, pids[0]) == []
        left = table_checksums(SCHEMA)
    finally:
        for gate in gates:
            gate.release.set()
        thread.join(180)
        worker.close()
        observer.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["backup"].drill_status == "succeeded", outcome["backup"].drill_error
    assert table_checksums(SCHEMA) == left  # exactly as the other session left it
    assert f"{SCHEMA}__drill_{backup.pk}" not in schemas()


def test_dispatch_picks_each_clinics_newest_backup_weekly(scratch_clinic):
    older = make_backup()
    newest = make_backup()
    now = timezone.now()
    assert newest.pk in drills.drills_due(now, limit=1000)
    assert older.pk not in drills.drills_due(now, limit=1000)
    Backup.objects.filter(pk=older.pk).update(drilled_at=now - timedelta(days=2))  # the clinic's newest drill
    assert newest.pk not in drills.drills_due(now, limit=1000)
    assert newest.pk in drills.drills_due(now + timedelta(days=5, hours=1), limit=1000)  # a week after that drill
    Backup.objects.filter(pk=older.pk).update(drilled_at=None)
    chosen, again = drills.dispatch_drills(now, enqueue=False), drills.dispatch_drills(now, enqueue=False)
    assert len(chosen) <= drills.DRILLS_PER_MINUTE and not set(chosen) & set(again)  # requested: not picked twice
    assert Backup.objects.filter(pk__in=chosen, drill_requested_at=now).count() == len(chosen)
    picked = set(chosen) | set(again) | set(drills.dispatch_drills(now, enqueue=False))
    assert newest.pk in picked or newest.pk not in drills.drills_due(now, limit=1000)
    if newest.pk in picked:  # requested: not picked again for a day, then again if still not drilled
        assert newest.pk not in drills.drills_due(now + timedelta(hours=1), limit=1000)
        assert newest.pk in drills.drills_due(now + timedelta(days=1, minutes=1), limit=1000)


def test_a_failed_drill_of_a_spanish_clinic_reaches_a_real_smtp_server_in_spanish(scratch_clinic, settings):
    import email
    import email.policy

    from backups.models import BackupPolicy
    from backups.tests.helpers import free_port, smtp_server

    assert scratch_clinic.language == "es"
    BackupPolicy.objects.filter(clinic=scratch_clinic).update(notify_emails="jefa@restaura.example")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    backup = make_backup()
    controller, inbox = smtp_server(settings.EMAIL_PORT)
    try:
        corrupt(backup)
        assert drills.drill(backup).drill_status == "failed"
    finally:
        controller.stop()
    (envelope,) = [e for e in inbox.envelopes if "simulacro" in e.original_content.decode("utf-8", "replace")]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert envelope.rcpt_tos == ["jefa@restaura.example"]
    assert message["Subject"].strip().endswith(f"El respaldo #{backup.pk} falló su simulacro de restauración")
    text = message.get_body(("plain",)).get_content()
    assert "Qué hacer" in text and ("dañad" in text or "autenticidad" in text)
