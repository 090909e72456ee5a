"""Trend charts on the clinic's backups page: server-side SVG with a title, a description and one
bar per backup, and the same numbers in a table; only this clinic's successful backups."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from backups.admin.trends import HEIGHT, LAST, TOP, WIDTH, bar_chart, last_samples, scale_top
from backups.humanize import human_bytes
from backups.models import Backup, JobStatus
from backups.tests.helpers import fake_backup, logged_in

pytestmark = pytest.mark.django_db


def _history(schema: str, count: int) -> None:
    start = timezone.now() - timedelta(days=count)
    for day in range(count):
        began = start + timedelta(days=day)
        fake_backup(schema, size=(day + 1) << 20, started_at=began, succeeded_at=began + timedelta(seconds=day + 2))


def test_the_backups_page_draws_size_and_duration_with_the_numbers_beside():
    _history("clinica", 5)
    fake_backup("clinica", status=JobStatus.FAILED, size=None, started_at=timezone.now(), succeeded_at=None)
    _history("bienestar", 3)
    page = logged_in("admin", "admin").get("/admin/backups/backup/").content.decode()
    charts = re.findall(r'<svg class="respaldo-chart" role="img".*?</svg>', page, re.S)
    assert len(charts) == 2
    size, duration = charts
    assert '<title id="trend-size-t">Size of the last 5 backups</title>' in size
    assert len(re.findall(r"<rect ", size)) == 5 and len(re.findall(r"<rect ", duration)) == 5
    mb = [human_bytes(n << 20) for n in range(1, 6)]
    assert f"From {mb[0]} to {mb[4]}; the newest is {mb[4]}." in size
    table = page[page.index('<div class="respaldo-trends-table"') :]
    rows = re.findall(r"<tr><td>[^<]+</td><td>([^<]+)</td><td>([^<]+)</td></tr>", table)
    assert [size for size, _ in rows] == mb  # oldest first, as the bars go from left to right
    assert "The last 5 backups, in numbers" in page


def test_no_backups_no_chart_and_at_most_sixty_bars():
    page = logged_in("admin", "admin").get("/admin/backups/backup/").content.decode()
    assert "respaldo-chart" not in page
    _history("clinica", LAST + 5)
    samples = last_samples(Backup.objects.filter(clinic__schema_name="clinica"))
    assert len(samples) == LAST and samples[0].at < samples[-1].at
    assert samples[-1].size == (LAST + 5) << 20  # the newest are kept
    assert len(re.findall(r"<rect ", bar_chart(samples, measure="seconds", chart_id="x"))) == LAST
    assert bar_chart([], measure="size", chart_id="x") == ""


def test_a_chart_says_its_range_in_spanish():
    _history("clinica", 2)
    page = logged_in("admin", "admin", language="es").get("/admin/backups/backup/").content.decode()
    assert "Tamaño de los últimos 2 respaldos" in page and "Duración de los últimos 2 respaldos" in page


def test_the_platform_overview_draws_every_clinics_last_backups():
    from backups.tests.helpers import platform_admin

    _history("clinica", 3)
    _history("bienestar", 2)
    page = platform_admin().get("/admin/").content.decode()
    size = re.search(r'<svg class="respaldo-chart" role="img".*?</svg>', page, re.S).group(0)
    assert "Size of the last 5 backups" in size and len(re.findall(r"<rect ", size)) == 5
    assert "The last 5 backups, in numbers" in page


def _bars(chart: str) -> list[tuple[float, float, float]]:
    """(x, width, height) of each bar of an SVG chart."""
    found = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="([\d.]+)"', chart)
    return [(float(x), float(w), float(h)) for x, w, h in found]


def test_one_backup_does_not_fill_the_chart_and_the_axis_says_dates_and_times():
    _history("clinica", 1)
    samples = last_samples(Backup.objects.filter(clinic__schema_name="clinica"))
    plot = HEIGHT - 22 - TOP
    for measure in ("size", "seconds"):
        chart = bar_chart(samples, measure=measure, chart_id="x")
        [(x, width, height)] = _bars(chart)
        assert height <= plot / 1.15 + 0.1  # headroom over the tallest bar
        assert width <= (WIDTH - 70) / 20  # a narrow bar, not the whole width
        assert f">{samples[0].at:%Y-%m-%d %H:%M}</text>" in chart
    # 1 MiB is 100 % of nothing: a tiny backup is drawn against a sensible minimum range
    assert _bars(bar_chart(samples, measure="size", chart_id="x"))[0][2] <= plot * 0.6


def test_the_scale_is_round_with_headroom():
    assert scale_top("size", 5 << 20) == 10 << 20
    assert scale_top("size", 900 << 20) == 2 << 30
    assert scale_top("size", 0) == scale_top("size", 12345) == 1 << 20
    assert scale_top("seconds", 20) == 30 and scale_top("seconds", 0) == 10
    assert scale_top("seconds", 55) == 120


def test_many_backups_label_the_first_and_last_date_and_time():
    _history("clinica", 5)
    samples = last_samples(Backup.objects.filter(clinic__schema_name="clinica"))
    chart = bar_chart(samples, measure="size", chart_id="x")
    assert f">{samples[0].at:%Y-%m-%d %H:%M}</text>" in chart and f">{samples[-1].at:%Y-%m-%d %H:%M}</text>" in chart
    heights = [height for _, _, height in _bars(chart)]
    assert heights == sorted(heights) and max(heights) < HEIGHT - 22 - TOP
