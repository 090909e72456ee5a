"""The JSON API's own refusals (``backups/api/``), by message id; rendered in the request's language."""

from django.utils.translation import gettext_noop as _

API_MESSAGES: dict[str, str] = {
    "api_not_authenticated": _(
        "Log in to the clinic's console, or send an API token as 'Authorization: Bearer <token>'."
    ),
    "api_token_invalid": _("This API token is not valid for this clinic."),
    "api_token_revoked": _("This API token (%(token)s…) has been revoked."),
    "api_token_user_inactive": _(
        "The user of this API token (%(token)s…) can no longer use the console: the token does not work."
    ),
    "api_rate_limited": _(
        "Too many requests from this user: at most %(limit)s a minute, whatever the token or session. "
        "Try again in %(retry_after)s seconds."
    ),
    "api_rate_limited_clinic": _(
        "Too many requests from this clinic: at most %(limit)s a minute for all its users together. "
        "Try again in %(retry_after)s seconds."
    ),
    "api_link_used": _("This download link was already used: ask for a new one."),
    "api_link_revoked": _("The API token that made this download link was revoked: the link no longer works."),
    "api_csrf_failed": _(
        "A request made with the console's session needs its CSRF token (the X-CSRFToken header): %(reason)s"
    ),
    "api_forbidden": _("You do not have permission to %(action)s in this clinic."),
    "api_read_only": _("This API token is read-only: it cannot %(action)s."),
    "api_not_found": _("Not found."),
    "api_backup_not_found": _("This clinic has no backup #%(backup)s."),
    "api_restore_not_found": _("This clinic has no restore #%(restore)s."),
    "api_method_not_allowed": _("Method %(method)s is not allowed here (allowed: %(allowed)s)."),
    "api_invalid": _("The request is not valid: see the errors of each field."),
    "api_bad_json": _("The request body is not a JSON object."),
    "api_bad_parameter": _("The parameter %(name)s is not valid: %(reason)s"),
    "api_link_expired": _("This download link has expired or is not valid: ask for a new one."),
    "api_no_file": _("Send the backup file in a multipart field named 'file'."),
    "restore_in_progress": _("The clinic is being restored (restore #%(restore)s); try again in a moment."),
    "restore_in_progress_writes": _(
        "The clinic is being restored (restore #%(restore)s): changes are paused until it ends."
    ),
}

# Words that fill %(action)s above.
API_ACTIONS: dict[str, str] = {
    "view_backup": _("see backups"),
    "view_restore": _("see restores"),
    "add_backup": _("back up"),
    "download_backup": _("download backups"),
    "restore_backup": _("restore backups"),
    "upload_backup": _("upload backup files"),
}
