"""The installed apps named in settings (``TENANT_APPS``, ``BACKUPS_JSON_APPS``) as app configs.

An entry may be a module path (``"dental"``), a label, or an AppConfig path
(``"django.contrib.admin.apps.SimpleAdminConfig"``), as ``INSTALLED_APPS`` allows.
"""

from __future__ import annotations

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def app_config(name: str, *, setting: str = "INSTALLED_APPS") -> AppConfig:
    """The app config for one entry of an app-list setting; ImproperlyConfigured if it is not installed."""
    for config in apps.get_app_configs():
        if name in (config.name, config.label, f"{type(config).__module__}.{type(config).__qualname__}"):
            return config
    raise ImproperlyConfigured(f"{setting}: {name!r} is not an installed app.")


def tenant_app_configs() -> list[AppConfig]:
    """The app configs of ``settings.TENANT_APPS``, in their order."""
    return [app_config(name, setting="TENANT_APPS") for name in settings.TENANT_APPS]
