"""The console's own "403" and "404" pages: in the admin's frame and the reader's language.

Django's defaults are a bare English "403 Forbidden" (no ``403.html``) and a plain "Not Found";
a clinic's reception, following a link it may not follow, landed on the first. These views
render ``403.html`` and ``404.html`` with the admin site's context (header, user links), on
the clinic's domain with the clinic's site and on the platform's with the platform's.
"""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views import defaults


def _site(request: HttpRequest) -> AdminSite:
    from django_tenants.utils import get_public_schema_name

    from clinic_site.admin_sites import clinic_site, platform_site

    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.schema_name == get_public_schema_name():
        return platform_site
    return clinic_site


def _page(request: HttpRequest, template: str, status: int, title: str) -> HttpResponse:
    try:
        context = {**_site(request).each_context(request), "title": title}
    except Exception:  # an error page must render even when the site's context cannot be built
        context = {"title": title}
    return render(request, template, context, status=status)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """403: the page exists but this account may not open it."""
    if request.path.startswith("/api/"):
        return defaults.permission_denied(request, exception)
    return _page(request, "403.html", 403, _("You may not open this page"))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404: no such page, or one of another clinic."""
    if request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception)
    return _page(request, "404.html", 404, _("Page not found"))
