"""Every ``BACKUPS_*`` setting, with its default, read from Django's settings at call time.

The one place that knows the defaults (like django-q2's ``Conf``), but lazy: each property
reads ``settings`` when it is used, so ``override_settings`` works in tests. Use it as
``from backups.conf import conf`` then ``conf.zstd_level``. ``clinic_site/settings.py``
fills these settings from the environment (see the README's tables).

Also the installed apps that app-list settings name (``TENANT_APPS``, ``BACKUPS_JSON_APPS``),
as app configs: :func:`app_config`, :func:`tenant_app_configs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _setting(name: str, default: Any = None) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


class BackupsConf:
    """Typed, lazily read access to the ``BACKUPS_*`` settings."""

    # --- archives and keys
    @property
    def zstd_level(self) -> int:
        return int(_setting("BACKUPS_ZSTD_LEVEL", 1))

    @property
    def zstd_threads(self) -> int:
        """zstd worker threads beside the one that hashes, authenticates and encrypts (0: compress inline)."""
        return int(_setting("BACKUPS_ZSTD_THREADS", 2))

    @property
    def age_identity(self) -> str:
        """The key that encrypts new archives (``BACKUPS_AGE_IDENTITY``), or ""."""
        return str(_setting("BACKUPS_AGE_IDENTITY", "")).strip()

    @property
    def age_identity_file(self) -> Path | None:
        value = _setting("BACKUPS_AGE_IDENTITY_FILE")
        return Path(value) if value else None

    @property
    def age_old_identities(self) -> Any:
        """Keys that only open older archives (validated by ``keys.old_identities``)."""
        return _setting("BACKUPS_AGE_OLD_IDENTITIES", [])

    @property
    def age_identities_replaced(self) -> Any:
        """The former ``BACKUPS_AGE_IDENTITIES``: read only to refuse it."""
        return _setting("BACKUPS_AGE_IDENTITIES", [])

    @property
    def generate_dev_key(self) -> bool:
        return bool(_setting("BACKUPS_GENERATE_DEV_KEY", False))

    # --- limits
    @property
    def max_upload_bytes(self) -> int:
        return int(_setting("BACKUPS_MAX_UPLOAD_BYTES", 2 * 1024**3))

    @property
    def max_payload_bytes(self) -> int:
        return int(_setting("BACKUPS_MAX_PAYLOAD_BYTES", 20 * 1024**3))

    @property
    def upload_tmp_dir(self) -> str | None:
        return _setting("BACKUPS_UPLOAD_TMP_DIR") or None

    # --- fair use (per clinic, over the last 24 hours)
    @property
    def max_manual_backups_per_day(self) -> int:
        return int(_setting("BACKUPS_MAX_MANUAL_BACKUPS_PER_DAY", 20))

    @property
    def max_downloads_per_day(self) -> int:
        return int(_setting("BACKUPS_MAX_DOWNLOADS_PER_DAY", 20))

    @property
    def offboard_keep_days(self) -> int:
        """Days an offboarded clinic's backups are kept before they are erased."""
        return int(_setting("BACKUPS_OFFBOARD_KEEP_DAYS", 90))

    # --- jobs
    @property
    def max_attempts(self) -> int:
        return int(_setting("BACKUPS_MAX_ATTEMPTS", 2))

    @property
    def stale_after_seconds(self) -> int:
        return int(_setting("BACKUPS_STALE_AFTER_SECONDS", 120))

    # --- PostgreSQL
    @property
    def pg_bin_dir(self) -> str | None:
        return _setting("BACKUPS_PG_BIN_DIR") or None

    @property
    def night_concurrency(self) -> int:
        """How many scheduled backups may be handed out or running at once, over every worker cluster."""
        return int(_setting("BACKUPS_NIGHT_CONCURRENCY", 4))

    @property
    def lost_after_seconds(self) -> int:
        """How long a pending backup handed to the broker may wait before it is handed again (lost task)."""
        return int(_setting("BACKUPS_LOST_AFTER_SECONDS", 900))

    @property
    def pg_payload(self) -> str:
        """How a pg backup is written: ``sql`` (our catalog reader, the default) or ``custom`` (pg_dump -Fc)."""
        return str(_setting("BACKUPS_PG_PAYLOAD", "sql"))

    @property
    def lock_wait_timeout_ms(self) -> int:
        """How long a dump waits for the clinic's tables (pg_dump --lock-wait-timeout)."""
        return int(_setting("BACKUPS_LOCK_WAIT_TIMEOUT_MS", 120_000))

    @property
    def restore_lock_timeout_ms(self) -> int:
        """How long a restore waits for the locks of the schema swap before giving up."""
        return int(_setting("BACKUPS_RESTORE_LOCK_TIMEOUT_MS", 10_000))

    # --- links in emails
    @property
    def console_scheme(self) -> str:
        """``http`` or ``https``: how people reach the console (``BACKUPS_CONSOLE_SCHEME``)."""
        return str(_setting("BACKUPS_CONSOLE_SCHEME", "http")).strip() or "http"

    @property
    def console_port(self) -> str:
        """The port in console links (``BACKUPS_CONSOLE_PORT``), "" for the scheme's own."""
        return str(_setting("BACKUPS_CONSOLE_PORT", "")).strip()

    def console_url(self, clinic: Any, path: str) -> str:
        """An absolute link to ``path`` on the clinic's primary domain (any domain if none is primary)."""
        domains = clinic.domains.order_by("-is_primary", "pk")
        host = domains.values_list("domain", flat=True).first() or "localhost"
        port = f":{self.console_port}" if self.console_port else ""
        return f"{self.console_scheme}://{host}{port}{path}"

    # --- webhooks
    @property
    def webhooks_allow_http_localhost(self) -> bool:
        """Accept plain ``http://`` webhook URLs to localhost (tests, development); never in production."""
        return bool(_setting("BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST", False))

    # --- the JSON API
    @property
    def api_requests_per_minute(self) -> int:
        """Requests one user of a clinic may make per minute (fair use), with a session or any of their tokens."""
        return int(_setting("BACKUPS_API_REQUESTS_PER_MINUTE", 120))

    @property
    def api_clinic_requests_per_minute(self) -> int:
        """Requests all the users of one clinic may make per minute together (fair use); more get 429."""
        return int(_setting("BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE", 600))

    # --- json format
    @property
    def json_apps(self) -> list[str] | None:
        """The apps whose models a json payload holds (None: every tenant app)."""
        return _setting("BACKUPS_JSON_APPS")


conf = BackupsConf()


# --- The installed apps named in settings (``TENANT_APPS``, ``BACKUPS_JSON_APPS``) as app configs.
# An entry may be a module path ("dental"), a label, or an AppConfig path
# ("django.contrib.admin.apps.SimpleAdminConfig"), as ``INSTALLED_APPS`` allows.


def app_config(name: str, *, setting: str = "INSTALLED_APPS") -> AppConfig:
    """The app config for one entry of an app-list setting; ImproperlyConfigured if it is not installed."""
    for config in apps.get_app_configs():
        if name in (config.name, config.label, f"{type(config).__module__}.{type(config).__qualname__}"):
            return config
    raise ImproperlyConfigured(f"{setting}: {name!r} is not an installed app.")


def tenant_app_configs() -> list[AppConfig]:
    """The app configs of ``settings.TENANT_APPS``, in their order."""
    return [app_config(name, setting="TENANT_APPS") for name in settings.TENANT_APPS]
