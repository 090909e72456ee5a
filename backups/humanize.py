"""Sizes, durations, actors and notes as people read them, in the active language (console, emails, commands)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext


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


# Who asked, when no person did: the names the services store (operations/schedule.py, backups/audit.py).
_ACTORS = {"schedule": gettext_lazy("the daily schedule"), "system": gettext_lazy("the system")}
# Notes the services store in English on backups they make themselves; shown in the reader's language.
_SELECTIVE_NOTE = re.compile(r"selective restore from #(\d+)")


def human_actor(actor: str) -> str:
    """Who asked for a job or did an action: a user's name, or the schedule / the system in words."""
    return str(_ACTORS[actor]) if actor in _ACTORS else actor


def human_note(note: str) -> str:
    """A backup's note; the ones the services write themselves (in English) in the active language."""
    if note == "offboarding":
        return _("taken before the clinic was offboarded")
    if note == "imported from the backup storage":
        return _("imported from the backup storage")
    selective = _SELECTIVE_NOTE.fullmatch(note)
    if selective:
        return _("taken before restoring one patient from backup #%(id)s") % {"id": selective.group(1)}
    return note


def human_time(moment: datetime | None, *, seconds: bool = False, zone: bool = False) -> str:
    """The console's one way to write a moment: ``2026-03-05 14:07`` in the current time zone
    (the clinic's on its pages), with ``seconds``, and with the zone's name (``zone``) where
    pages mix zones (the platform's); an em dash when there is none."""
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{text} {timezone.get_current_timezone_name()}" if zone else text


def human_ago(moment: datetime, now: datetime | None = None) -> str:
    """How long ago, in the biggest unit: "3 hours ago", or "just now" under a minute."""
    if (now or timezone.now()) - moment < timedelta(minutes=1):
        return _("just now")
    return _("%(age)s ago") % {"age": timesince(moment, now, depth=1)}
