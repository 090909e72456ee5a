"""What every bench script does before Django starts: a private archive folder and key.

Archives go to a temporary folder (removed at exit), encrypted with a throw-away key unless
keys are configured, so ``.local`` is untouched. The environment is inherited by the
child processes the benches start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_django(prefix: str) -> Path:
    """Prepare the environment, set Django up, and return the temporary folder."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ.update(DJANGO_SETTINGS_MODULE="clinic_site.settings", BACKUPS_STORAGE="local")
    os.environ["BACKUPS_LOCAL_DIR"] = str(tmp / "archives")
    if not os.environ.get("BACKUPS_AGE_IDENTITY") and not os.environ.get("BACKUPS_AGE_IDENTITY_FILE"):
        os.environ["BACKUPS_AGE_IDENTITY_FILE"] = str(tmp / "bench-key.txt")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    return tmp
