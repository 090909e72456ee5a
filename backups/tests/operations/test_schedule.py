"""The daily schedule: one scheduled backup per clinic and local day, at its own local time.

Time is advanced by passing ``now`` to the dispatcher; the rows are real, and the database's
unique constraint is what keeps two dispatchers (threads with their own connections, or a
real worker) from making a day twice.
"""

from __future__ import annotations

import importlib
import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from backups.models import Backup, BackupPolicy, JobStatus
from backups.operations import schedule
from backups.services.backup import backup_request
from backups.services.policy import policy_for
from backups.tests.helpers import wait_for
from clinics.models import Clinic

dispatcher_migration = importlib.import_module("backups.migrations.0008_dispatcher_schedule")


def configure(schema: str, time_zone: str, run_at: time, **policy) -> Clinic:
    clinic = Clinic.objects.get(schema_name=schema)
    clinic.time_zone = time_zone
    clinic.save(update_fields=["time_zone"])
    BackupPolicy.objects.filter(pk=policy_for(clinic).pk).update(**{"run_at": run_at, "enabled": True, **policy})
    return clinic


def finish_all() -> None:
    """The worker's part, instantly: every pending backup succeeded (so the next day is not 'busy')."""
    Backup.objects.filter(status=JobStatus.PENDING).update(status=JobStatus.SUCCEEDED)


def simulate(start: datetime, end: datetime, step: timedelta = timedelta(minutes=5)) -> dict[tuple[str, date], list]:
    """Run the dispatcher at every ``step`` from ``start`` to ``end`` (UTC); return when each backup was made."""
    made: dict[tuple[str, date], list] = {}
    now = start
    while now <= end:
        for backup in schedule.dispatch(now, enqueue=False):
            made.setdefault((backup.clinic.schema_name, backup.scheduled_for), []).append(now)
        finish_all()
        now += step
    return made


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def only_demo_clinics(db):
    """The two demo clinics take part; any other clinic in the database is switched off."""
    BackupPolicy.objects.exclude(clinic__schema_name__in=["clinica", "bienestar"]).update(enabled=False)
    Backup.objects.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING]).update(status=JobStatus.FAILED)


# --- The rule, across time zones and DST changes ----------------------------------------


def test_each_clinic_once_a_day_at_its_own_local_time_across_spring_forward(only_demo_clinics):
    configure("clinica", "Europe/Madrid", time(2, 30))  # 02:30 does not exist on 2025-03-30
    configure("bienestar", "Asia/Tokyo", time(2, 0))
    made = simulate(utc(2025, 3, 28, 12), utc(2025, 4, 1, 0))
    assert made == {
        # The simulation starts after that day's run_at: a missed day is made up at once.
        ("clinica", date(2025, 3, 28)): [utc(2025, 3, 28, 12)],
        ("bienestar", date(2025, 3, 28)): [utc(2025, 3, 28, 12)],
        ("clinica", date(2025, 3, 29)): [utc(2025, 3, 29, 1, 30)],  # 02:30 CET
        ("clinica", date(2025, 3, 30)): [utc(2025, 3, 30, 1, 0)],  # 03:00 CEST: the first minute past the gap
        ("clinica", date(2025, 3, 31)): [utc(2025, 3, 31, 0, 30)],  # 02:30 CEST
        ("bienestar", date(2025, 3, 29)): [utc(2025, 3, 28, 17, 0)],  # 02:00 in Tokyo
        ("bienestar", date(2025, 3, 30)): [utc(2025, 3, 29, 17, 0)],
        ("bienestar", date(2025, 3, 31)): [utc(2025, 3, 30, 17, 0)],
        ("bienestar", date(2025, 4, 1)): [utc(2025, 3, 31, 17, 0)],
    }
    assert Backup.objects.filter(kind=Backup.Kind.SCHEDULED, scheduled_for__isnull=False).count() == 9
    assert set(Backup.objects.filter(kind="scheduled").values_list("requested_by", flat=True)) == {"schedule"}


def test_autumn_02_30_happens_twice_and_makes_one_backup(only_demo_clinics):
    configure("clinica", "Europe/Madrid", time(2, 30))
    configure("bienestar", "America/New_York", time(23, 45), payload_format="json")
    made = simulate(utc(2025, 10, 25, 12), utc(2025, 10, 27, 12), step=timedelta(minutes=1))
    clinica = {day: times for (schema, day), times in made.items() if schema == "clinica"}
    assert clinica == {
        date(2025, 10, 25): [utc(2025, 10, 25, 12)],  # made up at once (the simulation starts after 02:30)
        date(2025, 10, 26): [utc(2025, 10, 26, 0, 30)],  # the first 02:30 (CEST); the second (01:30 UTC) finds it
        date(2025, 10, 27): [utc(2025, 10, 27, 1, 30)],  # 02:30 CET
    }
    bienestar = {day: times for (schema, day), times in made.items() if schema == "bienestar"}
    assert bienestar == {
        date(2025, 10, 25): [utc(2025, 10, 26, 3, 45)],
        date(2025, 10, 26): [utc(2025, 10, 27, 3, 45)],
    }  # EDT until November
    assert set(Backup.objects.filter(clinic__schema_name="bienestar").values_list("payload_format", flat=True)) == {
        "json"
    }


def test_a_busy_clinic_is_tried_again_the_next_minute_and_a_disabled_one_never(only_demo_clinics):
    configure("clinica", "Europe/Madrid", time(2, 0))
    configure("bienestar", "Europe/Madrid", time(2, 0), enabled=False)
    manual = backup_request(clinic="clinica", enqueue=False)  # a backup now in progress
    due = utc(2025, 6, 10, 0, 0)  # 02:00 CEST
    assert schedule.dispatch(due - timedelta(minutes=1), enqueue=False) == []  # not yet
    assert schedule.dispatch(due, enqueue=False) == []  # busy: skipped, nothing queued twice
    assert schedule.dispatch(due + timedelta(minutes=1), enqueue=False) == []
    Backup.objects.filter(pk=manual.pk).update(status=JobStatus.SUCCEEDED)
    [later] = schedule.dispatch(due + timedelta(minutes=2), enqueue=False)
    assert (later.clinic.schema_name, later.scheduled_for, later.kind) == ("clinica", date(2025, 6, 10), "scheduled")
    finish_all()
    assert schedule.dispatch(due + timedelta(hours=3), enqueue=False) == []  # that day is done
    assert not Backup.objects.filter(clinic__schema_name="bienestar", kind="scheduled").exists()


def test_the_database_refuses_a_second_scheduled_backup_for_a_day(only_demo_clinics):
    configure("clinica", "Europe/Madrid", time(2, 0))
    [due] = [d for d in schedule.due_clinics(utc(2025, 6, 10, 12)) if d.clinic.schema_name == "clinica"]
    assert schedule.request_scheduled(due, enqueue=False) is not None
    finish_all()
    assert schedule.request_scheduled(due, enqueue=False) is None  # IntegrityError inside, caught
    assert Backup.objects.filter(clinic=due.clinic, scheduled_for=date(2025, 6, 10)).count() == 1


def test_dispatch_queries_do_not_grow_with_the_clinics(only_demo_clinics, django_assert_max_num_queries):
    """200 more clinics (rows only), all already backed up today: still six statements (each after
    django-tenants' ``SET search_path``): the dispatcher's transaction lock (in a savepoint here),
    the night's backups under way, the time zones in use (and whether a clinic lacks a policy),
    the due ones."""
    clinics = Clinic.objects.bulk_create(
        [Clinic(schema_name=f"many_{n}", name=f"Many {n}", time_zone="Europe/Madrid") for n in range(200)]
    )
    BackupPolicy.objects.bulk_create([BackupPolicy(clinic=c, run_at=time(1, 0)) for c in clinics])
    now = utc(2025, 6, 10, 12)
    Backup.objects.bulk_create(
        [
            Backup(clinic=c, kind="scheduled", status=JobStatus.SUCCEEDED, scheduled_for=date(2025, 6, 10))
            for c in clinics
        ]
    )
    finish_all()
    schedule.dispatch(now, enqueue=False)  # the demo clinics get theirs
    finish_all()
    with django_assert_max_num_queries(12):
        assert schedule.dispatch(now, enqueue=False) == []


# --- Several dispatchers at once ---------------------------------------------------------


def test_two_dispatchers_at_the_same_minute_make_one_backup_per_clinic(live_db):
    """Two threads, each with its own database connection, as two clusters would run it."""
    now = datetime.now(UTC)
    others = list(BackupPolicy.objects.exclude(clinic__schema_name__in=["clinica", "bienestar"]).filter(enabled=True))
    BackupPolicy.objects.filter(pk__in=[p.pk for p in others]).update(enabled=False)
    saved = {c.schema_name: (c.time_zone, policy_for(c).run_at) for c in Clinic.objects.exclude(schema_name="public")}
    try:
        for schema in ("clinica", "bienestar"):
            configure(schema, "UTC", time(0, 0))
        barrier, results, errors = threading.Barrier(2), [], []

        def run() -> None:
            try:
                barrier.wait(10)
                results.append(schedule.dispatch(now, enqueue=False))
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        made = [backup.clinic.schema_name for batch in results for backup in batch]
        assert sorted(made) == ["bienestar", "clinica"]  # each once, whichever thread won
        for schema in ("clinica", "bienestar"):
            assert Backup.objects.filter(clinic__schema_name=schema, scheduled_for=now.date()).count() == 1
    finally:
        BackupPolicy.objects.filter(pk__in=[p.pk for p in others]).update(enabled=True)
        for schema, (zone, run_at) in saved.items():
            configure(schema, zone, run_at)


# --- One schedule row, run by a real worker -------------------------------------------------


def test_the_migration_makes_one_dispatcher_schedule_however_often_it_runs(db):
    class Editor:
        connection = connection

    for _ in range(2):
        dispatcher_migration.add_dispatcher(django_apps, Editor())
    rows = Schedule.objects.filter(func="backups.tasks.dispatch")
    assert rows.count() == 1
    row = rows.get()
    assert (row.name, row.schedule_type, row.minutes, row.repeats) == ("Respaldo dispatcher", "I", 1, -1)


def test_a_real_worker_runs_the_dispatcher_and_makes_the_backup(cluster):
    from django_q.tasks import async_task

    others = list(BackupPolicy.objects.exclude(clinic__schema_name="clinica").filter(enabled=True))
    BackupPolicy.objects.filter(pk__in=[p.pk for p in others]).update(enabled=False)
    clinic = Clinic.objects.get(schema_name="clinica")
    saved = (clinic.time_zone, policy_for(clinic).run_at)
    try:
        configure("clinica", "UTC", time(0, 0))
        today = datetime.now(UTC).date()
        Backup.objects.filter(clinic=clinic, scheduled_for=today).update(scheduled_for=None)
        async_task("backups.tasks.dispatch")
        cluster()

        def scheduled_done() -> Backup | None:
            return Backup.objects.filter(
                clinic=clinic, scheduled_for=today, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]
            ).first()

        backup = wait_for(scheduled_done, timeout=120, what="the scheduled backup")
        assert backup.status == JobStatus.SUCCEEDED, backup.error
        assert (backup.kind, backup.requested_by) == ("scheduled", "schedule")
        assert Backup.objects.filter(clinic=clinic, scheduled_for=today).count() == 1
    finally:
        BackupPolicy.objects.filter(pk__in=[p.pk for p in others]).update(enabled=True)
        configure("clinica", *saved)


def test_one_failing_dispatcher_step_does_not_stop_the_others(monkeypatch):
    from backups import tasks
    from backups.operations import alerts, drills, notify, retention, schedule, webhooks

    ran = []

    def broken(now):
        raise RuntimeError("schedule broke")

    monkeypatch.setattr(schedule, "dispatch", broken)
    monkeypatch.setattr(drills, "dispatch_drills", lambda now: ran.append("drills"))
    monkeypatch.setattr(retention, "prune_all", lambda now, part: ran.append(f"retention {part}"))
    monkeypatch.setattr(notify, "notify_retry_pending", lambda now: ran.append("retries"))
    monkeypatch.setattr(webhooks, "deliver_due", lambda now: ran.append("webhooks"))
    monkeypatch.setattr(alerts, "check_stale", lambda now: ran.append("stale"))
    monkeypatch.setattr(alerts, "daily_summary", lambda now: ran.append("summary"))
    # at minute 30: the hourly step (offboarded clinics) is not due (at minute 0 it ran here for
    # real, without a database, and this test failed once an hour); retention prunes its 30th sixtieth
    monkeypatch.setattr(tasks.timezone, "now", lambda: utc(2025, 6, 10, 12, 30))
    assert tasks.dispatch() == 1
    assert ran == ["drills", "retention (30, 60)", "retries", "webhooks", "stale", "summary"]


# --- The night's pace: a few at a time, lost ones handed again (issue 28) -------------------


def test_the_night_hands_out_at_most_its_concurrency_those_due_longest_first(only_demo_clinics, settings):
    settings.BACKUPS_NIGHT_CONCURRENCY = 2
    BackupPolicy.objects.update(enabled=False)
    clinics = Clinic.objects.bulk_create(
        [Clinic(schema_name=f"pace_{n}", name=f"Pace {n}", time_zone="UTC") for n in range(5)]
    )
    # due at 01:00, 00:30, 01:00, 00:00, 02:00 (UTC): handed out in that order of lateness
    run_at = [time(1, 0), time(0, 30), time(1, 0), time(0, 0), time(2, 0)]
    BackupPolicy.objects.bulk_create([BackupPolicy(clinic=c, run_at=t) for c, t in zip(clinics, run_at, strict=True)])
    now = utc(2025, 6, 10, 3)
    order: list[str] = []
    rounds = 0
    while len(order) < 5 and rounds < 10:
        rounds += 1
        made = schedule.dispatch(now, enqueue=False)
        assert len(made) <= 2
        order += [b.clinic.schema_name for b in made]
        assert schedule.dispatch(now, enqueue=False) == []  # no room until one of them ends
        running = Backup.objects.filter(kind="scheduled", status=JobStatus.PENDING).order_by("pk")
        assert running.count() == 2 or len(order) == 5
        Backup.objects.filter(pk=running.first().pk).update(status=JobStatus.SUCCEEDED)  # one place frees
    assert order == ["pace_3", "pace_1", "pace_0", "pace_2", "pace_4"]
    assert Backup.objects.filter(clinic__in=clinics, scheduled_for=date(2025, 6, 10)).count() == 5


def test_a_backup_the_broker_lost_is_handed_again_and_only_that_one(only_demo_clinics):
    from django_q.brokers import get_broker

    from backups.services.backup import backup_rehand_lost

    broker = get_broker()
    broker.purge_queue()
    now = timezone.now()
    lost = backup_request(clinic="clinica", enqueue=False)
    waiting = backup_request(clinic="bienestar", enqueue=False)
    Backup.objects.filter(pk=lost.pk).update(handed_at=now - timedelta(hours=1))
    Backup.objects.filter(pk=waiting.pk).update(handed_at=now - timedelta(minutes=5))
    try:
        assert backup_rehand_lost(now, older_than=timedelta(minutes=15)) == [lost.pk]
        assert broker.queue_size() == 1  # handed to the broker again
        assert Backup.objects.get(pk=lost.pk).handed_at > now - timedelta(minutes=1)
        assert Backup.objects.get(pk=waiting.pk).handed_at == now - timedelta(minutes=5)
        assert backup_rehand_lost(now, older_than=timedelta(minutes=15)) == []  # not twice in a row
        Backup.objects.filter(pk=waiting.pk).update(handed_at=None)  # never handed (run in-process)
        assert backup_rehand_lost(now + timedelta(days=1), older_than=timedelta(minutes=15)) == [lost.pk]
    finally:
        broker.purge_queue()  # nothing of this test is left for a later test's workers
