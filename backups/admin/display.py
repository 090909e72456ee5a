"""How catalog rows read in the console: status badges, sizes, durations, phases (no logic)."""

from __future__ import annotations

import copy
import dataclasses

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from backups.formats import format_for
from backups.humanize import human_bytes, human_duration  # noqa: F401 - the console's names for them
from backups.models import BACKUP_STATUS_LABELS, Backup, Job, JobStatus, Restore
from backups.web.labels import BACKUP_PHASES, RESTORE_PHASES, phase_label, status_key, status_label  # noqa: F401

# A symbol with every status, so that no status is told by colour alone.
_SYMBOLS = {"pending": "…", "running": "⟳", "succeeded": "✓", "failed": "✗", "expired": "⌛"}


def status_badge(job: Job, *, status_url: str = "", live: bool = False) -> str:
    """A badge with symbol, text and colour; ``status_url`` lets the page's script keep it current.

    ``live``: a polite live region, so that a screen reader hears the script's changes (the list).
    The full words are also the badge's title: a list draws badges at one width and may cut them.
    """
    key = status_key(job)
    label = status_label(job)
    return format_html(
        '<span class="respaldo-badge respaldo-{}" data-job="{}" data-status-url="{}" data-status="{}" title="{}"{}>'
        '<span aria-hidden="true">{}</span> <span class="respaldo-badge-text">{}</span></span>',
        key,
        job.pk,
        status_url if job.status in (JobStatus.PENDING, JobStatus.RUNNING) else "",
        key,
        label,
        mark_safe(' aria-live="polite" aria-atomic="true"') if live else "",
        _SYMBOLS.get(key, ""),
        label,
    )


@dataclasses.dataclass(frozen=True)
class PhaseStep:
    """One box of a restore's phase strip: ``state`` is done, current, skipped (not needed) or "" (not yet)."""

    key: str
    label: str
    state: str

    @property
    def mark(self) -> str:
        """The symbol before the label (so that no state is told by the border alone)."""
        return {"done": "✓", "current": "▶"}.get(self.state, "")

    @property
    def state_text(self) -> str:
        """The state in words, for screen readers."""
        words = {"done": _("done"), "current": _("now"), "skipped": _("not needed")}
        return f" ({words[self.state]})" if self.state in words else ""


def restore_phase_strip(restore: Restore) -> list[PhaseStep]:
    """The phases of ``restore``, each done, current, skipped or still to come.

    A running restore is in its ``progress_phase``: the phases before it are done. A finished
    one has none current (its row keeps no phase): a succeeded restore did every phase it
    needed (a json restore loads in place, without the switch; only an older backup is
    migrated); of a failed one the strip claims nothing, its reason says what happened.
    """
    keys = list(RESTORE_PHASES)
    if restore.status == JobStatus.SUCCEEDED:
        skipped = set()
        if format_for(restore.backup.payload_format).in_place:  # loaded in place: nothing to switch
            skipped.add(Restore.Phase.SWAPPING)
        if not restore.migrated:
            skipped.add(Restore.Phase.MIGRATING)
        states = {key: "skipped" if key in skipped else "done" for key in keys}
    elif restore.status == JobStatus.RUNNING and restore.progress_phase in keys:
        current = keys.index(restore.progress_phase)
        states = {key: "done" if i < current else "current" if i == current else "" for i, key in enumerate(keys)}
    else:
        states = dict.fromkeys(keys, "")
    return [PhaseStep(key, str(RESTORE_PHASES[key]), states[key]) for key in keys]


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


def backup_title(backup: Backup) -> str:
    """A backup as a person names it: "Backup of 7 Dec 2026, 02:21 — manual", in the active (clinic's)
    time zone and the reader's language."""
    from django.utils import formats, timezone

    when = formats.date_format(timezone.localtime(backup.requested_at), "j M Y, H:i")
    label = str(backup.get_kind_display())
    return _("Backup of %(when)s — %(kind)s") % {"when": when, "kind": label[:1].lower() + label[1:]}


def table_rows(tables: dict[str, int]) -> list[tuple[str, int]]:
    """A manifest's rows per table, each table by its model's plural name ("Patients"), sorted by it;
    a table no model names (an old app's) keeps its own name."""
    from django.apps import apps

    names = {
        model._meta.db_table: str(model._meta.verbose_name_plural)
        for model in apps.get_models(include_auto_created=True)
    }
    rows = [
        (names[table][:1].upper() + names[table][1:] if table in names else table, count)
        for table, count in tables.items()
    ]
    return sorted(rows, key=lambda row: row[0].lower())


class BackupStatusFilter(admin.ChoicesFieldListFilter):
    """The status filter of a backups list, its choices said of a backup (``BACKUP_STATUS_LABELS``)."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        field = copy.copy(field)
        field.choices = list(BACKUP_STATUS_LABELS.items())
        super().__init__(field, request, params, model, model_admin, field_path)
