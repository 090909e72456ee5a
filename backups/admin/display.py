"""How catalog rows read in the console: status badges, sizes, durations, phases (no logic)."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.humanize import human_bytes, human_duration  # noqa: F401 - the console's names for them
from backups.models import Backup, Job, JobStatus
from backups.services.restore import PHASE_LABELS

# Phases a job goes through, in order, as people read them (the row keeps the key).
BACKUP_PHASES = {
    "starting": gettext_lazy("starting"),
    "snapshot": gettext_lazy("taking a consistent snapshot"),
    "dumping": gettext_lazy("dumping, compressing and encrypting"),
    "storing": gettext_lazy("storing"),
}
RESTORE_PHASES = PHASE_LABELS  # the restore service's phases, in order
# A symbol with every status, so that no status is told by colour alone.
_SYMBOLS = {"pending": "…", "running": "⟳", "succeeded": "✓", "failed": "✗", "expired": "⌛"}


def status_key(job: Job) -> str:
    """The job's status, with "expired" for a backup whose stored file retention removed."""
    if isinstance(job, Backup) and job.expired_at is not None:
        return "expired"
    return job.status


def status_label(job: Job) -> str:
    """The status in words, with the phase while the job runs."""
    key = status_key(job)
    if key == "expired":
        return str(_("Expired"))
    label = str(job.get_status_display())
    if job.status == JobStatus.RUNNING and job.progress_phase:
        label = f"{label}: {phase_label(job)}"
    return label


def phase_label(job: Job) -> str:
    """The job's current phase, translated."""
    phases = BACKUP_PHASES if isinstance(job, Backup) else RESTORE_PHASES
    return str(phases.get(job.progress_phase, job.progress_phase))


def status_badge(job: Job, *, status_url: str = "") -> str:
    """A badge with symbol, text and colour; ``status_url`` lets the page's script keep it current."""
    key = status_key(job)
    return format_html(
        '<span class="respaldo-badge respaldo-{}" data-job="{}" data-status-url="{}" data-status="{}">'
        '<span aria-hidden="true">{}</span> <span class="respaldo-badge-text">{}</span></span>',
        key,
        job.pk,
        status_url if job.status in (JobStatus.PENDING, JobStatus.RUNNING) else "",
        key,
        _SYMBOLS.get(key, ""),
        status_label(job),
    )
