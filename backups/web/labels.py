"""A job's status and phase in words, as the console and the API both say them."""

from __future__ import annotations

from django.utils.translation import pgettext

from backups.models import Backup, Job, JobStatus, Restore

# Phases a job goes through, in order, as people read them (the row keeps the key).
BACKUP_PHASES = dict(Backup.Phase.choices)  # a backup's phases, in order
RESTORE_PHASES = dict(Restore.Phase.choices)  # a restore's phases, in order


def status_key(job: Job) -> str:
    """The job's status, with "expired" for a backup whose stored file retention removed."""
    if isinstance(job, Backup) and job.expired_at is not None:
        return "expired"
    return job.status


def status_label(job: Job) -> str:
    """The status in words, with the phase while the job runs."""
    key = status_key(job)
    if key == "expired":
        return str(pgettext("backup status", "Expired"))
    label = str(job.get_status_display())
    if job.status == JobStatus.RUNNING and job.progress_phase:
        label = f"{label}: {phase_label(job)}"
    return label


def phase_label(job: Job) -> str:
    """The job's current phase, translated (its model's ``Phase`` label)."""
    return job.phase_label()
