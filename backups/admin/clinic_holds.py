"""Legal hold on a backup's page: keep it (with a reason) or release it (with a reason).

POST only, with the ``hold_backup`` permission, on this clinic's backups only; the service
(``backups.services.legal_hold``) refuses what cannot be held and audits both."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _

from backups.exceptions import RespaldoError
from backups.models import Backup
from backups.services.legal_hold import hold_backup, release_backup
from backups.web.http import client_address


def hold_view(model_admin, *, release: bool) -> Callable[..., HttpResponse]:
    """The view to register under ``<backup id>/hold/`` (or ``/release/`` with ``release``)."""

    def view(request: HttpRequest, backup_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("backups.hold_backup"):
            raise PermissionDenied
        backup = model_admin.get_queryset(request).filter(pk=backup_id).first()
        if backup is None:
            raise Http404
        change = reverse(f"{model_admin.admin_site.name}:backups_backup_change", args=[backup.pk])
        service = release_backup if release else hold_backup
        try:
            service(
                backup,
                actor=request.user.get_username(),
                reason=request.POST.get("reason", ""),
                address=client_address(request),
            )
        except RespaldoError as error:
            messages.error(request, str(error))
        else:
            done = _("The legal hold was released.") if release else _("This backup is now kept on legal hold.")
            messages.success(request, done)
        return HttpResponseRedirect(change)

    return view


def hold_text(backup: Backup) -> str:
    """ "Kept since …, by …: reason" for a held backup, "—" otherwise."""
    if backup.held_at is None:
        return "—"
    since = timezone.localtime(backup.held_at).strftime("%Y-%m-%d")
    return format_html(
        '<span class="respaldo-held">⚑ {}</span>',
        _("Kept since %(since)s, by %(by)s: %(reason)s")
        % {"since": since, "by": backup.held_by or "—", "reason": backup.hold_reason},
    )
