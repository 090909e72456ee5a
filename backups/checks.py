"""System checks of the backup configuration, run by ``manage.py check --deploy``.

They only read the configuration: a check never generates a key or writes a file, and
never shows a key.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning

from backups import keys
from backups.archive import KeyConfigError


def check_archive_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``backups.E001``: no usable archive key; ``backups.W001``: the key is the generated development key."""
    try:
        keys.check_key_configuration()
    except KeyConfigError as exc:
        return [
            Error(
                f"Backups cannot be made or restored: {exc.detail or exc}",
                hint=(
                    "Make a key with age-keygen, keep a copy of it somewhere safe (without it no backup can be "
                    "restored) and set BACKUPS_AGE_IDENTITY or BACKUPS_AGE_IDENTITY_FILE (README.md, 'Archive keys')."
                ),
                id="backups.E001",
            )
        ]
    if keys.development_key_in_use():
        return [
            Warning(
                "New backups are encrypted with the development key Respaldo generates in its local folder.",
                hint=(
                    "Make a key with age-keygen, keep a copy of it somewhere safe and set BACKUPS_AGE_IDENTITY or "
                    "BACKUPS_AGE_IDENTITY_FILE; put the development key in BACKUPS_AGE_OLD_IDENTITIES only if its "
                    "backups must stay readable."
                ),
                id="backups.W001",
            )
        ]
    return []
