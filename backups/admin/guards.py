"""What every console page checks first: the user's permission, and which failures are expected.

``require`` is the 403 of a page or POST the user may not use; ``refusal`` turns an expected
failure (a ``RespaldoError``, or an error that carries a ``code``) into the sentence shown to
the clinic administrator, in their language, and re-raises anything else (a bug).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from backups.exceptions import as_respaldo_error


def require(request: HttpRequest, codename: str) -> None:
    """403 unless the user holds ``backups.<codename>`` in this clinic."""
    if not request.user.has_perm(f"backups.{codename}"):
        raise PermissionDenied


def refusal(exc: Exception) -> str:
    """What to tell the admin about an expected failure, in their language; re-raise anything else."""
    error = as_respaldo_error(exc)
    if error is None:
        raise exc
    return str(error)
