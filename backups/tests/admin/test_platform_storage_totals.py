"""Each clinic's stored bytes and backups (``ClinicStorage``), which the database keeps by a
trigger, agree with the catalog's own rule (``Backup.objects.in_storage()``) after every kind
of write: created, stored, resized, expired, its file name cleared, moved to another clinic,
deleted one by one and in bulk, and written by raw SQL. The platform's overview and clinics
list read it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from backups.models import Backup, ClinicStorage, JobStatus, Restore
from backups.selectors.platform import clinics_with_health, platform_clinics, platform_overview
from backups.tests import catalog_fill

pytestmark = pytest.mark.django_db


def catalog_totals() -> dict[int, tuple[int, int]]:
    """{clinic: (bytes, backups)} summed from the catalog, clinics with no stored backup left out."""
    rows = Backup.objects.in_storage().order_by().values("clinic_id").annotate(b=Sum("size"), n=Count("id"))
    return {row["clinic_id"]: (row["b"] or 0, row["n"]) for row in rows}


def kept_totals() -> dict[int, tuple[int, int]]:
    """The same from ``ClinicStorage``, clinics whose count went back to zero left out."""
    rows = ClinicStorage.objects.exclude(backups=0, bytes=0).values_list("clinic_id", "bytes", "backups")
    return {clinic: (size, count) for clinic, size, count in rows}


def test_the_kept_totals_follow_every_kind_of_write():
    clinics = catalog_fill.fill_catalog(clinics=6, backups_each=30, size=1000, analyze=False)
    assert kept_totals() == catalog_totals() and len(kept_totals()) == 6  # inserted by SQL, in bulk
    first, second, third = clinics[:3]
    rows = list(Backup.objects.filter(clinic=first).order_by("id"))

    Backup.objects.filter(pk=rows[0].pk).update(size=123_456)  # resized (a queryset update)
    Backup.objects.filter(pk=rows[1].pk).update(expired_at=timezone.now())  # retention removed the file
    Backup.objects.filter(pk=rows[2].pk).update(storage_name="")  # never stored
    Backup.objects.filter(pk=rows[3].pk).update(clinic=second)  # moved to another clinic
    Backup.objects.filter(pk=rows[4].pk).update(size=None)  # unknown size counts as 0 bytes
    rows[5].delete()  # one by one
    Backup.objects.filter(clinic=third).delete()  # in bulk
    running = Backup.objects.create(clinic=first, status=JobStatus.RUNNING)  # no file yet
    assert kept_totals() == catalog_totals()

    running.storage_name, running.size, running.status = "clinics/x/1.age", 777, JobStatus.SUCCEEDED
    running.save()  # stored at the end of its job
    with connection.cursor() as cursor:  # and by hand, as an operator might
        cursor.execute("UPDATE backups_backup SET expired_at = NULL WHERE id = %s", [rows[1].pk])
    assert kept_totals() == catalog_totals()
    assert third.pk not in kept_totals()


def test_the_overview_and_the_list_read_the_kept_totals():
    clinics = catalog_fill.fill_catalog(clinics=4, backups_each=10, size=1000, analyze=False)
    expected = catalog_totals()
    overview = platform_overview()
    assert overview.stored_size == sum(size for size, _ in expected.values())
    assert overview.stored_count == sum(count for _, count in expected.values())
    assert [big.pk for big in overview.biggest] == sorted(expected, key=lambda pk: -expected[pk][0])
    listed = {c.pk: (c.stored_size, c.stored_count) for c in clinics_with_health(platform_clinics())}
    assert all(listed[c.pk] == expected[c.pk] for c in clinics)


def test_a_clinic_with_a_failed_backup_and_a_failed_restore_is_one_failing_clinic():
    clinics = catalog_fill.fill_catalog(clinics=3, backups_each=1, size=1000, analyze=False)  # g = 1: none failed
    now = timezone.now()
    before = platform_overview()
    both, only_restore = clinics[0], clinics[1]
    source = Backup.objects.filter(clinic=both).first()
    Backup.objects.create(clinic=both, status=JobStatus.FAILED, failed_at=now - timedelta(hours=1))
    for clinic in (both, both, only_restore):
        Restore.objects.create(clinic=clinic, backup=source, status=JobStatus.FAILED, failed_at=now)
    after = platform_overview()
    assert after.failing_clinics == before.failing_clinics + 2
    assert after.failed_backups == before.failed_backups + 1
    assert after.failed_restores == before.failed_restores + 3
