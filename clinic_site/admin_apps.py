"""The admin app, its modules loaded with the URLs instead of at start-up.

Django's ``AdminConfig`` imports every app's ``admin`` module when Django starts
(``autodiscover``), and with them django-import-export's file formats (openpyxl alone is
about 16 MB): memory in every worker and backup command, which never serve a page. Here the
URLconfs call ``admin.autodiscover()``, and so does the admin's system check, before it
checks the registered ModelAdmins (so ``manage.py check`` still checks every one of them).
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import autodiscover
from django.contrib.admin.apps import SimpleAdminConfig
from django.contrib.admin.checks import check_admin_app, check_dependencies
from django.core import checks


def check_discovered_admin(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Django's check of every admin site's ModelAdmins, once the admin modules are loaded."""
    autodiscover()
    return check_admin_app(app_configs, **kwargs)


class LazyAdminConfig(SimpleAdminConfig):
    """``django.contrib.admin`` without autodiscovery at start-up (see the module's docstring)."""

    def ready(self) -> None:
        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(check_discovered_admin, checks.Tags.admin)
