"""The time zones a clinic picks from: one per place, grouped by region, without the old aliases.

``zoneinfo.available_timezones()`` holds some 600 names, many of them backward-compatibility
aliases ("US/Eastern", "Etc/GMT+5", "GMT+0", "Asia/Calcutta"). The IANA database's ``zone.tab``
lists each country's zones under their current names (Europe/Madrid, America/Mexico_City...):
that is the list shown, grouped by region. Where ``zone.tab`` is missing, the region names of
``available_timezones()`` are used instead. UTC is always offered; so is a clinic's current zone,
even an alias, so that saving its policy never changes it unasked.
"""

from __future__ import annotations

import functools
import zoneinfo
from pathlib import Path

REGIONS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific")


def _zone_tab() -> set[str]:
    for folder in zoneinfo.TZPATH:
        path = Path(folder) / "zone.tab"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return {line.split("\t")[2] for line in lines if line and not line.startswith("#")}
    return set()


@functools.cache
def current_zones() -> tuple[str, ...]:
    """The zones offered: each country's zones under their current names, sorted."""
    available = zoneinfo.available_timezones()
    names = _zone_tab() & available or available
    return tuple(sorted(name for name in names if name.split("/", 1)[0] in REGIONS and "/" in name))


def place(zone: str) -> str:
    """What a zone is shown as in its region's group: "Argentina / Buenos Aires" for America/Argentina/Buenos_Aires."""
    return zone.split("/", 1)[-1].replace("_", " ").replace("/", " / ")


def time_zone_choices(current: str | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """Grouped choices for a select: (region, [(zone, place), ...]), "UTC" last; ``current`` kept."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for zone in current_zones():
        groups.setdefault(zone.split("/", 1)[0], []).append((zone, place(zone)))
    others = [("UTC", "UTC")]
    if current and current != "UTC" and current not in current_zones():
        others.append((current, current))
    return [*groups.items(), ("UTC", others)]
