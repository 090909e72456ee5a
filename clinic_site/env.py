"""Reading configuration from the environment, with typed helpers.

Settings call these once at start-up; nothing else in the project reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class ConfigurationError(ImproperlyConfigured):
    """An environment variable the settings refuse; ``manage.py`` prints it as one line."""


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable's value, or ``default`` when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return value if value else default


def env_bool(name: str, default: bool) -> bool:
    """Return a boolean variable; refuse values that are neither true nor false words."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use true or false).")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return an integer variable; refuse values that are not integers or outside [minimum, maximum]."""
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bounds = f"at least {minimum}"
        elif minimum is None:
            bounds = f"at most {maximum}"
        else:
            bounds = f"from {minimum} to {maximum}"
        raise ConfigurationError(f"{name}={raw!r} is out of range: it must be {bounds}.")
    return value


def env_choice(name: str, default: str, choices: Iterable[str], *, case_insensitive: bool = False) -> str:
    """Return a variable that must be one of ``choices``; refuse any other value, naming the choices.

    ``case_insensitive``: the value is compared (and returned) in upper case, as ``choices`` are written.
    """
    raw = env_str(name)
    if raw is None:
        return default
    allowed = list(choices)
    value = raw.upper() if case_insensitive else raw
    if value not in allowed:
        raise ConfigurationError(f"{name}={raw!r}: use one of {', '.join(allowed)}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated list variable, items stripped, empty items dropped."""
    raw = env_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def local_secret(path: Path, *, length: int = 50) -> str:
    """Return a development secret kept in ``path``, generating it on first use.

    The file lives in the git-ignored local folder, so every checkout gets its own
    secret and none is ever committed.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(length)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
