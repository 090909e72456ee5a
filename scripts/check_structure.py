"""The sizes the layout promises (README "Layout"), checked by ``make lint`` and ``make test``.

* no Python module of the product, its tests or the benchmark is over 500 lines (a module past
  that holds several parts: split it where its section banners already are);
* the top level of ``backups/`` holds at most 16 modules: a new one belongs in a package
  (``models/``, ``storage/``, ``keys/``, ``messages/``, ``selectors/``, ``web/``...).

The import layers and cycles are import-linter's (``pyproject.toml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500
MAX_TOP_LEVEL = 16
PACKAGES = ("backups", "clinics", "dental", "clinic_site", "bench", "scripts")


def too_long() -> list[str]:
    """``path: lines`` of every module over the limit (migrations excepted: Django writes them)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            lines = sum(1 for _ in path.open(encoding="utf-8"))
            if lines > MAX_LINES:
                found.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})")
    return found


def top_level() -> list[str]:
    """The modules directly in ``backups/``, when there are too many."""
    modules = sorted(p.name for p in (ROOT / "backups").glob("*.py") if p.name != "__init__.py")
    if len(modules) <= MAX_TOP_LEVEL:
        return []
    return [f"backups/ holds {len(modules)} top-level modules (at most {MAX_TOP_LEVEL}): {', '.join(modules)}"]


def main() -> int:
    problems = too_long() + top_level()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
