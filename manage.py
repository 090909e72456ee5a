#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic_site.settings")
    from django.core.management import execute_from_command_line

    from clinic_site.env import ConfigurationError

    try:
        execute_from_command_line(sys.argv)
    except ConfigurationError as exc:  # a malformed environment variable: one line, not a traceback
        if "--traceback" in sys.argv:
            raise
        sys.exit(f"Configuration error: {exc}")


if __name__ == "__main__":
    main()
