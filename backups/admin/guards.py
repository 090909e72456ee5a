"""What every console page checks first: the user's permission in this clinic.

``require`` is the 403 of a page or POST the user may not use. (Expected failures need no
helper: the services raise only ``RespaldoError``, which the pages catch and show.)
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def require(request: HttpRequest, codename: str) -> None:
    """403 unless the user holds ``backups.<codename>`` in this clinic."""
    if not request.user.has_perm(f"backups.{codename}"):
        raise PermissionDenied
