"""The deployment's archive keys, read from configuration.

Keys are age identities (``AGE-SECRET-KEY-1…``). The first one encrypts and authenticates
new archives; every configured one may open and verify old archives, so a key can be
rotated by putting the new one first. Development generates a key into the git-ignored
local folder; production must configure one, and backups fail closed without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from backups.archive import KeyConfigError, generate_identity


def _read_identity_file(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _generate_identity_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = generate_identity()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process generated it first
    with os.fdopen(fd, "w") as handle:
        handle.write("# Respaldo development archive key (age identity). Never commit this file.\n")
        handle.write(identity + "\n")


def archive_identities() -> list[str]:
    """Return the configured identities, first one first; raise KeyConfigError if none."""
    identities = list(getattr(settings, "BACKUPS_AGE_IDENTITIES", []) or [])
    file_setting = getattr(settings, "BACKUPS_AGE_IDENTITY_FILE", None)
    if file_setting:
        path = Path(file_setting)
        if not path.exists() and not identities and getattr(settings, "BACKUPS_GENERATE_DEV_KEY", False):
            _generate_identity_file(path)
        if path.exists():
            identities += _read_identity_file(path)
        elif not identities:
            raise KeyConfigError(f"The archive key file {path} does not exist: backups cannot be encrypted.")
    if not identities:
        raise KeyConfigError(
            "Backups are encrypted, but no archive key is configured: "
            "set BACKUPS_AGE_IDENTITIES or BACKUPS_AGE_IDENTITY_FILE."
        )
    return identities
