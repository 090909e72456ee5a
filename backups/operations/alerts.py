"""Silence and the platform's summary: a missed-backup alert once per episode, and a daily email
to the platform's administrators of what failed and which clinics have no recent backup.

Both are run by the dispatcher every minute and send through ``notify`` (same recipients rules,
layout and languages).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext
from django_tenants.utils import get_public_schema_name

from backups.conf import conf
from backups.models import Backup, BackupPolicy, Job, JobStatus, Restore
from backups.operations.notify import (
    PUBLIC_URLCONF,
    SUBJECTS,
    TONES,
    Email,
    clinic_language,
    clinic_recipients,
    console_link,
    drill_reason,
    job_event,
    local,
    platform_admin_emails,
    render_email,
    send,
)
from backups.selectors.platform import last_success_of, stale_limit
from clinics.models import Clinic

logger = logging.getLogger(__name__)


# --- missed backups ---------------------------------------------------------------------


@dataclass
class StaleClinic:
    """A clinic past its staleness threshold: its policy and its newest successful backup's time."""

    clinic: Clinic
    policy: BackupPolicy
    last_success: datetime | None = None

    @property
    def hours(self) -> int:
        """The clinic's staleness threshold."""
        return self.policy.stale_after_hours


def _policies(now: datetime) -> QuerySet[BackupPolicy]:
    """Every enabled clinic policy, with ``last_success`` (its clinic's newest usable backup's end:
    succeeded, passed its drill if drilled, made here, as an uploaded file proves nothing about
    today's data) and ``stale`` (past its threshold: ``stale_limit``, the platform pages' rule).
    One query, one index probe per clinic (``last_success_of``), not an aggregate of the catalog."""
    policies = BackupPolicy.objects.filter(enabled=True, clinic__isnull=False).select_related("clinic")
    policies = policies.exclude(clinic__schema_name=get_public_schema_name()).order_by("clinic__name")
    policies = policies.annotate(
        last_success=last_success_of("clinic_id"),
        reference=Coalesce("last_success", "clinic__created_at"),
        limit=stale_limit(now),
    )
    return policies.annotate(stale=ExpressionWrapper(Q(reference__lt=F("limit")), output_field=BooleanField()))


def stale_clinics(now: datetime) -> list[StaleClinic]:
    """Clinics with daily backups on and no usable backup within their threshold, by name."""
    return [StaleClinic(policy.clinic, policy, policy.last_success) for policy in _policies(now).filter(stale=True)]


def stale_email(stale: StaleClinic) -> Email:
    """The missed-backup alert, in the clinic's language and time zone."""
    clinic = stale.clinic
    with translation.override(clinic_language(clinic)), timezone.override(clinic.time_zone):
        context = {
            "clinic_name": clinic.name,
            "stale": stale,
            "last_success": local(stale.last_success),
            "run_at": stale.policy.run_at,
            "link": console_link(clinic, "backups_backup_changelist"),
            "tone": TONES["warning"],
        }
        subject = gettext(SUBJECTS["stale"]) % {"clinic": clinic.name, "hours": stale.hours}
        return render_email("stale", subject, context)


def alert_once(stale: StaleClinic, now: datetime) -> bool:
    """Send the episode's alert unless it went out already (the policy row is locked meanwhile)."""
    with transaction.atomic():
        policy = BackupPolicy.objects.select_for_update(skip_locked=True).filter(pk=stale.policy.pk).first()
        if policy is None or policy.stale_alert_sent_at is not None:
            return False
        recipients = clinic_recipients(stale.clinic)
        if not recipients:
            return False
        try:
            send(recipients, stale_email(stale))
        except Exception:
            logger.exception("Could not send the missed-backup alert of %s", stale.clinic.schema_name)
            return False  # not marked: the next run tries again
        BackupPolicy.objects.filter(pk=policy.pk).update(stale_alert_sent_at=now)
        return True


def check_stale(now: datetime) -> int:
    """Alert each clinic once per episode of missed backups; returns how many alerts went out.

    An episode ends when a usable backup newer than its alert exists: the mark is cleared, so
    the next silence alerts again.
    """
    sent = 0
    recovered = Q(stale_alert_sent_at__isnull=False, last_success__gt=F("stale_alert_sent_at"))
    for policy in _policies(now).filter(Q(stale=True) | recovered):  # only those with something to do
        last, alerted = policy.last_success, policy.stale_alert_sent_at
        if alerted is not None and last is not None and last > alerted:
            BackupPolicy.objects.filter(pk=policy.pk, stale_alert_sent_at=alerted).update(stale_alert_sent_at=None)
            alerted = None
        if alerted is None and policy.stale:
            sent += alert_once(StaleClinic(policy.clinic, policy, last), now)
    return sent


# --- the platform's daily summary ---------------------------------------------------------


SUMMARY_ROWS = 50  # a day's summary lists this many failures and stale clinics; the console has the rest


def failed_jobs(since: datetime, limit: int = SUMMARY_ROWS) -> tuple[list[Job], int]:
    """Backups (failed, or failed their drill) and restores that failed since ``since``: the first
    ``limit`` by clinic name (backups first), and how many there are in all."""
    backups = Backup.objects.filter(
        Q(status=JobStatus.FAILED, failed_at__gte=since) | Q(drill_status="failed", drilled_at__gte=since)
    )
    restores = Restore.objects.filter(status=JobStatus.FAILED, failed_at__gte=since)
    shown: list[Job] = list(backups.select_related("clinic").order_by("clinic__name", "pk")[:limit])
    shown += restores.select_related("clinic", "backup").order_by("clinic__name", "pk")[: limit - len(shown)]
    return shown, backups.count() + restores.count()


def summary_rows(jobs: Iterable[Job]) -> list[dict[str, Any]]:
    """One line per failed job: clinic, what, when, why, link (in the active language)."""
    rows = []
    for job in jobs:
        event = job_event(job)
        if isinstance(job, Restore):
            what, link = gettext("Restore #%(id)s") % {"id": job.pk}, ("backups_restore_progress", job.pk)
        else:
            what, link = gettext("Backup #%(id)s") % {"id": job.pk}, ("backups_backup_change", job.pk)
        if event == "drill_failed":
            what, reason, when = what + " · " + gettext("restore drill"), drill_reason(job), job.drilled_at
        else:
            reason, when = job.error_message(), job.failed_at
        rows.append(
            {"clinic": job.clinic.name, "what": what, "when": local(when), "reason": reason,
             "link": console_link(job.clinic, *link)}
        )  # fmt: skip
    return rows


def summary_email(now: datetime) -> Email:
    """The platform's summary of the last 24 hours, in the deployment's language and time zone."""
    jobs, failed_count = failed_jobs(now - timedelta(hours=24), SUMMARY_ROWS)
    all_stale = stale_clinics(now)
    with translation.override(settings.LANGUAGE_CODE), timezone.override(settings.TIME_ZONE):
        stale = [
            {"clinic": s.clinic.name, "last": local(s.last_success), "hours": s.hours,
             "link": console_link(s.clinic, "backups_backup_changelist")}
            for s in all_stale[:SUMMARY_ROWS]
        ]  # fmt: skip
        failed = summary_rows(jobs)
        public = Clinic.objects.filter(schema_name=get_public_schema_name()).first()
        context = {
            "clinic_name": gettext("Platform"),
            "failed": failed,
            "failed_more": failed_count - len(failed),
            "stale": stale,
            "stale_more": len(all_stale) - len(stale),
            "day": local(now),
            "link": conf.console_url(public, reverse("admin:index", urlconf=PUBLIC_URLCONF)) if public else "",
            "tone": TONES["failed" if failed else "warning" if stale else "ok"],
        }
        subject = gettext(SUBJECTS["summary"]) % {"failed": failed_count, "stale": len(all_stale)}
        return render_email("summary", subject, context)


def daily_summary(now: datetime) -> bool:
    """Send the platform admins their summary once per local day (``TIME_ZONE``); True if sent.

    Sent every day, also when nothing failed: its silence would otherwise be the only sign
    that mail or the dispatcher broke. A send that fails is logged and tried at the next run.
    """
    # The defaults policy row's ``stale_alert_sent_at`` (never used by the defaults themselves:
    # they are no clinic) keeps when the platform's summary last went out.
    defaults, _ = BackupPolicy.objects.get_or_create(clinic=None)
    today = timezone.localdate(now)
    with transaction.atomic():
        row = BackupPolicy.objects.select_for_update(skip_locked=True).filter(pk=defaults.pk).first()
        last = row.stale_alert_sent_at if row else None
        if row is None or (last is not None and timezone.localdate(last) >= today):
            return False
        recipients = platform_admin_emails()
        if not recipients:
            return False
        try:
            send(recipients, summary_email(now))
        except Exception:
            logger.exception("Could not send the platform's daily summary")
            return False
        BackupPolicy.objects.filter(pk=row.pk).update(stale_alert_sent_at=now)
        return True
