"""A backup or restore run by ``manage.py`` without ``--async`` announces its end like a worker's
does: the email reaches a real SMTP server and the webhook a real HTTP receiver."""

from __future__ import annotations

import email
import email.policy
import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django_tenants.utils import schema_context

from backups import tasks
from backups.models import Backup, BackupPolicy, JobStatus, Restore
from backups.models.webhooks import WebhookDelivery, WebhookEndpoint
from backups.operations import webhooks
from backups.services.backup import backup_request
from backups.tests.helpers import SCHEMA, free_port, make_backup, smtp_server
from backups.tests.operations.helpers import Receiver
from clinics.models import Clinic

POLICY_ADDRESS = "owner@clinic.example"


@pytest.fixture
def smtp(settings):
    """A real SMTP server on 127.0.0.1 that Django sends through; yields what it received."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    controller, inbox = smtp_server(settings.EMAIL_PORT)
    yield inbox
    controller.stop()


@pytest.fixture
def receiver(settings, monkeypatch):
    """A real HTTP receiver on 127.0.0.1; each delivery is attempted as soon as it is created."""
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    monkeypatch.setattr(webhooks, "enqueue", tasks.deliver_webhook)
    server = Receiver()
    yield server
    server.close()


def subjects(inbox) -> list[str]:
    messages = [email.message_from_bytes(e.original_content, policy=email.policy.default) for e in inbox.envelopes]
    return [str(message["Subject"]).strip() for message in messages]


def events(receiver: Receiver) -> list[str]:
    return [json.loads(request["body"])["event"] for request in receiver.requests]


def test_a_backup_run_by_the_command_emails_and_fires_its_webhook(
    db, smtp, receiver, django_capture_on_commit_callbacks
):
    Clinic.objects.filter(schema_name="clinica").update(language="en")
    clinic = Clinic.objects.get(schema_name="clinica")
    with schema_context("clinica"):
        User.objects.create_user("dra-luna", email="luna@clinic.example", password="x", is_staff=True)
    hook = WebhookEndpoint.objects.create(clinic=clinic, url=receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("backup_clinic", "clinica", "--requested-by", "dra-luna", stdout=io.StringIO())

    backup = Backup.objects.filter(clinic=clinic).latest("pk")
    assert backup.status == JobStatus.SUCCEEDED and backup.kind == Backup.Kind.MANUAL
    assert [e.rcpt_tos for e in smtp.envelopes] == [["luna@clinic.example"]]  # once, to whoever asked
    assert f"Backup #{backup.pk} succeeded" in subjects(smtp)[0]
    backup.refresh_from_db()
    assert backup.notified_at is not None
    assert events(receiver) == ["backup.succeeded"]
    delivery = WebhookDelivery.objects.get(endpoint=hook)
    assert (delivery.event, delivery.status) == ("backup.succeeded", "delivered")


def test_a_worker_given_the_same_backup_twice_announces_it_once(db, smtp, receiver, django_capture_on_commit_callbacks):
    Clinic.objects.filter(schema_name="clinica").update(language="en")
    clinic = Clinic.objects.get(schema_name="clinica")
    BackupPolicy.objects.filter(clinic=clinic).update(notify_emails=POLICY_ADDRESS)
    WebhookEndpoint.objects.create(clinic=clinic, url=receiver.url)
    requested = backup_request(clinic="clinica", kind=Backup.Kind.SCHEDULED, enqueue=False)

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.run_backup(requested.pk) == JobStatus.SUCCEEDED
        assert tasks.run_backup(requested.pk) == JobStatus.SUCCEEDED  # the queue delivered it again

    assert len(smtp.envelopes) == 1 and f"Backup #{requested.pk} succeeded" in subjects(smtp)[0]
    assert events(receiver) == ["backup.succeeded"]


@pytest.fixture
def restore_events(scratch_clinic):
    """The scratch clinic with a policy address and a webhook endpoint (both committed, removed after)."""
    BackupPolicy.objects.filter(clinic=scratch_clinic).update(notify_emails=POLICY_ADDRESS)
    Clinic.objects.filter(pk=scratch_clinic.pk).update(language="en")
    yield scratch_clinic
    WebhookDelivery.objects.filter(endpoint__clinic=scratch_clinic).delete()
    WebhookEndpoint.objects.filter(clinic=scratch_clinic).delete()


def test_a_restore_by_the_command_emails_and_fires_its_webhook(restore_events, smtp, receiver):
    backup = make_backup()
    WebhookEndpoint.objects.create(clinic=restore_events, url=receiver.url)
    smtp.envelopes.clear()

    call_command("restore_clinic", SCHEMA, "--backup", str(backup.pk), "--yes", stdout=io.StringIO())

    restore = Restore.objects.get(clinic=restore_events)
    assert restore.status == JobStatus.SUCCEEDED
    restored = [s for s in subjects(smtp) if f"Restore #{restore.pk}" in s]
    assert len(restored) == 1, subjects(smtp)
    assert all(POLICY_ADDRESS in e.rcpt_tos for e in smtp.envelopes)
    assert events(receiver).count("restore.succeeded") == 1
    restore.refresh_from_db()
    assert restore.notified_at is not None
