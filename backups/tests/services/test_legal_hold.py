"""Legal hold: a held backup survives retention (even with a 1-day policy) and offboarding's
erasure; holding and releasing need the permission and a reason, and both are audited."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django_tenants.utils import schema_context

from backups.exceptions import BackupRefused, RespaldoError
from backups.models import AuditEntry, Backup, ClinicKey, JobStatus
from backups.selectors.platform import platform_overview
from backups.services.legal_hold import hold_backup, release_backup
from backups.services.offboard import erase_clinic_backups, erase_offboarded, offboard_clinic
from backups.services.policy import policy_for
from backups.tests.helpers import logged_in, make_backup, platform_admin, stored_path
from clinics.models import Clinic


def _day_old_backups(clinic: Clinic, count: int) -> list[Backup]:
    """``count`` stored backups, one a day, the newest 2 days old, each with a real object."""
    rows = []
    for n in range(count):
        at = datetime.now(UTC) - timedelta(days=2 + n)
        name = f"clinics/{clinic.schema_name}/hold-test/{n}.respaldo"
        path = stored_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (n + 1))
        rows.append(
            Backup.objects.create(
                clinic=clinic,
                status=JobStatus.SUCCEEDED,
                requested_at=at,
                succeeded_at=at,
                storage_name=name,
                size=n + 1,
            )
        )
    return rows


@pytest.mark.django_db
def test_a_held_backup_survives_prune_backups_with_a_one_day_policy():
    clinic = Clinic.objects.get(schema_name="clinica")
    policy = policy_for(clinic)
    policy.keep_daily, policy.keep_weekly, policy.keep_monthly, policy.keep_min_days = 1, 0, 0, 0
    policy.save()
    newest, held, old = _day_old_backups(clinic, 3)
    hold_backup(held, actor="directora", reason="reclamación del paciente 123")

    out = io.StringIO()
    call_command("prune_backups", "clinica", stdout=out)

    held.refresh_from_db()
    old.refresh_from_db()
    assert held.expired_at is None and stored_path(held.storage_name).exists()
    assert old.expired_at is not None and not stored_path(old.storage_name).exists()
    assert re.search(rf"kept\s+#{held.pk}\s.*on legal hold", out.getvalue())
    assert "on legal hold 1" in out.getvalue()  # the summary's "kept by rule"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.HELD, backup_id_ref=held.pk)
    assert entry.actor == "directora" and entry.details["reason"] == "reclamación del paciente 123"
    assert platform_overview().held == {"count": 1, "bytes": held.size}  # the platform index's figure

    release_backup(held, actor="directora", reason="caso cerrado")
    call_command("prune_backups", "clinica", stdout=io.StringIO())
    held.refresh_from_db()
    assert held.expired_at is not None  # released: retention applies again
    released = AuditEntry.objects.get(action=AuditEntry.Action.RELEASED, backup_id_ref=held.pk)
    assert released.details["reason"] == "caso cerrado" and released.details["hold_reason"].startswith("reclam")


@pytest.mark.django_db
def test_holding_needs_a_reason_and_a_stored_backup():
    clinic = Clinic.objects.get(schema_name="clinica")
    (stored,) = _day_old_backups(clinic, 1)
    failed = Backup.objects.create(clinic=clinic, status=JobStatus.FAILED)
    with pytest.raises(RespaldoError, match="Give a reason"):
        hold_backup(stored, actor="a", reason="  ")
    with pytest.raises(RespaldoError, match="is not stored"):
        hold_backup(failed, actor="a", reason="x")
    hold_backup(stored, actor="a", reason="x")
    with pytest.raises(RespaldoError, match="already on legal hold"):
        hold_backup(stored, actor="a", reason="x")
    with pytest.raises(RespaldoError, match="is not on legal hold"):
        release_backup(failed, actor="a", reason="x")


def test_an_offboarded_clinic_with_a_held_backup_keeps_it_and_its_key(scratch_clinic, settings):
    settings.BACKUPS_OFFBOARD_KEEP_DAYS = 30
    final = offboard_clinic(clinic=scratch_clinic, requested_by="ops")
    hold_backup(final, actor="dpo", reason="litigation")
    later = datetime.now(UTC) + timedelta(days=31)
    assert erase_offboarded(now=later) == 0
    final.refresh_from_db()
    assert final.expired_at is None and stored_path(final.storage_name).exists()
    assert ClinicKey.objects.get(clinic=scratch_clinic).erased_at is None
    with pytest.raises(BackupRefused, match="are on legal hold: nothing was erased"):
        erase_clinic_backups(scratch_clinic, actor="dpo", reason="request")
    release_backup(final, actor="dpo", reason="litigation over")
    assert erase_offboarded(now=later) == 1
    assert ClinicKey.objects.get(clinic=scratch_clinic).erased_at is not None
    Clinic.objects.filter(pk=scratch_clinic.pk).update(offboarded_at=None)  # let the fixture drop it


@pytest.mark.django_db
def test_the_console_holds_and_releases_with_the_permission_and_shows_it():
    backup = make_backup("clinica")
    admin = logged_in("admin", "admin")
    page = admin.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()
    assert "Keep this backup on legal hold because" in page
    assert admin.get(f"/admin/backups/backup/{backup.pk}/hold/").status_code == 405
    answer = admin.post(f"/admin/backups/backup/{backup.pk}/hold/", {"reason": "inspección"}, follow=True)
    page = answer.content.decode()
    assert "This backup is now kept on legal hold." in page and "Kept since" in page and "inspección" in page
    listing = admin.get("/admin/backups/backup/").content.decode()
    assert "⚑" in listing and "kept" in listing
    assert "on legal hold" in platform_admin().get("/admin/").content.decode()

    with schema_context("clinica"):  # reception has no backup rights; a viewer without hold_backup
        viewer = User.objects.create_user("visor", password="visor-clave-1", is_staff=True)
        viewer.groups.add(Group.objects.get(name="Clinic administrators"))
        viewer.user_permissions.clear()
        group_perms = Group.objects.get(name="Clinic administrators").permissions.exclude(codename="hold_backup")
        viewer.groups.clear()
        viewer.user_permissions.add(*group_perms)
    other = logged_in("visor", "visor-clave-1")
    assert other.post(f"/admin/backups/backup/{backup.pk}/release/", {"reason": "x"}).status_code == 403
    assert "Release the hold" not in other.get(f"/admin/backups/backup/{backup.pk}/change/").content.decode()

    released = admin.post(f"/admin/backups/backup/{backup.pk}/release/", {"reason": "done"}, follow=True)
    assert "The legal hold was released." in released.content.decode()
    backup.refresh_from_db()
    assert backup.held_at is None


@pytest.mark.django_db
def test_another_clinics_backup_cannot_be_held_from_this_console():
    theirs = Backup.objects.create(
        clinic=Clinic.objects.get(schema_name="bienestar"), status=JobStatus.SUCCEEDED, storage_name="x", size=1
    )
    answer = logged_in("admin", "admin").post(f"/admin/backups/backup/{theirs.pk}/hold/", {"reason": "x"})
    assert answer.status_code == 404
    theirs.refresh_from_db()
    assert theirs.held_at is None
