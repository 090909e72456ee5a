"""Starting the bench run: Django set up once, on the first import, and what every bench module shares.

``bench/run.py`` imports this module before any other of its own, so that the step modules
can import models. On import: the clinics' files (clones) go to a temporary ``MEDIA_ROOT``,
and ``bench_setup.start_django`` gives the archives a private folder and key. ``TMP`` is the
run's temporary folder (removed at exit), ``ROOT`` the repository, ``MB`` a mebibyte and
``log`` writes progress to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="respaldo-bench-media-")  # clinics' files (clones)
from bench_setup import ROOT, start_django  # noqa: E402 - bench/ is the script's folder

TMP = start_django("respaldo-bench-")
MB = 2**20

logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per enqueued task


def log(message: str) -> None:
    """One line of progress on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


__all__ = ["MB", "ROOT", "TMP", "log"]
