"""Fair use of the API: requests counted per user of a clinic and per clinic, whatever the credential.

A user's session and every one of their tokens share one count (``BACKUPS_API_REQUESTS_PER_MINUTE``),
so making more tokens buys nothing; all the users of a clinic share another
(``BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE``). Counts live in fixed one-minute windows in the
catalog (one upsert per count), so every web process sees the same numbers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from backups.conf import conf
from backups.exceptions import RespaldoError
from backups.models import ApiUsage

WINDOW = timedelta(minutes=1)
CLINIC = ""  # the username of the row that counts the whole clinic


def count_api_request(*, clinic_id: int, username: str) -> None:
    """Count one request of ``username`` in clinic ``clinic_id``.

    Raises RespaldoError ``api_rate_limited`` (``limit``, ``retry_after`` seconds) when the user or
    the clinic is over its limit for the current minute; the refused request still counts.
    """
    for who, limit in ((username, conf.api_requests_per_minute), (CLINIC, conf.api_clinic_requests_per_minute)):
        count, started = _count(clinic_id, who)
        if count > limit:
            retry_after = max(1, int((started + WINDOW - timezone.now()).total_seconds()) + 1)
            message = "api_rate_limited" if who else "api_rate_limited_clinic"
            raise RespaldoError("api_rate_limited", message, limit=limit, retry_after=retry_after)


def _count(clinic_id: int, username: str) -> tuple[int, datetime]:
    """Add one to the (clinic, username) window, starting a new window when the last one is over."""
    now = timezone.now()
    table = connection.ops.quote_name(ApiUsage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO public.{table} AS u (clinic_id, username, window_started_at, requests) "  # noqa: S608
            "VALUES (%s, %s, %s, 1) ON CONFLICT (clinic_id, username) DO UPDATE SET "
            "requests = CASE WHEN u.window_started_at > %s THEN u.requests + 1 ELSE 1 END, "
            "window_started_at = CASE WHEN u.window_started_at > %s THEN u.window_started_at ELSE %s END "
            "RETURNING requests, window_started_at",
            [clinic_id, username[:150], now, now - WINDOW, now - WINDOW, now],
        )
        count, started = cursor.fetchone()
    return count, started
