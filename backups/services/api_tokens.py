"""API tokens: made and revoked in the console, checked on every API request.

A token reads ``rsp_<prefix>_<secret>``: the prefix (8 characters) names it in lists, the
secret (32 random bytes) is what proves it. Only the SHA-256 of the whole token is kept;
the token itself is shown once, when it is made. Checking a token and recording its last use
take one UPDATE; fair use is counted per user, not per token (``backups.services.api_usage``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from backups.audit import audit
from backups.exceptions import RespaldoError
from backups.models import ApiToken, AuditEntry
from clinics.models import Clinic

TOKEN_START = "rsp_"  # noqa: S105 - the tokens' visible start, not a secret


class TokenRefused(RespaldoError):
    """The request's token cannot be used (unknown, revoked, its user gone) or is over its fair use."""


@dataclass
class NewToken:
    """A token just made: the row, and the token itself, which is never shown again."""

    token: ApiToken
    secret: str


def token_digest(raw: str) -> str:
    """The SHA-256 (hex) kept in place of a token."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(
    *,
    clinic: Clinic,
    user: AbstractBaseUser,
    name: str,
    read_only: bool = False,
    created_by: str = "",
    address: str | None = None,
) -> NewToken:
    """Make a token for ``user`` of ``clinic`` (the user of the clinic's current schema); audited."""
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_START}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            clinic=clinic,
            user_id=user.pk,
            username=user.get_username(),
            name=name.strip()[:100],
            read_only=read_only,
            prefix=prefix,
            digest=token_digest(raw),
            created_by=created_by or user.get_username(),
        )
        audit(
            AuditEntry.Action.TOKEN_CREATED,
            clinic_id=clinic.pk,
            actor=created_by or user.get_username(),
            address=address,
            token=prefix,
            user=user.get_username(),
            name=token.name,
            read_only=read_only,
        )
    return NewToken(token=token, secret=raw)


def token_revoke(*, token: ApiToken, revoked_by: str, address: str | None = None) -> bool:
    """Revoke ``token`` (from its next request on); False if it was already revoked. Audited."""
    with transaction.atomic():
        changed = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(
            revoked_at=timezone.now(), revoked_by=revoked_by[:150]
        )
        if changed:
            audit(
                AuditEntry.Action.TOKEN_REVOKED,
                clinic_id=token.clinic_id,
                actor=revoked_by,
                address=address,
                token=token.prefix,
                user=token.username,
                name=token.name,
            )
    token.refresh_from_db()
    return bool(changed)


def clinic_tokens(clinic_id: int) -> QuerySet[ApiToken]:
    """A clinic's tokens, newest first (revoked ones too: they are its history)."""
    return ApiToken.objects.filter(clinic_id=clinic_id).order_by("-created_at", "-id")


def token_authenticate(*, clinic: Clinic, raw: str, address: str | None = None) -> tuple[ApiToken, AbstractBaseUser]:
    """The token ``raw`` of ``clinic`` and its user (in the clinic's current schema), counted for fair use.

    Raises TokenRefused: ``api_token_invalid`` (unknown here, malformed, or another clinic's),
    ``api_token_revoked`` and ``api_token_user_inactive`` (its user is gone, inactive or no longer
    staff).
    """
    if not raw.startswith(TOKEN_START) or len(raw) > 200:
        raise TokenRefused("api_token_invalid")
    token = ApiToken.objects.filter(digest=token_digest(raw), clinic_id=clinic.pk).first()
    if token is None:
        raise TokenRefused("api_token_invalid")
    if token.revoked_at is not None:
        raise TokenRefused("api_token_revoked", token=token.prefix)
    _record_use(token, address)
    user = (
        get_user_model()
        ._default_manager.filter(pk=token.user_id, is_active=True, is_staff=True)
        .filter(**{get_user_model().USERNAME_FIELD: token.username})
        .first()
    )
    if user is None:
        raise TokenRefused("api_token_user_inactive", token=token.prefix)
    return token, user


def _record_use(token: ApiToken, address: str | None) -> None:
    """Record when and from where the token was last used."""
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_address=address)
    token.last_used_at, token.last_used_address = now, address


def token_is_live(token_id: int) -> bool:
    """Whether API token ``token_id`` still exists and is not revoked."""
    return ApiToken.objects.filter(pk=token_id, revoked_at=None).exists()
