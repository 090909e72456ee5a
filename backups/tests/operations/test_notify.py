"""Email notifications (backups/operations/notify.py): who hears, what they read, in which
language, and what happens when the mail server is down (Django's outbox and a real SMTP server)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone
from django_tenants.utils import schema_context

from backups.models import Backup, BackupPolicy, JobStatus, Restore
from backups.operations import alerts, notify
from backups.signals import backup_finished, drill_finished, restore_finished
from backups.tests.helpers import free_port, smtp_server
from clinics.models import Clinic

CLINIC_NAME = "Clínica Dental Sonrisa"
ADMIN = "admin@example.com"  # the demo clinic's admin (group "Clinic administrators")
RECEPTION = "recepcion@example.com"  # no backup rights


@pytest.fixture
def clinic(db) -> Clinic:
    """The demo clinic, in English (the demo makes it Spanish)."""
    Clinic.objects.filter(schema_name="clinica").update(language="en")
    return Clinic.objects.get(schema_name="clinica")


@pytest.fixture
def policy(clinic) -> BackupPolicy:
    policy = BackupPolicy.objects.get(clinic=clinic)
    policy.notify_emails = "Owner@Clinic.example, ADMIN@example.com; owner@clinic.example"
    policy.save()
    return policy


def a_backup(clinic: Clinic, *, status: str = JobStatus.SUCCEEDED, end: datetime | None = None, **fields) -> Backup:
    """A finished backup row (no stored file: notifications only read the row)."""
    end = end or timezone.now()
    stamps = {"succeeded_at": end} if status == JobStatus.SUCCEEDED else {"failed_at": end}
    values = {"kind": Backup.Kind.SCHEDULED, "size": 21_800, "requested_at": end - timedelta(seconds=80)}
    return Backup.objects.create(
        clinic=clinic, status=status, started_at=end - timedelta(seconds=75), **stamps, **{**values, **fields}
    )


def a_restore(clinic: Clinic, *, status: str = JobStatus.SUCCEEDED, **fields) -> Restore:
    source = a_backup(clinic, end=timezone.now() - timedelta(days=1))
    safety = a_backup(clinic, kind=Backup.Kind.PRE_RESTORE)
    end = timezone.now()
    stamps = {"succeeded_at": end} if status == JobStatus.SUCCEEDED else {"failed_at": end}
    return Restore.objects.create(
        clinic=clinic, backup=source, safety_backup=safety, status=status, started_at=end - timedelta(seconds=40),
        requested_by="admin", **stamps, **fields,
    )  # fmt: skip


def dump_failed(detail: str = "pg_dump: connection lost") -> dict:
    return {"error_code": "dump_failed", "error_params": {"params": {"detail": detail}}}


def html_of(message) -> str:
    (html, mimetype), *_ = message.alternatives
    assert mimetype == "text/html"
    return html


def only_message() -> mail.EmailMessage:
    assert len(mail.outbox) == 1, [m.subject for m in mail.outbox]
    return mail.outbox[0]


# --- Django's outbox ---------------------------------------------------------------------


def test_backup_success_goes_to_policy_addresses_and_restorers_once_each(clinic, policy, mailoutbox):
    backup = a_backup(clinic)
    backup_finished.send(sender=Backup, backup=backup)

    message = only_message()
    assert message.to == ["Owner@Clinic.example", "ADMIN@example.com"]  # case-insensitive dedup, no reception
    assert RECEPTION not in message.to
    assert message.subject == f"[{CLINIC_NAME}] Backup #{backup.pk} succeeded (21.3 KB)"
    link = f"http://clinica.localhost/admin/backups/backup/{backup.pk}/change/"
    html = html_of(message)
    for body in (message.body, html):
        assert link in body and "21.3 KB" in body and CLINIC_NAME in body
        assert "Scheduled" in body and "PostgreSQL (pg_dump)" in body and "1 min 15 s" in body
    assert "<script" not in html and "<link" not in html and "src=" not in html  # inline styles only
    backup.refresh_from_db()
    assert backup.notified_at is not None and backup.notify_error == ""


def test_a_manual_backups_success_goes_to_whoever_asked_only_and_its_failure_to_everyone(clinic, policy, mailoutbox):
    with schema_context(clinic.schema_name):
        User.objects.create_user("dra-luna", email="luna@clinic.example", password="x", is_staff=True)
    asked = a_backup(clinic, kind=Backup.Kind.MANUAL, requested_by="dra-luna")
    backup_finished.send(sender=Backup, backup=asked)
    assert only_message().to == ["luna@clinic.example"]

    mail.outbox.clear()
    failed = a_backup(
        clinic, kind=Backup.Kind.MANUAL, requested_by="dra-luna", status=JobStatus.FAILED, **dump_failed()
    )
    backup_finished.send(sender=Backup, backup=failed)
    assert only_message().to == ["Owner@Clinic.example", "ADMIN@example.com"]

    mail.outbox.clear()
    unknown = a_backup(clinic, kind=Backup.Kind.MANUAL, requested_by="api-token-without-address")
    backup_finished.send(sender=Backup, backup=unknown)
    assert mail.outbox == []  # nobody to tell: the asker has no address here


def test_the_policy_can_keep_daily_successes_quiet_and_failures_still_go_out(clinic, policy, mailoutbox):
    backup_finished.send(sender=Backup, backup=a_backup(clinic, kind=Backup.Kind.SCHEDULED))
    assert only_message().to == ["Owner@Clinic.example", "ADMIN@example.com"]  # on by default

    mail.outbox.clear()
    BackupPolicy.objects.filter(pk=policy.pk).update(notify_daily_success=False)
    backup_finished.send(sender=Backup, backup=a_backup(clinic, kind=Backup.Kind.SCHEDULED))
    assert mail.outbox == []
    failed = a_backup(clinic, kind=Backup.Kind.SCHEDULED, status=JobStatus.FAILED, **dump_failed())
    backup_finished.send(sender=Backup, backup=failed)
    assert only_message().to == ["Owner@Clinic.example", "ADMIN@example.com"]


def test_a_clone_never_emails_its_source_clinics_addresses(clinic, policy, mailoutbox):
    from backups.models import CloneJob

    source = a_backup(clinic)
    # bienestar stands for a clone of clinica: its users (admin@example.com...) are clinica's too
    copy = Clinic.objects.get(schema_name="bienestar")
    assert ADMIN in notify.clinic_recipients(copy)
    CloneJob.objects.create(
        source_backup=source, target_schema="bienestar", target_name=copy.name,
        target_domain="bienestar.localhost", clinic=copy, status=JobStatus.SUCCEEDED,
    )  # fmt: skip
    BackupPolicy.objects.update_or_create(
        clinic=copy, defaults={"notify_emails": "owner@clinic.example, nueva@copia.example"}
    )
    assert notify.clinic_recipients(copy) == ["nueva@copia.example"]  # the source's owner is left out
    backup_finished.send(sender=Backup, backup=a_backup(copy))
    assert only_message().to == ["nueva@copia.example"]


def test_backup_failure_says_why_and_what_to_do(clinic, policy, mailoutbox):
    backup = a_backup(clinic, status=JobStatus.FAILED, **dump_failed())
    backup_finished.send(sender=Backup, backup=backup)

    message = only_message()
    assert message.subject == f"[{CLINIC_NAME}] Backup #{backup.pk} failed"
    for body in (message.body, html_of(message)):
        assert "The dump of the clinic failed: pg_dump: connection lost" in body
        assert "What to do" in body and "Back up now" in body


def test_restore_success_and_failure_link_to_the_restore_page(clinic, policy, mailoutbox):
    done = a_restore(clinic)
    failed = a_restore(clinic, status=JobStatus.FAILED, error_code="restore_rolled_back",
                       error_params={"params": {"tool": "pg_restore", "detail": "disk full"}})  # fmt: skip
    restore_finished.send(sender=Restore, restore=done)
    restore_finished.send(sender=Restore, restore=failed)

    ok, bad = mail.outbox
    assert ok.subject == f"[{CLINIC_NAME}] Restore #{done.pk} succeeded"
    assert f"http://clinica.localhost/admin/backups/restore/{done.pk}/progress/" in ok.body
    assert f"safety backup #{done.safety_backup_id}" in ok.body and "Undo this restore" in html_of(ok)
    assert bad.subject == f"[{CLINIC_NAME}] Restore #{failed.pk} failed"
    assert "The restore was rolled back (pg_restore stopped): disk full." in bad.body
    assert "The clinic's data was not changed." in bad.body
    assert f"/admin/backups/restore/{failed.pk}/progress/" in html_of(bad)


def test_only_a_failed_drill_is_news_and_safety_backups_are_silent(clinic, policy, mailoutbox):
    passed = a_backup(clinic, drill_status="succeeded", drilled_at=timezone.now())
    drill_finished.send(sender=Backup, backup=passed)
    backup_finished.send(sender=Backup, backup=a_backup(clinic, kind=Backup.Kind.PRE_RESTORE))
    assert mail.outbox == []

    record = {"code": "archive_changed", "message_id": "archive_changed", "params": {"backup": 7}}
    failed = a_backup(clinic, drill_status="failed", drilled_at=timezone.now(), drill_error=record)
    drill_finished.send(sender=Backup, backup=failed)
    message = only_message()
    assert message.subject == f"[{CLINIC_NAME}] Backup #{failed.pk} failed its restore drill"
    assert "Backup #7 changed in storage since it was made" in message.body


def test_nobody_to_tell_sends_and_records_nothing(clinic, mailoutbox):
    BackupPolicy.objects.filter(clinic=clinic).update(notify_emails="")
    with schema_context(clinic.schema_name):
        User.objects.filter(email=ADMIN).update(is_active=False)
    backup = a_backup(clinic)
    backup_finished.send(sender=Backup, backup=backup)
    assert mail.outbox == []
    backup.refresh_from_db()
    assert backup.notified_at is None and backup.notify_error == ""


def test_a_spanish_clinic_reads_spanish(clinic, policy, mailoutbox):
    Clinic.objects.filter(pk=clinic.pk).update(language="es")
    backup = a_backup(clinic, status=JobStatus.FAILED, payload_format="json", **dump_failed("sin espacio"))
    backup.clinic.refresh_from_db()
    backup_finished.send(sender=Backup, backup=backup)

    html = html_of(only_message())
    assert '<html lang="es">' in html
    assert "El volcado de la clínica falló: sin espacio" in html and "JSON portable" in html
    assert "The dump of the clinic failed" not in html


def test_console_links_follow_scheme_and_port_settings(clinic, policy, mailoutbox, settings):
    settings.BACKUPS_CONSOLE_SCHEME, settings.BACKUPS_CONSOLE_PORT = "https", "8443"
    backup = a_backup(clinic)
    notify.notify_job(backup)
    assert f"https://clinica.localhost:8443/admin/backups/backup/{backup.pk}/change/" in only_message().body


@pytest.mark.parametrize("view", sorted(notify.CONSOLE_PATHS))
def test_every_console_link_an_email_gives_is_the_admins_own_url_of_that_page(clinic, view):
    """Emails write their links out (a command-line run must not load the admin to send one):
    each is exactly what the clinic's admin reverses for that page."""
    from django.urls import reverse

    args = (41,) if "{}" in notify.CONSOLE_PATHS[view] else ()
    admin_path = reverse(f"admin:{view}", args=args, urlconf="clinic_site.urls_tenant")
    assert notify.console_link(clinic, view, *args).endswith(admin_path)
    assert notify.console_link(clinic, view, *args).startswith("http://clinica.localhost")


# --- a real SMTP server --------------------------------------------------------------------


@pytest.fixture
def smtp_settings(settings):
    """Django sends through SMTP to 127.0.0.1 on a port nothing listens on yet."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    return settings


def test_the_email_arrives_at_a_real_smtp_server_with_both_parts(clinic, policy, smtp_settings):
    controller, inbox = smtp_server(smtp_settings.EMAIL_PORT)
    try:
        backup = a_backup(clinic)
        backup_finished.send(sender=Backup, backup=backup)
    finally:
        controller.stop()

    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["Owner@Clinic.example", "ADMIN@example.com"]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert message["Subject"].strip() == f"[{CLINIC_NAME}] Backup #{backup.pk} succeeded (21.3 KB)"
    parts = {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    assert f"/admin/backups/backup/{backup.pk}/change/" in parts["text/plain"]
    assert "21.3 KB" in parts["text/html"]


def test_a_mail_server_down_is_recorded_then_retried(clinic, policy, smtp_settings):
    backup = a_backup(clinic, status=JobStatus.FAILED, **dump_failed())
    old = a_backup(clinic, end=timezone.now() - timedelta(hours=30), notify_error="ConnectionRefusedError: old")
    backup_finished.send(sender=Backup, backup=backup)  # nothing listens: the receiver must not raise

    backup.refresh_from_db()
    assert backup.status == JobStatus.FAILED and backup.error_code == "dump_failed"  # the job is as it was
    assert backup.notified_at is None and "ConnectionRefusedError" in backup.notify_error
    assert notify.notify_retry_pending(timezone.now()) == 0  # still down

    controller, inbox = smtp_server(smtp_settings.EMAIL_PORT)
    try:
        assert notify.notify_retry_pending(timezone.now()) == 1
        assert notify.notify_retry_pending(timezone.now()) == 0  # sent once
    finally:
        controller.stop()
    (envelope,) = inbox.envelopes
    assert f"Backup #{backup.pk} failed" in envelope.original_content.decode()
    backup.refresh_from_db()
    old.refresh_from_db()
    assert backup.notified_at is not None and backup.notify_error == ""
    assert old.notified_at is None  # finished more than a day ago: given up


# --- missed backups and the daily summary ---------------------------------------------------


def clinica_alerts() -> list:
    return [m for m in mail.outbox if m.subject.startswith(f"[{CLINIC_NAME}] No successful backup")]


def test_missed_backup_alert_once_per_episode(clinic, policy, mailoutbox):
    assert not Backup.objects.filter(clinic=clinic).exists()
    alerts.check_stale(clinic.created_at + timedelta(hours=25))  # young enough: not late yet
    assert clinica_alerts() == []
    start = clinic.created_at + timedelta(hours=27)  # older than its threshold, with no backup

    alerts.check_stale(start)
    (alert,) = clinica_alerts()
    assert alert.subject == f"[{CLINIC_NAME}] No successful backup for 26 hours"
    assert alert.to == ["Owner@Clinic.example", "ADMIN@example.com"]
    assert "http://clinica.localhost/admin/backups/backup/" in alert.body and "has no usable backup yet" in alert.body
    alerts.check_stale(start + timedelta(hours=5))
    assert len(clinica_alerts()) == 1  # same episode

    a_backup(clinic, end=start + timedelta(hours=6))  # the episode ends
    alerts.check_stale(start + timedelta(hours=7))
    assert len(clinica_alerts()) == 1
    assert BackupPolicy.objects.get(clinic=clinic).stale_alert_sent_at is None

    alerts.check_stale(start + timedelta(hours=6 + 27))  # silence again: a new episode
    assert len(clinica_alerts()) == 2
    assert "The newest usable backup of" in clinica_alerts()[1].body


def test_daily_summary_once_a_day_to_platform_admins(clinic, mailoutbox):
    now = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
    failed = a_backup(clinic, status=JobStatus.FAILED, end=now - timedelta(hours=3), **dump_failed())
    a_backup(clinic, status=JobStatus.FAILED, end=now - timedelta(hours=30), **dump_failed("too old"))

    assert alerts.daily_summary(now) is True
    message = only_message()
    assert message.to == ["superadmin@example.com"]
    assert message.subject.startswith("Respaldo daily summary: 1 failed")
    for body in (message.body, html_of(message)):
        assert CLINIC_NAME in body and f"Backup #{failed.pk}" in body
        assert "The dump of the clinic failed: pg_dump: connection lost" in body and "too old" not in body
        assert f"http://clinica.localhost/admin/backups/backup/{failed.pk}/change/" in body
        assert "Clinics without a recent successful backup" in body
    assert "http://localhost/admin/" in message.body

    assert alerts.daily_summary(now + timedelta(hours=11)) is False  # same day
    assert alerts.daily_summary(now + timedelta(days=1)) is True
    assert len(mail.outbox) == 2


def test_a_summary_of_many_failures_lists_the_first_and_counts_the_rest(clinic, mailoutbox, monkeypatch):
    monkeypatch.setattr(alerts, "SUMMARY_ROWS", 3)
    now = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
    ends = [now - timedelta(hours=hours) for hours in range(5)]
    failed = [a_backup(clinic, status=JobStatus.FAILED, end=end, **dump_failed()) for end in ends]
    restore = Restore.objects.create(clinic=clinic, backup=failed[0], status=JobStatus.FAILED, failed_at=now)

    assert alerts.daily_summary(now) is True
    message = only_message()
    assert message.subject.startswith("Respaldo daily summary: 6 failed")  # all of them, not the listed three
    for body in (message.body, html_of(message)):
        assert [f"Backup #{b.pk}" in body for b in failed] == [True, True, True, False, False]
        assert f"Restore #{restore.pk}" not in body
        assert "…and 3 more failures: see the platform console." in body
