"""Helpers shared by the browser tests: screenshots, the demo clinic, the job badges."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings

from backups.tests.helpers import table_checksums

CLINIC = "clinica"


class Shots:
    """Numbered full-page screenshots of every page of one run."""

    def __init__(self, language: str) -> None:
        root = Path(os.environ.get("SCREENSHOT_DIR") or Path(settings.BASE_DIR) / ".local" / "screenshots")
        self.folder = root / language[:2]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.last: Path | None = None  # the screenshot just taken

    def __call__(self, page, name: str) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000
        self.last = path


def dental_state() -> dict[str, str]:
    """Checksums of the clinic's records (not its sessions, which logging in changes)."""
    return {table: digest for table, digest in table_checksums(CLINIC).items() if table.startswith("dental_")}


def wait_for_badge(page, job_id: int, status: str, *, timeout: float = 120_000) -> None:
    """Until the badge of job ``job_id`` on the page shows ``status`` (the page's script updates it)."""
    page.wait_for_selector(f'.respaldo-badge.respaldo-{status}[data-job="{job_id}"]', timeout=timeout)


def copy_shot(shots: Shots, name: str, target: str) -> None:
    """Copy the last screenshot named ``name`` to docs/screenshots/``target``."""
    shutil.copy(sorted(shots.folder.glob(f"*-{name}.png"))[-1], Path(settings.BASE_DIR) / "docs/screenshots" / target)
