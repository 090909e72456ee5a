"""The deployment's archive keys, read from configuration at call time (``backups.keys`` re-exports them).

Keys are age identities (``AGE-SECRET-KEY-1…``). Exactly one key encrypts and
authenticates new archives: ``BACKUPS_AGE_IDENTITY``, or the single key in the file
``BACKUPS_AGE_IDENTITY_FILE``, never both. Keys of an earlier deployment or of a rotation
go in ``BACKUPS_AGE_OLD_IDENTITIES``: they only open and verify older archives, never
encrypt. A configuration that leaves the encrypting key in doubt is a ``KeyConfigError``,
never a silent choice. Development generates a key file in the git-ignored local folder;
production must configure a key, and backups fail closed without one.
"""

from __future__ import annotations

import os
from pathlib import Path

from backups.archive import KeyConfigError, generate_identity, identity_public_key
from backups.conf import conf

DEV_KEY_HEADER = "# Respaldo development archive key (age identity). Never commit this file."
_OLD_KEYS_HINT = "keys that should only open older backups go in BACKUPS_AGE_OLD_IDENTITIES"


def encryption_identity() -> str:
    """The one key that encrypts and authenticates new archives; KeyConfigError if none or ambiguous.

    Development (``BACKUPS_GENERATE_DEV_KEY``) generates the key file on first use.
    """
    identity = _encryption_identity(generate=True)
    assert identity is not None
    return identity


def old_identities() -> list[str]:
    """Keys that only open and verify older archives (``BACKUPS_AGE_OLD_IDENTITIES``)."""
    values = conf.age_old_identities or []
    if isinstance(values, str):
        raise KeyConfigError("BACKUPS_AGE_OLD_IDENTITIES must be a list of keys, not a string.")
    return [_checked(value, f"key #{n} of BACKUPS_AGE_OLD_IDENTITIES") for n, value in enumerate(values, 1)]


def archive_identities() -> list[str]:
    """Every key that may open an archive: the encrypting key first, then the old ones.

    ``archive.write_archive`` encrypts and authenticates with the first; ``open_archive``
    and ``verify_archive`` accept any of them.
    """
    return [encryption_identity(), *old_identities()]


def check_key_configuration() -> None:
    """Raise KeyConfigError if the keys are missing, ambiguous or malformed.

    Writes nothing: a development key file still to be generated counts as configured.
    """
    _encryption_identity(generate=False)
    old_identities()


def development_key_in_use() -> bool:
    """Whether new archives are (or, on first use, will be) encrypted with a generated development key.

    Writes nothing. True for a key file this module generated (also one copied elsewhere)
    and for a missing key file that development would generate.
    """
    path = _identity_file()
    if _inline_identity() or path is None:
        return False
    if not path.exists():
        return conf.generate_dev_key
    with path.open() as handle:
        return handle.readline().strip() == DEV_KEY_HEADER


def _inline_identity() -> str:
    return conf.age_identity


def _identity_file() -> Path | None:
    return conf.age_identity_file


def _encryption_identity(*, generate: bool) -> str | None:
    """The encrypting key, or None if it is a development key not generated yet (and ``generate`` is off)."""
    if conf.age_identities_replaced:
        raise KeyConfigError(
            "BACKUPS_AGE_IDENTITIES is no longer read (its first key encrypted new backups): "
            f"put the key that encrypts new backups in BACKUPS_AGE_IDENTITY; {_OLD_KEYS_HINT}."
        )
    inline = _inline_identity()
    path = _identity_file()
    if inline and path is not None:
        raise KeyConfigError(
            "Two keys are configured to encrypt new backups, in BACKUPS_AGE_IDENTITY and BACKUPS_AGE_IDENTITY_FILE: "
            f"set only one; {_OLD_KEYS_HINT}."
        )
    if inline:
        if "," in inline:
            raise KeyConfigError(
                "BACKUPS_AGE_IDENTITY holds more than one key: it takes exactly one, the key that encrypts "
                f"new backups; {_OLD_KEYS_HINT}."
            )
        return _checked(inline, "BACKUPS_AGE_IDENTITY")
    if path is None:
        raise KeyConfigError(
            "Backups are encrypted, but no archive key is configured: "
            "set BACKUPS_AGE_IDENTITY or BACKUPS_AGE_IDENTITY_FILE."
        )
    if not path.exists():
        if not conf.generate_dev_key:
            raise KeyConfigError(f"The archive key file {path} does not exist: backups cannot be encrypted.")
        if not generate:
            return None
        _generate_identity_file(path)
    return _read_identity_file(path)


def _read_identity_file(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise KeyConfigError(f"The archive key file {path} cannot be read: {reason}.") from None
    lines = [line.strip() for line in text.splitlines()]
    identities = [line for line in lines if line and not line.startswith("#")]
    if len(identities) != 1:
        raise KeyConfigError(
            f"The archive key file {path} holds {len(identities)} keys; it must hold exactly one, "
            f"the key that encrypts new backups; {_OLD_KEYS_HINT}."
        )
    return _checked(identities[0], f"The key in {path}")


def _checked(value: object, where: str) -> str:
    """``value`` as a valid identity string; the error names ``where`` and never echoes the secret."""
    if not isinstance(value, str):
        raise KeyConfigError(f"{where} is not a string.")
    try:
        identity_public_key(value)
    except KeyConfigError:
        raise KeyConfigError(f"{where} is not a valid age secret key 'AGE-SECRET-KEY-1...'.") from None
    return value.strip()


def _generate_identity_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    identity = generate_identity()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process generated it first
    with os.fdopen(fd, "w") as handle:
        handle.write(DEV_KEY_HEADER + "\n")
        handle.write(identity + "\n")
