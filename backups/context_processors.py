"""Template context for the "restore in progress" banner of the admin pages."""

from __future__ import annotations

from django.http import HttpRequest


def restore_in_progress(request: HttpRequest) -> dict[str, object]:
    """``restore_in_progress``: the clinic's running Restore (set by the middleware) or None;
    ``restore_phase``: its phase in the active language; ``restore_followable``: the reader may open
    the restore's page (the banner links to it only then: reception would get a 403)."""
    restore = getattr(request, "restore_in_progress", None)
    if restore is None:
        return {"restore_in_progress": None, "restore_phase": "", "restore_followable": False}
    user = getattr(request, "user", None)
    followable = bool(user is not None and user.is_active and user.is_staff and user.has_perm("backups.view_restore"))
    return {
        "restore_in_progress": restore,
        "restore_phase": restore.phase_label(),
        "restore_followable": followable,
    }
