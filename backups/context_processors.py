"""Template context for the "restore in progress" banner of the admin pages."""

from __future__ import annotations

from django.http import HttpRequest


def restore_in_progress(request: HttpRequest) -> dict[str, object]:
    """``restore_in_progress``: the clinic's running Restore (set by the middleware) or None;
    ``restore_phase``: its phase in the active language."""
    restore = getattr(request, "restore_in_progress", None)
    if restore is None:
        return {"restore_in_progress": None, "restore_phase": ""}
    from backups.services.restore import phase_label

    return {"restore_in_progress": restore, "restore_phase": phase_label(restore.progress_phase)}
