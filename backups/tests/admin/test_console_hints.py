"""What the console tells a clinic administrator before they act: when a new clinic's first daily
backup runs, how much of the manual-backup limit is used and when it frees, and (on the platform)
every problem of a clone form at once."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from backups.models import Backup, BackupPolicy, CloneJob
from backups.operations.schedule import next_scheduled_run
from backups.tests.helpers import fake_backup, logged_in, platform_admin
from clinics.models import Clinic

pytestmark = pytest.mark.django_db
LIST = "/admin/backups/backup/"
MADRID = ZoneInfo("Europe/Madrid")


def clinica() -> Clinic:
    clinic = Clinic.objects.get(schema_name="clinica")
    Clinic.objects.filter(pk=clinic.pk).update(time_zone="Europe/Madrid")
    clinic.refresh_from_db()
    BackupPolicy.objects.update_or_create(clinic=clinic, defaults={"enabled": True, "run_at": time(2, 0)})
    return clinic


def test_the_next_daily_backup_is_on_the_clinics_own_clock():
    clinic = clinica()
    before = datetime(2026, 12, 7, 1, 30, tzinfo=MADRID)
    assert next_scheduled_run(clinic, before) == datetime(2026, 12, 7, 2, 0, tzinfo=MADRID)
    after = datetime(2026, 12, 7, 9, 0, tzinfo=MADRID)
    assert next_scheduled_run(clinic, after) == after  # due and not asked for: the next dispatcher minute
    Backup.objects.create(clinic=clinic, kind=Backup.Kind.SCHEDULED, scheduled_for=after.date())
    assert next_scheduled_run(clinic, after) == datetime(2026, 12, 8, 2, 0, tzinfo=MADRID)
    BackupPolicy.objects.filter(clinic=clinic).update(enabled=False)
    assert next_scheduled_run(clinic, after) is None


def test_a_new_clinics_empty_list_says_when_its_first_backup_runs():
    clinic = clinica()
    assert not Backup.objects.filter(clinic=clinic).exists()
    expected = next_scheduled_run(clinic)
    page = logged_in("admin", "admin").get(LIST).content.decode()
    assert 'id="respaldo-first-backup"' in page
    if expected > timezone.now():
        shown = timezone.localtime(expected, MADRID).strftime("%Y-%m-%d %H:%M")
        assert f"the first daily backup runs at {shown} (Europe/Madrid time)" in page
    else:
        assert "within the next minute" in page
    spanish = logged_in("admin", "admin", language="es").get(LIST).content.decode()
    assert "Aún no hay respaldos" in spanish
    BackupPolicy.objects.filter(clinic=clinic).update(enabled=False)
    assert "daily backups are off for this clinic" in logged_in("admin", "admin").get(LIST).content.decode()
    fake_backup()
    assert 'id="respaldo-first-backup"' not in logged_in("admin", "admin").get(LIST).content.decode()


def test_back_up_now_shows_the_limit_used_and_when_it_frees(settings):
    settings.BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY = 2
    clinic = clinica()
    client = logged_in("admin", "admin")
    assert "none of 2" in client.get(f"{LIST}now/").content.decode()
    oldest = timezone.now() - timedelta(hours=20)
    first = fake_backup(kind=Backup.Kind.MANUAL)
    Backup.objects.filter(pk=first.pk).update(requested_at=oldest)
    frees = timezone.localtime(oldest + timedelta(days=1), ZoneInfo(clinic.time_zone)).strftime("%Y-%m-%d %H:%M")
    page = client.get(f"{LIST}now/").content.decode()
    assert f"1 of 2; the oldest of them stops counting at {frees}" in page
    fake_backup(kind=Backup.Kind.MANUAL)
    page = client.get(f"{LIST}now/").content.decode()
    assert f"The limit of 2 manual backups in 24 hours is reached: the next one can be asked for at {frees}" in page
    assert 'value="Back up now" disabled' in page


def test_the_clone_form_shows_every_problem_at_once():
    client = platform_admin()
    source = Clinic.objects.get(schema_name="clinica")
    page = client.post(
        "/admin/backups/clonejob/new/",
        {"source": source.pk, "backup": 999999, "schema_name": "Not A Name", "domain": "bienestar.localhost"},
    ).content.decode()
    assert "This clinic has no such backup to copy." in page
    assert "Not A Name" in page  # the schema name's refusal names it
    assert "bienestar.localhost" in page and "already" in page.lower()  # the domain is taken
    assert page.count('class="errorlist') >= 3
    assert not CloneJob.objects.exists()
