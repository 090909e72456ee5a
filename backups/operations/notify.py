"""Email about a clinic's backups: job results, missed backups, and a daily summary for the platform.

Who hears: a clinic's emails go to its policy's addresses and to the active users of its
schema who may restore its backups (``backups.restore_backup``, directly, through a group or
as superuser), once each whatever the spelling's case. A manual backup that succeeded is news
only to the person who asked for it (their account's address; nobody when it has none); its
failure goes to everyone, as every other job's result does. A clinic cloned from another one
(platform clones: its users and addresses came with the data) never writes to an address of
its source clinic. The platform's daily summary goes to the public schema's active
superusers. Nobody to tell means nothing is sent and nothing recorded.

What they read: ``backups/email/<event>.txt`` and ``.html`` (one layout, inline styles only),
rendered in the clinic's language (``Clinic.language``) and time zone; a failure's reason is
rendered from its stable code at that moment, so it reads in the recipient's language.

A failing mail server never fails a job: the receivers log the exception and record it on the
row (``notify_error``; ``notified_at`` stays empty), and :func:`notify_retry_pending`, run by
the dispatcher every minute, sends it again for a day. A backup row carries one notification:
a failed drill's email replaces the backup's own in these two fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop
from django_tenants.utils import get_public_schema_name, schema_context

from backups import humanize, signals
from backups.conf import conf
from backups.exceptions import render
from backups.models import Backup, BackupPolicy, Job, JobStatus, Restore
from backups.models.backup import NOTIFY_PENDING
from clinics.models import Clinic

logger = logging.getLogger(__name__)

RETRY_WINDOW = timedelta(hours=24)  # how long a notification the mail server refused is tried again
SMTP_TIMEOUT = 30  # seconds, when EMAIL_TIMEOUT is not set: a silent server must not hold a worker forever
# The console pages an email links to, as paths on the clinic's host. Written out rather than
# reversed: reversing loads the clinic's admin URLconf, hence the whole admin, and a backup or
# restore run from the command line sends its email without serving any page (test_notify checks
# each path against the admin's own URL of that name).
CONSOLE_PATHS = {
    "backups_backup_changelist": "/admin/backups/backup/",
    "backups_backup_change": "/admin/backups/backup/{}/change/",
    "backups_restore_progress": "/admin/backups/restore/{}/progress/",
}
PUBLIC_URLCONF = "clinic_site.urls_public"

# Subject lines, translated when the email is rendered (in the reader's language).
SUBJECTS = {
    "backup_succeeded": gettext_noop("[%(clinic)s] Backup #%(id)s succeeded (%(size)s)"),
    "backup_failed": gettext_noop("[%(clinic)s] Backup #%(id)s failed"),
    "restore_succeeded": gettext_noop("[%(clinic)s] Restore #%(id)s succeeded"),
    "restore_failed": gettext_noop("[%(clinic)s] Restore #%(id)s failed"),
    "drill_failed": gettext_noop("[%(clinic)s] Backup #%(id)s failed its restore drill"),
    "stale": gettext_noop("[%(clinic)s] No successful backup for %(hours)s hours"),
    "summary": gettext_noop("Respaldo daily summary: %(failed)s failed, %(stale)s without recent backups"),
}
TONES = {
    "ok": {"fg": "#1a7f37", "bg": "#e8f5ec", "symbol": "✓"},
    "failed": {"fg": "#b42318", "bg": "#fdecea", "symbol": "✗"},
    "warning": {"fg": "#9a5b00", "bg": "#fff4e0", "symbol": "!"},
}


@dataclass
class Email:
    """One rendered message: its subject and both bodies."""

    subject: str
    text: str
    html: str


# --- who hears ------------------------------------------------------------------------


def unique_addresses(addresses: Iterable[str]) -> list[str]:
    """Non-empty addresses, each once (compared case-insensitively), first spelling and order kept."""
    seen: set[str] = set()
    unique = []
    for address in addresses:
        address = address.strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def restorer_emails(schema_name: str) -> list[str]:
    """Addresses of the active users of a clinic's schema who may restore its backups."""
    perm = {"codename": "restore_backup", "content_type__app_label": "backups"}
    holds = (
        Q(is_superuser=True)
        | Q(**{f"user_permissions__{key}": value for key, value in perm.items()})
        | Q(**{f"groups__permissions__{key}": value for key, value in perm.items()})
    )
    with schema_context(schema_name):
        users = get_user_model().objects.filter(holds, is_active=True).exclude(email="").distinct()
        return list(users.order_by("pk").values_list("email", flat=True))


def clinic_recipients(clinic: Clinic) -> list[str]:
    """The policy's addresses, then the clinic's users who hold the restore permission (for a
    clone, none of its source clinic's addresses)."""
    policy = BackupPolicy.objects.filter(clinic=clinic).first()
    configured = (policy.notify_emails if policy else "").replace(";", ",").split(",")
    return without_source_addresses(clinic, unique_addresses([*configured, *restorer_emails(clinic.schema_name)]))


def source_addresses(clinic: Clinic) -> set[str]:
    """Lower-cased addresses of the clinics ``clinic`` was cloned from: their recipients and contact."""
    from backups.models import CloneJob

    found: set[str] = set()
    for job in CloneJob.objects.filter(clinic=clinic).select_related("source_backup__clinic"):
        source = job.source_backup.clinic
        if source.pk == clinic.pk:
            continue
        addresses = [*clinic_recipients(source), source.contact_email or ""]
        found |= {address.strip().lower() for address in addresses if address.strip()}
    return found


def without_source_addresses(clinic: Clinic, addresses: list[str]) -> list[str]:
    """``addresses`` but those of the clinic(s) ``clinic`` was cloned from."""
    excluded = source_addresses(clinic)
    return [address for address in addresses if address.lower() not in excluded]


def requester_emails(clinic: Clinic, username: str) -> list[str]:
    """The address of the clinic's active user ``username`` (none when unknown or without one)."""
    if not username:
        return []
    with schema_context(clinic.schema_name):
        user = get_user_model().objects.filter(username=username, is_active=True).exclude(email="").first()
        found = [user.email] if user is not None else []
    return without_source_addresses(clinic, unique_addresses(found))


def job_recipients(job: Job, event: str) -> list[str]:
    """Who hears about ``event`` of ``job``: a manual backup's success, its asker; a daily backup's
    success, the clinic unless its policy turned that off; anything else, the clinic."""
    if isinstance(job, Backup) and event == "backup_succeeded":
        if job.kind == Backup.Kind.MANUAL:
            return requester_emails(job.clinic, job.requested_by)
        policy = BackupPolicy.objects.filter(clinic_id=job.clinic_id).first()
        if job.kind == Backup.Kind.SCHEDULED and policy is not None and not policy.notify_daily_success:
            return []
    return clinic_recipients(job.clinic)


def platform_admin_emails() -> list[str]:
    """Addresses of the platform's (public schema's) active superusers."""
    with schema_context(get_public_schema_name()):
        users = get_user_model().objects.filter(is_superuser=True, is_active=True).exclude(email="")
        return unique_addresses(users.order_by("pk").values_list("email", flat=True))


# --- what they read ---------------------------------------------------------------------


def clinic_language(clinic: Clinic) -> str:
    """The language of the clinic's emails (``Clinic.language``, else the deployment's)."""
    return getattr(clinic, "language", None) or settings.LANGUAGE_CODE


def render_email(template: str, subject: str, context: dict[str, Any]) -> Email:
    """Both bodies of ``backups/email/<template>``, in the active language and time zone."""
    context = {**context, "subject": subject, "language": translation.get_language()}
    context.setdefault("tone", TONES["failed"])
    return Email(
        subject=subject,
        text=render_to_string(f"backups/email/{template}.txt", context),
        html=render_to_string(f"backups/email/{template}.html", context),
    )


def console_link(clinic: Clinic, view: str, *args: Any) -> str:
    """Absolute link to a page of the clinic's console (the page the admin names ``admin:<view>``)."""
    return conf.console_url(clinic, CONSOLE_PATHS[view].format(*args))


def local(moment: datetime | None) -> datetime | None:
    """``moment`` in the active time zone (templates format it)."""
    return timezone.localtime(moment) if moment else None


def job_event(job: Job) -> str:
    """Which email a finished job's row calls for (a failed drill outranks the backup's own)."""
    if isinstance(job, Restore):
        return f"restore_{job.status}"
    if job.drill_status == "failed":
        return "drill_failed"
    return f"backup_{job.status}"


def drill_reason(backup: Backup) -> str:
    """Why the backup's drill failed, in the active language."""
    record = backup.drill_error or {}
    message_id = record.get("message_id") or record.get("code")
    if message_id:
        return render(message_id, record.get("params"))
    return gettext("The backup could not be restored in the test.")


def backup_facts(backup: Backup) -> list[tuple[str, Any]]:
    """Label and value of what a backup's email says about it."""
    facts = [
        (gettext("Clinic"), backup.clinic.name),
        (gettext("Backup"), f"#{backup.pk}"),
        (gettext("Kind"), backup.get_kind_display()),
        (gettext("Format"), backup.get_payload_format_display()),
        (gettext("Size"), humanize.human_bytes(backup.size, plain_space=True)),
        (gettext("Duration"), humanize.human_duration(backup.duration)),
        (gettext("Requested at"), local(backup.requested_at)),
        (gettext("Finished at"), local(backup.finished_at)),
    ]
    if backup.drilled_at:
        facts.append((gettext("Restore drill at"), local(backup.drilled_at)))
    if backup.requested_by:
        facts.append((gettext("Requested by"), humanize.human_actor(backup.requested_by)))
    if backup.note:
        facts.append((gettext("Note"), humanize.human_note(backup.note)))
    return facts


def restore_facts(restore: Restore) -> list[tuple[str, Any]]:
    """Label and value of what a restore's email says about it."""
    source = restore.backup
    facts = [
        (gettext("Clinic"), restore.clinic.name),
        (gettext("Restore"), f"#{restore.pk}"),
        (gettext("From backup"), f"#{source.pk} · {source.get_kind_display()}"),
        (gettext("Backup taken at"), local(source.succeeded_at or source.requested_at)),
        (gettext("Format"), source.get_payload_format_display()),
        (gettext("Size"), humanize.human_bytes(source.size, plain_space=True)),
        (gettext("Duration"), humanize.human_duration(restore.duration)),
        (gettext("Finished at"), local(restore.finished_at)),
    ]
    if restore.safety_backup_id:
        facts.append((gettext("Safety backup (the way back)"), f"#{restore.safety_backup_id}"))
    if restore.requested_by:
        facts.append((gettext("Requested by"), restore.requested_by))
    return facts


def job_context(job: Job, event: str) -> dict[str, Any]:
    """Everything a job's templates show (call inside the clinic's language and time zone)."""
    clinic = job.clinic
    if isinstance(job, Restore):
        facts, link = restore_facts(job), console_link(clinic, "backups_restore_progress", job.pk)
        size = humanize.human_bytes(job.backup.size, plain_space=True)
    else:
        facts, link = backup_facts(job), console_link(clinic, "backups_backup_change", job.pk)
        size = humanize.human_bytes(job.size, plain_space=True)
    failed = event.endswith("_failed")
    reason = (drill_reason(job) if event == "drill_failed" else job.error_message()) if failed else ""
    return {
        "clinic_name": clinic.name,
        "job": job,
        "facts": facts,
        "size": size,
        "link": link,
        "list_link": console_link(clinic, "backups_backup_changelist"),
        "reason": reason,
        "tone": TONES["failed" if failed else "ok"],
    }


def job_email(job: Job, event: str) -> Email:
    """The email about a finished job, in its clinic's language and time zone."""
    clinic = job.clinic
    with translation.override(clinic_language(clinic)), timezone.override(clinic.time_zone):
        context = job_context(job, event)
        subject = gettext(SUBJECTS[event]) % {"clinic": clinic.name, "id": job.pk, "size": context["size"]}
        return render_email(event, subject, context)


# --- sending ------------------------------------------------------------------------------


def send(recipients: list[str], email: Email) -> None:
    """Send one message with both parts; raises whatever the mail backend raises."""
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or SMTP_TIMEOUT
    message = EmailMultiAlternatives(
        subject=email.subject, body=email.text, to=recipients, connection=get_connection(timeout=timeout)
    )
    message.attach_alternative(email.html, "text/html")
    message.send()


def notify_job(job: Job, event: str | None = None) -> bool:
    """Email the clinic about a finished job and record the outcome on its row; never raises.

    Returns True when a message went out. A failure is logged and kept in ``notify_error``
    (``notified_at`` emptied) for :func:`notify_retry_pending`.
    """
    model = type(job)
    try:
        event = event or job_event(job)
        recipients = job_recipients(job, event)
        if not recipients:
            return False
        send(recipients, job_email(job, event))
    except Exception as exc:
        logger.exception("Could not email about %s #%s of %s", model.__name__, job.pk, job.clinic_id)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        model.objects.filter(pk=job.pk).update(notified_at=None, notify_error=error)
        job.notified_at, job.notify_error = None, error
        return False
    now = timezone.now()
    model.objects.filter(pk=job.pk).update(notified_at=now, notify_error="")
    job.notified_at, job.notify_error = now, ""
    return True


# --- receivers (connected in BackupsConfig.ready) -----------------------------------------


def on_backup_finished(sender: Any, backup: Backup, **kwargs: Any) -> None:
    """A backup succeeded or failed. Safety backups say nothing: their restore's email tells."""
    if backup.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) and backup.kind != Backup.Kind.PRE_RESTORE:
        notify_job(backup, f"backup_{backup.status}")


def on_restore_finished(sender: Any, restore: Restore, **kwargs: Any) -> None:
    """A restore succeeded or failed."""
    if restore.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        notify_job(restore, f"restore_{restore.status}")


def on_drill_finished(sender: Any, backup: Backup, **kwargs: Any) -> None:
    """A drill ended: only a failure is news."""
    if backup.drill_status == "failed":
        notify_job(backup, "drill_failed")


def connect_receivers() -> None:
    """Listen to the operations' signals (idempotent)."""
    signals.backup_finished.connect(on_backup_finished, dispatch_uid="backups.notify.backup")
    signals.restore_finished.connect(on_restore_finished, dispatch_uid="backups.notify.restore")
    signals.drill_finished.connect(on_drill_finished, dispatch_uid="backups.notify.drill")


def notify_retry_pending(now: datetime) -> int:
    """Send again what the mail server refused, for jobs finished in the last 24 hours.

    Each row is locked while it is sent (``skip_locked``: two dispatchers never send one
    twice). Stops at the first failure: the server is most likely still down, and each try
    may wait for its timeout. Returns how many went out.
    """
    since = now - RETRY_WINDOW
    finished = Q(succeeded_at__gte=since) | Q(failed_at__gte=since)
    pending = NOTIFY_PENDING
    sent = 0
    for model, recent in ((Backup, finished | Q(drilled_at__gte=since)), (Restore, finished)):
        for pk in model.objects.filter(pending & recent).order_by("pk").values_list("pk", flat=True):
            with transaction.atomic():
                job = model.objects.select_for_update(skip_locked=True).filter(pending, pk=pk).first()
                if job is None:
                    continue
                if not notify_job(job):
                    return sent
            sent += 1
    return sent
