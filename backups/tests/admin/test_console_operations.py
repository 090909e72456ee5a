"""The clinic console's policy and audit-trail pages, and the audit entries the actions write."""

import pytest

from backups.models import AuditEntry, Backup, BackupPolicy, JobStatus
from backups.tests.helpers import fake_backup, logged_in, make_backup
from clinics.models import Clinic

pytestmark = pytest.mark.django_db

POLICIES = "/admin/backups/backuppolicy/"
AUDIT = "/admin/backups/auditentry/"


def policy_form(policy: BackupPolicy, **changes) -> dict:
    data = {
        "enabled": "on" if policy.enabled else "",
        "run_at": policy.run_at.strftime("%H:%M"),
        "time_zone": policy.clinic.time_zone,
        "payload_format": policy.payload_format,
        "keep_daily": policy.keep_daily,
        "keep_weekly": policy.keep_weekly,
        "keep_monthly": policy.keep_monthly,
        "keep_min_days": policy.keep_min_days,
        "keep_pre_restore_days": policy.keep_pre_restore_days,
        "keep_failed_days": policy.keep_failed_days,
        "notify_emails": policy.notify_emails,
        "stale_after_hours": policy.stale_after_hours,
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


def test_the_policy_page_is_this_clinics_and_saving_it_is_audited():
    client = logged_in("admin", "admin")
    own = BackupPolicy.objects.get(clinic__schema_name="clinica")
    other = BackupPolicy.objects.get(clinic__schema_name="bienestar")
    assert client.get(POLICIES)["Location"] == f"{POLICIES}{own.pk}/change/"
    assert client.get(f"{POLICIES}{other.pk}/change/").status_code == 404
    assert client.get(f"{POLICIES}add/").status_code == 403

    response = client.post(
        f"{POLICIES}{own.pk}/change/",
        policy_form(own, run_at="03:15", time_zone="America/Bogota", notify_emails="a@x.example; b@x.example"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    own.refresh_from_db()
    assert own.run_at.strftime("%H:%M") == "03:15" and own.notify_emails == "a@x.example, b@x.example"
    assert Clinic.objects.get(schema_name="clinica").time_zone == "America/Bogota"
    entry = AuditEntry.objects.get(action="policy_changed")
    assert entry.actor == "admin" and entry.clinic.schema_name == "clinica" and "run_at" in entry.details["changed"]
    assert BackupPolicy.objects.get(pk=other.pk).run_at == other.run_at


def test_a_bad_notification_address_is_refused_on_the_form():
    client = logged_in("admin", "admin")
    own = BackupPolicy.objects.get(clinic__schema_name="clinica")
    response = client.post(f"{POLICIES}{own.pk}/change/", policy_form(own, notify_emails="ok@x.example, no-at-sign"))
    assert response.status_code == 200 and "no-at-sign is not an email address" in response.content.decode()
    assert not AuditEntry.objects.exists()


def test_actions_leave_audit_entries_seen_on_this_clinics_audit_page_only():
    client = logged_in("admin", "admin")
    backup = make_backup("clinica")
    client.get(f"/admin/backups/backup/{backup.pk}/download/", REMOTE_ADDR="10.1.2.3")
    target = fake_backup(manifest={"tables": {}})
    client.post(f"/admin/backups/backup/{target.pk}/restore/", {"confirm": "clinica", "accept_emptied": "on"})
    fake_backup("bienestar", status=JobStatus.SUCCEEDED)
    AuditEntry.objects.create(clinic=Clinic.objects.get(schema_name="bienestar"), actor="ajeno", action="downloaded")

    download = AuditEntry.objects.get(action="downloaded", clinic__schema_name="clinica")
    assert (download.actor, download.address, download.backup_id_ref) == ("admin", "10.1.2.3", backup.pk)
    restore = AuditEntry.objects.get(action="restore_requested")
    assert restore.backup_id_ref == target.pk and restore.restore_id_ref is not None
    page = client.get(AUDIT).content.decode()
    assert "10.1.2.3" in page and "ajeno" not in page
    other = AuditEntry.objects.get(actor="ajeno")
    assert client.get(f"{AUDIT}{other.pk}/change/").status_code == 404


def test_reception_has_no_policy_or_audit_pages():
    client = logged_in("recepcion", "recepcion")
    assert client.get(POLICIES).status_code == 403
    assert client.get(AUDIT).status_code == 403


def test_the_list_shows_the_verified_mark_and_a_failed_drill():
    client = logged_in("admin", "admin")
    from django.utils import timezone

    fake_backup(verified_at=timezone.now(), note="comprobado")
    fake_backup(drill_status="failed", note="roto")
    page = client.get("/admin/backups/backup/").content.decode()
    import zoneinfo

    from clinics.models import Clinic

    zone = zoneinfo.ZoneInfo(Clinic.objects.get(schema_name="clinica").time_zone)  # the page shows the clinic's day
    assert "✓ " + timezone.localtime(timezone.now(), zone).strftime("%Y-%m-%d") in page
    assert "drill failed" in page
    assert Backup.objects.filter(drill_status="failed").count() == 1


def test_back_up_now_is_audited_with_who_and_from_where():
    client = logged_in("admin", "admin")
    client.post("/admin/backups/backup/now/", {"payload_format": "json"}, REMOTE_ADDR="10.9.8.7")
    backup = Backup.objects.get(clinic__schema_name="clinica", status=JobStatus.PENDING)
    entry = AuditEntry.objects.get(action="backup_requested", backup_id_ref=backup.pk)
    assert (entry.actor, entry.address, entry.details["format"]) == ("admin", "10.9.8.7", "json")


def test_fair_use_limits_say_so_when_reached(settings):
    settings.BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY = 2
    settings.BACKUPS_MAX_DOWNLOADS_PER_DAY = 1
    client = logged_in("admin", "admin")
    clinica = Clinic.objects.get(schema_name="clinica")
    for _ in range(2):
        Backup.objects.create(clinic=clinica, kind=Backup.Kind.MANUAL, status=JobStatus.FAILED)
    page = client.post("/admin/backups/backup/now/", {"payload_format": "pg"}, follow=True).content.decode()
    assert "2 manual backups in the last 24 hours" in page
    assert not Backup.objects.filter(status=JobStatus.PENDING).exists()

    settings.BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY = 20
    backup = make_backup("clinica")
    assert client.get(f"/admin/backups/backup/{backup.pk}/download/").status_code == 200
    refused = client.get(f"/admin/backups/backup/{backup.pk}/download/", follow=True).content.decode()
    assert "downloaded 1 backups in the last 24 hours" in refused


def test_migrating_a_clinic_grants_new_backup_permissions_to_its_administrators():
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command
    from django_tenants.utils import schema_context

    with schema_context("clinica"):
        admins = Group.objects.get(name="Clinic administrators")
        admins.permissions.remove(Permission.objects.get(codename="upload_backup"))
        assert not admins.permissions.filter(codename="upload_backup").exists()
    call_command("migrate_schemas", schema_name="clinica", interactive=False, verbosity=0)
    with schema_context("clinica"):
        assert admins.permissions.filter(codename="upload_backup").exists()
        assert not Group.objects.get(name="Reception").permissions.filter(content_type__app_label="backups").exists()


def test_the_platform_sees_every_clinics_audit_trail_and_clinics_do_not_see_the_platforms():
    from conftest import host_client

    for schema in ("clinica", "bienestar"):
        AuditEntry.objects.create(
            clinic=Clinic.objects.get(schema_name=schema), actor=f"actor-{schema}", action="downloaded"
        )
    platform = host_client("localhost")
    assert platform.post("/admin/login/", {"username": "superadmin", "password": "superadmin"}).status_code == 302
    page = platform.get(AUDIT).content.decode()
    assert "actor-clinica" in page and "actor-bienestar" in page
    assert "actor-bienestar" not in logged_in("admin", "admin").get(AUDIT).content.decode()


def test_the_policy_page_shows_a_plain_time_a_short_grouped_zone_list_and_plain_help():
    import re

    client = logged_in("admin", "admin")
    own = BackupPolicy.objects.get(clinic__schema_name="clinica")
    page = client.get(f"{POLICIES}{own.pk}/change/").content.decode()
    run_at = re.search(r'<input[^>]*name="run_at"[^>]*>', page).group(0)
    assert 'type="text"' in run_at and f'value="{own.run_at.strftime("%H:%M")}"' in run_at
    assert "vTimeField" not in run_at and "DateTimeShortcuts.js" not in page  # no browser-clock "Now", no note
    select = re.search(r'<select[^>]*name="time_zone".*?</select>', page, re.S).group(0)
    groups = re.findall(r'<optgroup label="([^"]+)">', select)
    assert groups[:2] == ["Africa", "America"] and "Europe" in groups
    zones = re.findall(r'<option value="([^"]+)"', select)
    assert "Europe/Madrid" in zones and "America/Bogota" in zones and "America/Argentina/Buenos_Aires" in zones
    assert not {"US/Eastern", "GMT+0", "Asia/Calcutta", "America/Buenos_Aires"} & set(zones)
    assert not [zone for zone in zones if zone.startswith("Etc/")]
    assert len(zones) < 450
    assert ">Madrid</option>" in select and ">Argentina / Buenos Aires</option>" in select
    assert "failed rows cleaned" not in page
    assert "A backup or restore that failed stays in the lists, with its error, for this many days" in page


def test_a_clinic_in_an_old_alias_zone_keeps_it_when_saving_its_policy():
    client = logged_in("admin", "admin")
    Clinic.objects.filter(schema_name="clinica").update(time_zone="US/Eastern")
    own = BackupPolicy.objects.get(clinic__schema_name="clinica")
    page = client.get(f"{POLICIES}{own.pk}/change/").content.decode()
    assert '<option value="US/Eastern" selected>' in page
    response = client.post(f"{POLICIES}{own.pk}/change/", policy_form(own, run_at="04:30"))
    assert response.status_code == 302
    assert Clinic.objects.get(schema_name="clinica").time_zone == "US/Eastern"
