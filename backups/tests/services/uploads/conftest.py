"""Fixtures for the upload tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def upload_tmp(settings, tmp_path) -> Path:
    """The folder uploads are spooled into, for this test."""
    folder = tmp_path / "uploads"
    folder.mkdir(mode=0o700)
    settings.BACKUPS_UPLOAD_TMP_DIR = str(folder)
    return folder
