"""A clinic's media generation: the folder its files live in on S3 (see ``clinics.media_storage``).

Kept apart from the S3 storage so that reading or making a generation never imports boto3.
"""

from __future__ import annotations

import secrets

GENERATION_MARK = "~"


def new_generation() -> str:
    """A fresh generation token (``~`` and 12 hex digits)."""
    return GENERATION_MARK + secrets.token_hex(6)


def current_generation(schema: str) -> str:
    """The media generation of clinic ``schema`` as its row says now ("" when it has none or no row)."""
    from clinics.models import Clinic

    return Clinic.objects.filter(schema_name=schema).values_list("media_generation", flat=True).first() or ""
