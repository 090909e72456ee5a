"""Sizes and durations as people read them, in the active language (console, emails, commands)."""

from __future__ import annotations

from datetime import timedelta

from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.utils.translation import ngettext


def human_duration(value: timedelta | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``12 s`` (or an em dash while unknown)."""
    if value is None:
        return "—"
    seconds = int(round(value.total_seconds()))
    if seconds < 1:
        return _("under a second")
    if seconds < 60:
        return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return _("%(m)d min %(s)02d s") % {"m": minutes, "s": seconds}
    hours, minutes = divmod(minutes, 60)
    return _("%(h)d h %(m)02d min") % {"h": hours, "m": minutes}


def human_bytes(value: int | None, *, plain_space: bool = False) -> str:
    """File size in human units (or an em dash while unknown); ``plain_space`` for email subjects."""
    if value is None:
        return "—"
    text = filesizeformat(value)
    return text.replace("\xa0", " ") if plain_space else text
