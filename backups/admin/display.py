"""How catalog rows read in the console: status badges, sizes, durations, phases (no logic)."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
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


# --- the audit trail's details, as "label: value" pairs in the reader's language -------------

DETAIL_LABELS = {
    "filename": gettext_lazy("file"),
    "bytes": gettext_lazy("size"),
    "code": gettext_lazy("reason code"),
    "reason": gettext_lazy("reason"),
    "reasons": gettext_lazy("reasons"),
    "same_file": gettext_lazy("same file as a stored backup (not kept twice)"),
    "token": gettext_lazy("API token"),
    "changed": gettext_lazy("changed"),
    "format": gettext_lazy("format"),
    "kind": gettext_lazy("kind"),
    "via": gettext_lazy("via"),
    "name": gettext_lazy("name"),
    "url": gettext_lazy("address"),
    "endpoint": gettext_lazy("endpoint"),
    "user": gettext_lazy("user"),
    "read_only": gettext_lazy("read only"),
    "safety_backup": gettext_lazy("safety backup"),
    "source_backup_id": gettext_lazy("from backup"),
    "clone_id": gettext_lazy("clone"),
    "patient": gettext_lazy("patient"),
    "rows": gettext_lazy("rows"),
    "selective": gettext_lazy("one patient"),
    "storage_name": gettext_lazy("stored as"),
    "object_deleted": gettext_lazy("file deleted"),
    "row_deleted": gettext_lazy("row deleted"),
    "keep_days": gettext_lazy("kept (days)"),
    "keys": gettext_lazy("keys"),
    "former_clinic": gettext_lazy("former clinic"),
    "former_clinic_id": gettext_lazy("former clinic id"),
    "error_code": gettext_lazy("error code"),
    "failed_at": gettext_lazy("failed at"),
    "held_since": gettext_lazy("held since"),
    "held_by": gettext_lazy("held by"),
    "hold_reason": gettext_lazy("reason for the hold"),
}


def _detail_value(key: str, value) -> str:
    from backups.exceptions import render

    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if value is None or value == "" or value == []:
        return "—"
    if key == "bytes" and isinstance(value, int):
        return human_bytes(value)
    if isinstance(value, dict) and "message_id" in value:  # a reason kept as a message: in the reader's language
        return render(value["message_id"], value.get("params"))
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{name}: {item}" for name, item in value.items())
    return str(value)


def audit_details(details: dict) -> str:
    """An audit entry's details as "label: value" pairs, in the reader's language (HTML, one per line).

    A refusal's reason kept as a message (``reason``) is shown in the reader's language, and then
    its English text (``message``, kept for the record) is not repeated.
    """
    if not isinstance(details, dict) or not details:
        return "—"
    pairs = []
    for key, value in details.items():
        if key == "message" and isinstance(details.get("reason"), dict):
            continue
        label = DETAIL_LABELS.get(key, key.replace("_", " "))
        pairs.append((str(label), _detail_value(key, value)))
    return format_html_join("<br>", '<span class="respaldo-detail-label">{}:</span> {}', pairs)
