"""Trends of the last backups (size and duration), drawn as server-side SVG bar charts (the
console's and the platform index's; the samples are read by ``backups.selectors.trends``).

No JavaScript and no CDN: each chart is an ``<svg role="img">`` with a title and a description
(its range in words), one bar per backup with its own ``<title>``, and the same numbers in a
table next to it for screen readers and for reading without colour (the bars are one colour;
nothing is told by colour alone).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from backups.humanize import human_bytes, human_duration
from backups.models import Backup
from backups.selectors.trends import LAST, Sample, last_samples  # noqa: F401 - the charts' samples

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 140, 70, 22, 10
MIN_SLOTS = 20  # bars are at most (WIDTH - LEFT) / MIN_SLOTS wide
LABEL_WIDTH = 120  # about the width of "2026-12-07 03:45" under the axis, and a gap
HEADROOM = 1.15  # the tallest bar reaches at most 1 / HEADROOM of the chart
MIN_SIZE = 1024 * 1024.0  # a chart of sizes goes at least up to 1 MiB
MIN_SECONDS = 10.0  # and one of durations to 10 s
_NICE = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_NICE_SECONDS = (10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def scale_top(measure: str, highest: float) -> float:
    """The value at the top of a chart's axis: the highest bar plus headroom, rounded up to a round
    number (1, 2 or 5 of a unit for sizes, a round duration for times), never below a sensible
    minimum (1 MiB, 10 s), so that no bar fills the chart and a tiny one still looks tiny."""
    wanted = max(highest * HEADROOM, 0.0)
    if measure == "size":
        unit = 1.0
        while wanted >= unit * 1024:
            unit *= 1024
        scaled = next((nice for nice in _NICE if nice * unit >= wanted), 1000)
        return max(scaled * unit, MIN_SIZE)
    return max(next((nice for nice in _NICE_SECONDS if nice >= wanted), _round_up(wanted, 3600)), MIN_SECONDS)


def bar_chart(samples: list[Sample], *, measure: str, chart_id: str) -> SafeString:
    """An SVG bar chart of ``measure`` ("size" or "seconds") over ``samples``, oldest on the left
    (as in the table beside it); empty for none. The axis says the first and last dates and times."""
    if not samples:
        return SafeString("")
    values = [float(getattr(s, measure)) for s in samples]
    top = scale_top(measure, max(values))
    text = _value_text(measure)
    count = len(samples)
    if measure == "size":
        title = ngettext("Size of the last backup", "Size of the last %(count)s backups", count)
    else:
        title = ngettext("Duration of the last backup", "Duration of the last %(count)s backups", count)
    title = title % {"count": count}
    low, high = min(values), max(values)
    description = _("From %(low)s to %(high)s; the newest is %(last)s.") % {
        "low": text(low),
        "high": text(high),
        "last": text(values[-1]),
    }
    step = (WIDTH - LEFT) / max(count, MIN_SLOTS)  # a few backups draw a few narrow bars, not one wide one
    plot = HEIGHT - BOTTOM - TOP
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"><title>{}: {}</title></rect>',
        (
            (
                f"{LEFT + i * step + 1:.1f}",
                f"{TOP + plot - plot * value / top:.1f}",
                f"{max(step - 2, 1):.1f}",
                f"{max(plot * value / top, 1):.1f}",
                f"{sample.at:%Y-%m-%d %H:%M}",
                text(value),
            )
            for i, (sample, value) in enumerate(zip(samples, values, strict=True))
        ),
    )
    last_label = SafeString("")
    if count > 1:
        last_label = format_html(
            '<text class="label" x="{}" y="{}" text-anchor="end">{}</text>',
            f"{max(LEFT + count * step, LEFT + 2 * LABEL_WIDTH):.1f}",
            HEIGHT - 4,
            f"{samples[-1].at:%Y-%m-%d %H:%M}",
        )
    return format_html(
        '<svg class="respaldo-chart" role="img" aria-labelledby="{id}-t {id}-d" viewBox="0 0 {w} {h}" '
        'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        '<title id="{id}-t">{title}</title><desc id="{id}-d">{desc}</desc>'
        '<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"/>'
        '<line class="axis" x1="{left}" y1="{base}" x2="{w}" y2="{base}"/>'
        '<line class="grid" x1="{left}" y1="{top}" x2="{w}" y2="{top}"/>'
        '<line class="grid" x1="{left}" y1="{mid}" x2="{w}" y2="{mid}"/>'
        '<text class="label" x="{lx}" y="{ty}" text-anchor="end">{high}</text>'
        '<text class="label" x="{lx}" y="{my}" text-anchor="end">{half}</text>'
        '<text class="label" x="{lx}" y="{base}" text-anchor="end">0</text>'
        '<text class="label" x="{left}" y="{h}">{first}</text>{last}'
        '<g class="bars">{bars}</g></svg>',
        id=chart_id,
        w=WIDTH,
        h=HEIGHT - 4,
        title=title,
        desc=description,
        left=LEFT,
        top=TOP,
        mid=f"{TOP + plot / 2:.1f}",
        base=TOP + plot,
        lx=LEFT - 6,
        ty=TOP + 4,
        my=f"{TOP + plot / 2 + 4:.1f}",
        high=text(top),
        half=text(top / 2),
        first=f"{samples[0].at:%Y-%m-%d %H:%M}",
        last=last_label,
        bars=bars,
    )


def trend_context(backups: QuerySet[Backup], *, zone=None) -> dict:
    """What ``admin/backups/trends.html`` shows: the samples and their two charts."""
    samples = last_samples(backups, zone=zone)
    return {
        "trend_samples": samples,
        "size_chart": bar_chart(samples, measure="size", chart_id="trend-size"),
        "duration_chart": bar_chart(samples, measure="seconds", chart_id="trend-duration"),
    }


def _round_up(value: float, unit: float) -> float:
    return -(-value // unit) * unit


def _value_text(measure: str):
    if measure == "size":
        return lambda value: human_bytes(int(value))
    return lambda value: human_duration(timedelta(seconds=value))
