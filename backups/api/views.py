"""The API's views: each route one method table (``access.endpoint``) over the same services as the console.

Every object comes through a queryset of ``request.tenant``'s own rows, so another clinic's
id is a 404, exactly as in the console. The dispatcher has already authenticated the request
and checked the permission of its method; a handler never looks at ``request.method``.
"""

from __future__ import annotations

import json
from datetime import datetime, time
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from backups import selectors
from backups.api.access import Method, acting_token, check_csrf, endpoint
from backups.api.errors import NO_STORE, BadParameter, api_error, error_response, field_errors
from backups.api.serialize import absolute, backup_json, preview_json, restore_json
from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.models import Backup, JobStatus
from backups.selectors.catalog import restore_list
from backups.services.backup import backup_request
from backups.services.differences import comparison_for_api, latest_comparison
from backups.services.download import BackupDownload, backup_download, open_signed_download
from backups.services.preview import restore_preview
from backups.services.restore import restore_request
from backups.services.upload import too_large_refusal, upload_accept, upload_refused
from backups.web.forms import BackupNowForm, RestoreConfirmForm
from backups.web.http import client_address
from backups.web.uploadhandlers import SizeLimitHandler

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
READ_RESTORES = ("view_restore", "restore_backup")
MIN_YEAR, MAX_YEAR = 1000, 9000  # what a date filter may name (PostgreSQL and Python both hold these)
MAX_JSON_BODY = 64 * 1024  # an action's JSON body is a few fields: anything bigger is refused unread


# --- helpers ---------------------------------------------------------------------------


def answer(body: dict[str, Any], *, status: int = 200, location: str | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status, headers=NO_STORE, json_dumps_params={"ensure_ascii": False})
    if location:
        response["Location"] = location
    return response


def request_data(request: HttpRequest) -> dict[str, Any] | None:
    """A JSON object body, or the form fields of a form-encoded one; None for a body that is neither.

    A body over :data:`MAX_JSON_BODY`, nested past Python's recursion limit, or holding a
    character PostgreSQL cannot store (NUL, a lone surrogate) is "not a JSON object" too, never a 500.
    """
    try:
        if request.content_type == "application/json":
            if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_JSON_BODY:
                return None
            data = json.loads(request.body or b"{}")
        else:
            data = request.POST.dict()
        return data if isinstance(data, dict) and _storable(data) else None
    except (ValueError, RecursionError, RequestDataTooBig):
        return None


def _storable(value: Any) -> bool:
    """Whether every string in ``value`` (keys too) is text PostgreSQL can store: no NUL, no lone surrogate."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def own_backups(request: HttpRequest) -> QuerySet[Backup]:
    return selectors.backup_list(clinic_id=request.tenant.pk)


def own_backup(request: HttpRequest, backup_id: int | str) -> Backup:
    """This clinic's backup ``backup_id``; another clinic's (or none) is a 404."""
    backup_id = int(backup_id)
    backup = own_backups(request).filter(pk=backup_id).first()
    if backup is None:
        raise RespaldoError("api_backup_not_found", backup=backup_id)
    return backup


def paginate(request: HttpRequest, queryset: QuerySet, render) -> dict[str, Any]:
    """``?page=`` (from 1) and ``?page_size=`` (at most 100) of ``queryset``, with links to the neighbours."""
    page_size = _int_param(request, "page_size", DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE)
    number = _int_param(request, "page", 1, low=1)
    paginator = Paginator(queryset, page_size)
    if number > max(paginator.num_pages, 1):
        raise BadParameter("page", f"there are {paginator.num_pages} pages")
    page = paginator.page(number)

    def link(to: int) -> str:
        query = request.GET.copy()
        query["page"] = str(to)
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return {
        "count": paginator.count,
        "page": number,
        "page_size": page_size,
        "pages": paginator.num_pages,
        "next": link(number + 1) if page.has_next() else None,
        "previous": link(number - 1) if page.has_previous() else None,
        "results": [render(item) for item in page.object_list],
    }


def _text_param(request: HttpRequest, name: str) -> str:
    """A text parameter, stripped; PostgreSQL cannot hold a NUL character, so one is refused."""
    value = request.GET.get(name, "").strip()
    if "\x00" in value:
        raise BadParameter(name, "holds a NUL character")
    return value


def _int_param(request: HttpRequest, name: str, default: int, *, low: int, high: int | None = None) -> int:
    raw = _text_param(request, name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, "not a whole number") from None
    if value < low or (high is not None and value > high):
        raise BadParameter(name, f"between {low} and {high}" if high else f"at least {low}")
    return value


def _choice_param(request: HttpRequest, name: str, choices: list[str]) -> str | None:
    value = _text_param(request, name) or None
    if value is not None and value not in choices:
        raise BadParameter(name, "one of " + ", ".join(choices))
    return value


def _moment_param(request: HttpRequest, name: str, *, end: bool = False):
    """A date (the whole day, in the clinic's time zone) or an ISO datetime, between the years 1000 and 9000."""
    raw = _text_param(request, name)
    if not raw:
        return None
    expected = "a date (YYYY-MM-DD) or an ISO 8601 date and time"
    try:  # Django's parsers raise ValueError for a well-formed impossible date ("2026-13-45")
        moment = parse_datetime(raw)
        if moment is None:
            day = parse_date(raw)
            if day is None:
                raise BadParameter(name, expected)
            moment = datetime.combine(day, time.max if end else time.min)
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise BadParameter(name, f"a year between {MIN_YEAR} and {MAX_YEAR}")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment.astimezone(timezone.get_current_timezone())  # an offset that cannot be held fails here
    except (ValueError, OverflowError):
        raise BadParameter(name, expected) from None


def filtered_backups(request: HttpRequest) -> QuerySet[Backup]:
    """The console's filters: status, kind, format, requested since/until, held, and a search of note and user."""
    backups = own_backups(request)
    status = _choice_param(request, "status", JobStatus.values)
    kind = _choice_param(request, "kind", Backup.Kind.values)
    payload_format = _choice_param(request, "format", Backup.Format.values)
    held = _choice_param(request, "held", ["true", "false"])
    since, until = _moment_param(request, "since"), _moment_param(request, "until", end=True)
    if status:
        backups = backups.filter(status=status)
    if kind:
        backups = backups.filter(kind=kind)
    if payload_format:
        backups = backups.filter(payload_format=payload_format)
    if held:
        backups = backups.filter(held_at__isnull=held == "false")
    if since:
        backups = backups.filter(requested_at__gte=since)
    if until:
        backups = backups.filter(requested_at__lte=until)
    if search := _text_param(request, "q"):
        backups = backups.filter(Q(note__icontains=search) | Q(requested_by__icontains=search))
    return backups


# --- backups ---------------------------------------------------------------------------


def list_backups(request: HttpRequest) -> HttpResponse:
    """The clinic's backups, newest first, paginated and filtered."""
    return answer(paginate(request, filtered_backups(request), lambda backup: backup_json(request, backup)))


def create_backup(request: HttpRequest) -> HttpResponse:
    """``{"format": "pg"|"json", "note": "…"}`` -> 202 with the pending backup (its worker runs it)."""
    data = request_data(request)
    if data is None:
        return api_error("api_bad_json")
    form = BackupNowForm({"payload_format": data.get("format") or Backup.Format.PG, "note": data.get("note") or ""})
    if not form.is_valid():
        return field_errors(form)
    try:
        backup = backup_request(
            clinic=request.tenant.pk,
            payload_format=form.cleaned_data["payload_format"],
            note=form.cleaned_data["note"],
            requested_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
        )
    except RespaldoError as exc:
        return error_response(exc)
    return answer(
        backup_json(request, backup, detail=True), status=202, location=absolute(request, "backup", backup.pk)
    )


def get_backup(request: HttpRequest, backup_id: int) -> HttpResponse:
    """One backup with its per-table row counts."""
    return answer(backup_json(request, own_backup(request, backup_id), detail=True))


def download_backup(request: HttpRequest, backup_id: int) -> HttpResponse:
    """The backup's bytes (local storage), or a redirect to a short-lived storage link (S3)."""
    target = own_backup(request, backup_id)
    try:
        result = backup_download(
            backup=target,
            downloaded_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
        )
    except RespaldoError as exc:
        return error_response(exc)
    if result.link:
        return HttpResponseRedirect(result.link)
    return file_response(result, sha256=target.sha256)


def make_link(request: HttpRequest, backup_id: int) -> HttpResponse:
    """A link that downloads the backup once, without credentials, within five minutes (recorded as a download now).

    It dies with the token that made it. Its signature travels in the query string, which the
    site's access logs never write (``clinic_site.log_redaction``, ``gunicorn.conf.py``).
    """
    target = own_backup(request, backup_id)
    try:
        result = backup_download(
            backup=target,
            downloaded_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
            as_link=True,
        )
    except RespaldoError as exc:
        return error_response(exc)
    url = result.link or f"{absolute(request, 'backup_file', target.pk)}?sig={result.signed}"
    body = {
        "url": url,
        "expires_at": result.expires_at.isoformat() if result.expires_at else None,
        "filename": result.filename,
        "size": result.size,
        "sha256": target.sha256,
    }
    return answer(body, status=201)


def signed_file(request: HttpRequest, backup_id: int) -> HttpResponse:
    """The bytes behind a link from ``make_link`` (local storage): the signature is the credential, used once."""
    try:
        result = open_signed_download(_text_param(request, "sig"), clinic_id=request.tenant.pk, backup_id=backup_id)
    except BadParameter:
        return api_error("api_link_expired")
    except RespaldoError as exc:
        return error_response(exc)
    return file_response(result)


def file_response(result: BackupDownload, *, sha256: str = "") -> FileResponse:
    response = FileResponse(
        result.stream, as_attachment=True, filename=result.filename, content_type="application/octet-stream"
    )
    response["Content-Length"] = str(result.size)
    response["Cache-Control"] = "no-store, private"
    if sha256:
        response["X-Respaldo-SHA256"] = sha256
    return response


def _restorable(request: HttpRequest, backup_id: int) -> Backup:
    target = own_backup(request, backup_id)
    if not target.has_stored_file:
        status = "expired" if target.expired_at else target.status
        raise RespaldoError("backup_not_restorable", backup=target.pk, status=status)
    return target


def preview_restore(request: HttpRequest, backup_id: int) -> HttpResponse:
    """What restoring this backup would change."""
    target = _restorable(request, backup_id)
    pending = comparison_for_api(target, requested_by=request.user.get_username())
    preview = restore_preview(backup=target, comparison=latest_comparison(target), pending=pending)
    return answer(preview_json(preview, schema=request.tenant.schema_name))


def start_restore(request: HttpRequest, backup_id: int) -> HttpResponse:
    """``{"confirm": "<schema>"}``: restore the clinic from this backup (202)."""
    target = _restorable(request, backup_id)
    data = request_data(request)
    if data is None:
        return api_error("api_bad_json")
    preview = restore_preview(backup=target)
    accept = data.get("accept_emptied") in (True, "true", "on", "1", 1)
    form = RestoreConfirmForm(
        {"confirm": str(data.get("confirm") or ""), "accept_emptied": accept},
        schema=request.tenant.schema_name,
        preview=preview,
    )
    if not form.is_valid():
        return field_errors(form)
    try:
        started = restore_request(
            clinic=request.tenant.pk,
            backup_id=target.pk,
            requested_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
        )
    except RespaldoError as exc:
        return error_response(exc)
    return answer(restore_json(request, started), status=202, location=absolute(request, "restore", started.pk))


def upload_backup(request: HttpRequest) -> HttpResponse:
    """Multipart ``file``: a Respaldo archive or a JSON export of this clinic becomes a backup to restore (201),
    or, when it is byte for byte a stored backup of the clinic, leads to that backup (200)."""
    limiter = SizeLimitHandler(request, conf.max_upload_bytes)
    request.upload_handlers = [limiter, TemporaryFileUploadHandler(request)]
    if request.api_token is None and (refused := check_csrf(request)) is not None:
        return refused
    uploaded = request.FILES.get("file")
    if limiter.exceeded:
        refused = too_large_refusal(limiter.limit)
        upload_refused(
            request.tenant.pk,
            refused,
            filename=limiter.file_name or "",
            size=limiter.refused_size(),
            requested_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
        )
        return error_response(refused)
    if uploaded is None:
        return api_error("api_no_file")
    try:
        accepted = upload_accept(
            clinic=request.tenant.pk,
            source=uploaded,
            filename=uploaded.name or "",
            requested_by=request.user.get_username(),
            address=client_address(request),
            token=acting_token(request),
        )
    except RespaldoError as exc:
        return error_response(exc)
    backup = accepted.backup  # 200: the catalog already had this very file (not stored twice); 201: a new backup
    return answer(
        backup_json(request, backup, detail=True),
        status=201 if accepted.created else 200,
        location=absolute(request, "backup", backup.pk),
    )


# --- restores --------------------------------------------------------------------------


def list_restores(request: HttpRequest) -> HttpResponse:
    """The clinic's restores, newest first (``?status=``)."""
    rows = restore_list(clinic_id=request.tenant.pk)
    if status := _choice_param(request, "status", JobStatus.values):
        rows = rows.filter(status=status)
    return answer(paginate(request, rows, lambda row: restore_json(request, row)))


def get_restore(request: HttpRequest, restore_id: int) -> HttpResponse:
    """One restore: its phase while it runs, its outcome once it ended."""
    restore_id = int(restore_id)
    row = restore_list(clinic_id=request.tenant.pk).filter(pk=restore_id).first()
    if row is None:
        raise RespaldoError("api_restore_not_found", restore=restore_id)
    return answer(restore_json(request, row))


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under ``/api/``: a JSON 404."""
    return api_error("api_not_found")


# --- the routes: one method table each ------------------------------------------------

backups = endpoint(
    GET=Method(list_backups, "view_backup"),
    POST=Method(create_backup, "add_backup", action=True),
)
backup = endpoint(GET=Method(get_backup, "view_backup"))
download = endpoint(GET=Method(download_backup, "download_backup", action=True))
link = endpoint(POST=Method(make_link, "download_backup", action=True))
backup_file = endpoint(GET=Method(signed_file, action=True, credentials=False))
restore = endpoint(
    GET=Method(preview_restore, "restore_backup"),
    POST=Method(start_restore, "restore_backup", action=True),
)
upload = endpoint(POST=Method(upload_backup, "upload_backup", action=True, csrf_in_view=True))
restores = endpoint(GET=Method(list_restores, READ_RESTORES))
restore_status = endpoint(GET=Method(get_restore, READ_RESTORES))
