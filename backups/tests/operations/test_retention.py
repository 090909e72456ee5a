"""Retention (backups/operations/retention.py): the pure GFS decision over calendars, and pruning for real."""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.models import AuditEntry, Backup, Restore
from backups.operations import retention
from backups.operations.retention import Action, Record, Rules, decide
from backups.services.policy import policy_for
from backups.tests.helpers import storage_files, stored_path
from clinics.models import Clinic

MADRID = ZoneInfo("Europe/Madrid")
NONE_KEPT = Rules(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_min_days=0, keep_pre_restore_days=0)


def local(*args: int, fold: int = 0) -> datetime:
    """A Madrid wall-clock time, as the database would hand it back (UTC)."""
    return datetime(*args, tzinfo=MADRID, fold=fold).astimezone(UTC)


def ok(id: int, at: datetime, kind: str = "scheduled") -> Record:
    return Record(id=id, kind=kind, status="succeeded", requested_at=at)


def run(records: list[Record], rules: Rules, now: datetime, **kw) -> dict[int, retention.Decision]:
    return {d.backup_id: d for d in decide(records, rules, now=now, tz=kw.pop("tz", MADRID), **kw)}


def kept(decisions: dict[int, retention.Decision]) -> set[int]:
    return {pk for pk, d in decisions.items() if d.action == Action.KEEP}


def replace_rules(**numbers: int) -> Rules:
    """Every count 0 except ``numbers``."""
    return replace(NONE_KEPT, **numbers)


# --- calendars: each case is (backups by id, rules, now, ids kept, reasons expected) -----------------

CALENDAR_CASES = {
    # 23:30 on Jan 31 and 00:30 on Feb 1 are both January in UTC: locally the second is February.
    "month ends, non-leap year": (
        {
            1: local(2026, 1, 31, 23, 30),
            2: local(2026, 2, 1, 0, 30),
            3: local(2026, 2, 28, 23, 30),
            4: local(2026, 3, 1, 0, 30),
        },
        replace_rules(keep_monthly=3),
        local(2026, 3, 1, 12, 0),
        {4, 3, 1},
        {4: ("newest", "monthly 2026-03"), 3: ("monthly 2026-02",), 1: ("monthly 2026-01",)},
    ),
    "month ends, leap year": (
        {1: local(2028, 2, 28, 23, 0), 2: local(2028, 2, 29, 23, 30), 3: local(2028, 3, 1, 0, 30)},
        replace_rules(keep_monthly=2),
        local(2028, 3, 1, 12, 0),
        {3, 2},
        {2: ("monthly 2028-02",)},
    ),
    # Clocks go 02:00 -> 03:00 on Sunday 29 March 2026; 00:30 that day is still 28 March in UTC.
    "DST spring forward, Madrid": (
        {
            1: local(2026, 3, 27, 0, 30),
            2: local(2026, 3, 28, 0, 30),
            3: local(2026, 3, 28, 22, 0),
            4: local(2026, 3, 29, 0, 30),
            5: local(2026, 3, 30, 0, 30),
        },
        replace_rules(keep_daily=3),
        local(2026, 3, 30, 12, 0),
        {5, 4, 3},
        {5: ("newest", "daily 1/3"), 4: ("daily 2/3",), 3: ("daily 3/3",)},
    ),
    # Clocks go 03:00 -> 02:00 on Sunday 25 October 2026 (ISO week 43): 02:30 happens twice, and
    # Monday 00:30 (week 44) is still Sunday in UTC.
    "DST fall back, Madrid, weeks": (
        {
            1: local(2026, 10, 24, 12, 0),
            2: local(2026, 10, 25, 0, 30),
            3: local(2026, 10, 25, 2, 30),
            4: local(2026, 10, 25, 2, 30, fold=1),
            5: local(2026, 10, 26, 0, 30),
        },
        replace_rules(keep_weekly=2),
        local(2026, 10, 26, 12, 0),
        {5, 4},
        {5: ("newest", "weekly 2026-W44"), 4: ("weekly 2026-W43",)},
    ),
    "DST fall back, Madrid, days": (
        {
            1: local(2026, 10, 24, 23, 30),
            2: local(2026, 10, 25, 0, 30),
            3: local(2026, 10, 25, 2, 30),
            4: local(2026, 10, 25, 2, 30, fold=1),
            5: local(2026, 10, 26, 0, 30),
        },
        replace_rules(keep_daily=3),
        local(2026, 10, 26, 12, 0),
        {5, 4, 1},
        {4: ("daily 2/3",), 1: ("daily 3/3",)},
    ),
    # The newest N days, weeks and months *that have backups*, not the last N calendar ones.
    "gaps of missing days": (
        {
            1: local(2026, 10, 9, 2),
            2: local(2026, 10, 10, 2),
            3: local(2026, 11, 1, 2),
            4: local(2026, 11, 15, 2),
            5: local(2026, 11, 20, 2),
        },
        replace_rules(keep_daily=3),
        local(2026, 11, 20, 12),
        {5, 4, 3},
        {3: ("daily 3/3",)},
    ),
    "gaps of missing weeks and months": (
        {
            1: local(2026, 5, 3, 2),
            2: local(2026, 6, 1, 2),
            3: local(2026, 6, 2, 2),
            4: local(2026, 9, 14, 2),
            5: local(2026, 11, 20, 2),
        },
        replace_rules(keep_weekly=2, keep_monthly=3),
        local(2026, 11, 20, 12),
        {5, 4, 3},
        {
            5: ("newest", "weekly 2026-W47", "monthly 2026-11"),
            4: ("weekly 2026-W38", "monthly 2026-09"),
            3: ("monthly 2026-06",),
        },
    ),
    # Every count 0: the newest successful backup still stays, whatever the policy says.
    "counts 0 keep the newest": (
        {1: local(2026, 11, 18, 2), 2: local(2026, 11, 19, 2), 3: local(2026, 11, 20, 2)},
        NONE_KEPT,
        local(2026, 11, 20, 12),
        {3},
        {3: ("newest",), 2: ("holds no day, week or month slot",)},
    ),
    # Several backups a day (manual and uploaded count): the day's newest holds the slot.
    "manual and uploaded hold slots": (
        {1: local(2026, 11, 19, 2), 2: local(2026, 11, 19, 15), 3: local(2026, 11, 20, 2), 4: local(2026, 11, 20, 9)},
        replace_rules(keep_daily=2),
        local(2026, 11, 20, 12),
        {4, 2},
        {4: ("newest", "daily 1/2"), 2: ("daily 2/2",)},
    ),
    "younger than the minimum age": (
        {1: local(2026, 11, 10, 11), 2: local(2026, 11, 10, 13), 3: local(2026, 11, 20, 2)},
        replace_rules(keep_min_days=10),
        local(2026, 11, 20, 12),
        {3, 2},
        {2: ("younger than 10 days",)},
    ),
}


KINDS = {2: "manual", 4: "uploaded"}  # for "manual and uploaded hold slots"; kind plays no part elsewhere


@pytest.mark.parametrize("case", CALENDAR_CASES, ids=list(CALENDAR_CASES))
def test_calendar_cases(case):
    backups, rules, now, expected, reasons = CALENDAR_CASES[case]
    decisions = run([ok(pk, at, KINDS.get(pk, "scheduled")) for pk, at in backups.items()], rules, now)
    assert kept(decisions) == expected
    assert {pk for pk, d in decisions.items() if d.action == Action.PRUNE} == set(backups) - expected
    for pk, why in reasons.items():
        assert decisions[pk].reasons == why


def test_decisions_come_newest_first_and_cover_every_row():
    records = [ok(1, local(2026, 1, 1, 2)), ok(3, local(2026, 1, 3, 2)), ok(2, local(2026, 1, 2, 2))]
    decisions = decide(records, Rules(), now=local(2026, 1, 4), tz=MADRID)
    assert [d.backup_id for d in decisions] == [3, 2, 1]


# --- 400 days of daily history ---------------------------------------------------------------

NOW = local(2026, 11, 20, 12, 0)  # Friday 20 November 2026, ISO week 47
HISTORY = [date(2026, 11, 20) - timedelta(days=n) for n in range(400)]  # 17 Oct 2025 .. 20 Nov 2026

# Read off a calendar, under the default policy (7 daily, 4 weekly, 12 monthly, 30 days):
WITHIN_30_DAYS = {date(2026, 10, 22) + timedelta(days=n) for n in range(30)}  # 02:00 on 22 Oct: 29 days 11 h old
DAILY = {date(2026, 11, d) for d in range(14, 21)}  # 14..20 Nov
WEEKLY = {date(2026, 11, 20), date(2026, 11, 15), date(2026, 11, 8), date(2026, 11, 1)}  # W47 (today), Sundays
MONTHLY = {  # the newest of this month and the last day of each of the 11 before it
    date(2026, 11, 20),
    date(2026, 10, 31),
    date(2026, 9, 30),
    date(2026, 8, 31),
    date(2026, 7, 31),
    date(2026, 6, 30),
    date(2026, 5, 31),
    date(2026, 4, 30),
    date(2026, 3, 31),
    date(2026, 2, 28),
    date(2026, 1, 31),
    date(2025, 12, 31),
}
KEPT_OF_400 = WITHIN_30_DAYS | DAILY | WEEKLY | MONTHLY


def made_at(day: date) -> datetime:
    return local(day.year, day.month, day.day, 2, 0)


def test_400_days_of_daily_history_keep_exactly_gfs():
    assert len(KEPT_OF_400) == 40  # 30 days + 10 month ends before them
    records = [ok(day.toordinal(), made_at(day)) for day in HISTORY]
    decisions = run(records, Rules(), NOW)
    assert {date.fromordinal(pk) for pk in kept(decisions)} == KEPT_OF_400
    assert len([d for d in decisions.values() if d.action == Action.PRUNE]) == 360
    newest = decisions[date(2026, 11, 20).toordinal()]
    assert newest.reasons == ("newest", "daily 1/7", "weekly 2026-W47", "monthly 2026-11", "younger than 30 days")
    assert decisions[date(2025, 12, 31).toordinal()].reasons == ("monthly 2025-12",)
    assert decisions[date(2026, 11, 8).toordinal()].reasons == ("weekly 2026-W45", "younger than 30 days")
    assert decisions[date(2025, 11, 30).toordinal()].action == Action.PRUNE  # a 13th month
    assert decisions[date(2026, 10, 21).toordinal()].action == Action.PRUNE  # 30 days 11 h old


def test_pruning_again_at_the_same_moment_prunes_nothing():
    records = [ok(day.toordinal(), made_at(day)) for day in HISTORY]
    first = run(records, Rules(), NOW)
    survivors = [r for r in records if first[r.id].action == Action.KEEP]
    expired = [Record(r.id, r.kind, r.status, r.requested_at, expired=True) for r in records if r not in survivors]
    second = run(survivors + expired, Rules(), NOW)
    assert kept(second) == kept(first)
    assert not [d for d in second.values() if d.action == Action.PRUNE]


# --- safety backups, failed and running rows, backups in use --------------------------------------


def test_safety_backups_are_kept_their_days_then_are_ordinary():
    records = [
        ok(1, local(2026, 10, 31, 2)),
        ok(2, local(2026, 10, 31, 15), "pre_restore"),  # 20 days old
        ok(3, NOW - timedelta(days=3), "pre_restore"),
        ok(4, NOW - timedelta(hours=1)),
    ]
    decisions = run(records, replace_rules(keep_pre_restore_days=7), NOW)
    assert decisions[3].reasons == ("safety backup younger than 7 days",)
    assert kept(decisions) == {4, 3}
    # Past its days, a safety backup holds a slot like any backup: here the newest of October.
    decisions = run(records, replace_rules(keep_pre_restore_days=7, keep_monthly=2), NOW)
    assert decisions[2].reasons == ("monthly 2026-10",)
    assert kept(decisions) == {4, 3, 2}


def test_failed_rows_go_after_their_age_and_never_count_as_newest():
    records = [
        ok(1, NOW - timedelta(days=60)),
        Record(2, "scheduled", "failed", NOW - timedelta(days=31)),
        Record(3, "scheduled", "failed", NOW - timedelta(days=29)),
        Record(4, "scheduled", "failed", NOW - timedelta(hours=2)),
    ]
    decisions = run(records, NONE_KEPT, NOW)
    assert decisions[1].reasons == ("newest",)
    assert decisions[2].action == Action.DELETE_ROW
    assert decisions[2].reason == "failed, older than 30 days → delete row"
    assert decisions[3].action == decisions[4].action == Action.KEEP
    assert decisions[3].reason == "failed, younger than 30 days"


def test_pending_running_and_expired_rows_are_left_alone():
    records = [
        ok(1, NOW - timedelta(days=90)),
        Record(2, "scheduled", "running", NOW - timedelta(days=90)),
        Record(3, "manual", "pending", NOW - timedelta(days=90)),
        Record(4, "scheduled", "succeeded", NOW - timedelta(days=1), expired=True),
    ]
    decisions = run(records, NONE_KEPT, NOW)
    assert {pk: d.action for pk, d in decisions.items()} == {
        1: Action.KEEP,
        2: Action.LEAVE,
        3: Action.LEAVE,
        4: Action.LEAVE,
    }
    assert decisions[1].reasons == ("newest",)  # an expired row is not the newest backup


def test_backups_in_use_are_kept():
    records = [ok(1, NOW - timedelta(days=300)), ok(2, NOW - timedelta(days=200)), ok(3, NOW)]
    decisions = run(records, NONE_KEPT, NOW, in_use={1: "restore #12", 2: "a drill"})
    assert decisions[1].reasons == ("in use by restore #12",)
    assert decisions[2].reasons == ("in use by a drill",)
    assert kept(decisions) == {1, 2, 3}


def test_the_clinic_time_zone_decides_the_day():
    # 16:00 and 17:30 on 1 June in Madrid are 23:00 on 1 June and 00:30 on 2 June in Tokyo.
    records = [ok(1, local(2026, 6, 1, 16, 0)), ok(2, local(2026, 6, 1, 17, 30)), ok(3, local(2026, 6, 3, 12))]
    now, rules = local(2026, 6, 3, 13), replace_rules(keep_daily=3)
    assert kept(run(records, rules, now)) == {3, 2}
    assert kept(run(records, rules, now, tz=ZoneInfo("Asia/Tokyo"))) == {3, 2, 1}


# --- the command and pruning for real --------------------------------------------------------------


@pytest.fixture
def clinica(db) -> Clinic:
    clinic = Clinic.objects.get(schema_name="clinica")
    clinic.time_zone = "Europe/Madrid"
    clinic.save(update_fields=["time_zone"])
    policy = policy_for(clinic)
    for field, value in asdict(Rules()).items():
        setattr(policy, field, value)
    policy.save()
    assert not Backup.objects.filter(clinic=clinic).exists()
    return clinic


def catalog_row(clinic: Clinic, at: datetime, **fields) -> Backup:
    fields.setdefault("status", "succeeded")
    fields.setdefault("kind", "scheduled")
    fields.setdefault("storage_name", f"clinics/{clinic.schema_name}/fake/{at:%Y%m%dT%H%M}.respaldo")
    return Backup.objects.create(clinic=clinic, requested_at=at, succeeded_at=at, **fields)


def test_dry_run_command_lists_exactly_the_policy_and_changes_nothing(clinica, monkeypatch):
    monkeypatch.setattr(retention, "_now", lambda: NOW)
    rows = {day: catalog_row(clinica, made_at(day)) for day in HISTORY}
    audits = AuditEntry.objects.count()
    out = io.StringIO()
    call_command("prune_backups", "clinica", "--dry-run", stdout=out)
    lines = out.getvalue().splitlines()
    listed = {
        verb: {int(line.split("#")[1].split()[0]) for line in lines if line.strip().startswith(verb)}
        for verb in ("would prune", "keep")
    }
    assert listed["keep"] == {rows[day].pk for day in KEPT_OF_400}
    assert listed["would prune"] == {row.pk for day, row in rows.items() if day not in KEPT_OF_400}
    assert rows[HISTORY[0]].pk not in listed["would prune"]
    assert any("newest, daily 1/7, weekly 2026-W47" in line for line in lines)
    assert lines[-1] == (
        "Summary (1 clinic, dry run): 40 kept, 360 would be pruned, 0 failed rows would be deleted, "
        "0 left alone (pending, running or expired)."
    )
    assert not Backup.objects.filter(clinic=clinica, expired_at__isnull=False).exists()
    assert AuditEntry.objects.count() == audits


@pytest.fixture(autouse=True)
def _remove_written_files():
    yield
    shutil.rmtree(stored_path("clinics/clinica/retention-test"), ignore_errors=True)


def write_stored(name: str) -> str:
    path = stored_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a backup")
    return name


def test_prune_deletes_objects_marks_rows_and_audits(clinica):
    now = datetime.now(UTC)
    policy = policy_for(clinica)
    policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.keep_min_days = 2, 0, 0, 0
    policy.save()
    rows = [
        catalog_row(
            clinica, now - timedelta(days=n), storage_name=write_stored(f"clinics/clinica/retention-test/{n}.respaldo")
        )
        for n in range(1, 6)
    ]
    old_failed = catalog_row(clinica, now - timedelta(days=40), status="failed", storage_name="")
    decisions = {d.backup_id: d for d in retention.prune_clinic(clinica, dry_run=False, now=now)}
    for row in rows:
        row.refresh_from_db()
    assert [row.expired_at is not None for row in rows] == [False, False, True, True, True]
    assert not {f"clinics/clinica/retention-test/{n}.respaldo" for n in (3, 4, 5)} & storage_files()
    assert {f"clinics/clinica/retention-test/{n}.respaldo" for n in (1, 2)} <= storage_files()
    assert decisions[rows[2].pk].done == "pruned"
    assert not Backup.objects.filter(pk=old_failed.pk).exists()
    pruned = AuditEntry.objects.filter(clinic=clinica, action=AuditEntry.Action.PRUNED)
    assert {entry.backup_id_ref for entry in pruned} == {rows[2].pk, rows[3].pk, rows[4].pk, old_failed.pk}
    assert retention.prune_clinic(clinica, dry_run=False, now=now)[2].action == Action.LEAVE  # nothing more to do


def test_a_storage_failure_leaves_its_row_and_the_others_go_on(clinica):
    now = datetime.now(UTC)
    policy = policy_for(clinica)
    policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.keep_min_days = 1, 0, 0, 0
    policy.save()
    rows = [
        catalog_row(
            clinica, now - timedelta(days=n), storage_name=write_stored(f"clinics/clinica/retention-test/{n}.respaldo")
        )
        for n in range(1, 4)
    ]
    # Undeletable: a non-empty folder where the file should be (chmod does not stop root).
    stuck = stored_path(rows[1].storage_name)
    stuck.unlink()
    (stuck / "inside").mkdir(parents=True)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 backups could not be pruned"):
        call_command("prune_backups", "clinica", stdout=out)
    for row in rows:
        row.refresh_from_db()
    assert rows[1].expired_at is None and rows[2].expired_at is not None
    assert re.search(rf"FAILED to prune +#{rows[1].pk} .* Directory not empty", out.getvalue())
    assert "row unchanged" in out.getvalue()
    assert not AuditEntry.objects.filter(backup_id_ref=rows[1].pk, action=AuditEntry.Action.PRUNED).exists()


def test_a_restore_that_starts_before_the_deletion_keeps_its_backup(clinica):
    now = datetime.now(UTC)
    rows = [catalog_row(clinica, now - timedelta(days=n)) for n in (100, 1)]
    policy = policy_for(clinica)
    policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.keep_min_days = 1, 0, 0, 0
    policy.save()
    plan = retention.plan_clinic(clinica, now=now)
    assert [d.action for d in plan] == [Action.KEEP, Action.PRUNE]
    restore = Restore.objects.create(clinic=clinica, backup=rows[0])
    decision = retention._prune_one(clinica, plan[1], now=now, in_use_ids=())
    assert decision.action == Action.KEEP and decision.reasons == (f"in use by restore #{restore.pk}",)
    rows[0].refresh_from_db()
    assert rows[0].expired_at is None
    assert retention.prune_clinic(clinica, dry_run=True, now=now, in_use_ids={rows[0].pk})[1].reasons == (
        f"in use by restore #{restore.pk}",
    )


def test_prune_all_goes_through_every_clinic(clinica):
    bienestar = Clinic.objects.get(schema_name="bienestar")
    now = datetime.now(UTC)
    for clinic in (clinica, bienestar):
        policy = policy_for(clinic)
        policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.keep_min_days = 1, 0, 0, 0
        policy.save()
    rows = [catalog_row(clinic, now - timedelta(days=n)) for clinic in (clinica, bienestar) for n in (1, 50)]
    results = retention.prune_all(now)
    assert {schema: [d.action for d in decisions] for schema, decisions in results.items()} == {
        "bienestar": [Action.KEEP, Action.PRUNE],
        "clinica": [Action.KEEP, Action.PRUNE],
    }
    assert [Backup.objects.get(pk=row.pk).expired_at is not None for row in rows] == [False, True, False, True]


def test_the_dispatcher_prunes_each_clinic_once_an_hour_a_sixtieth_a_minute(clinica):
    bienestar = Clinic.objects.get(schema_name="bienestar")
    now = datetime.now(UTC)
    pruned = {minute: set(retention.prune_all(now, part=(minute, 60))) for minute in range(60)}
    for clinic in (clinica, bienestar):
        assert [minute for minute, schemas in pruned.items() if clinic.schema_name in schemas] == [clinic.pk % 60]
