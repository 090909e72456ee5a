"""The base of every management command of the project: an expected error is one line.

A refusal the project expects (a ``RespaldoError``, or an error of the pipeline that carries
a ``code``: archive keys not configured or ambiguous, a file that is not an archive, the
storage failing...) ends the command as Django's ``CommandError`` does: one line on stderr,
exit status 1, no traceback (``--traceback`` still shows one). Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from backups.exceptions import RespaldoError, translated
from backups.models import Backup


def one_line(text: str) -> str:
    """``text`` on one line: a tool's multi-line detail would otherwise read as several errors."""
    return " ".join(text.split())


class RespaldoCommand(BaseCommand):
    """A ``BaseCommand`` whose expected errors end it with one clear line and a non-zero exit.

    ``needs_archive_keys``: refuse before doing anything when the deployment's archive keys
    are missing, ambiguous or malformed (rather than once per clinic, or halfway through).
    """

    needs_archive_keys = False

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            with translated():  # a command also calls below the services (the keys, verification...)
                if self.needs_archive_keys:
                    from backups.keys import check_key_configuration

                    check_key_configuration()
                return super().execute(*args, **options)
        except CommandError as exc:
            if "\n" not in str(exc):
                raise
            raise CommandError(one_line(str(exc)), returncode=exc.returncode) from None
        except RespaldoError as exc:
            raise CommandError(one_line(str(exc))) from exc


def backup_line(backup: Backup) -> str:
    """One line describing a backup, for the command line."""
    size = filesizeformat(backup.size) if backup.size is not None else "-"
    duration = f"{backup.duration.total_seconds():.1f}s" if backup.duration else "-"
    line = (
        f"#{backup.pk} {backup.clinic.schema_name} {backup.kind} {backup.payload_format} {backup.status} "
        f"size={size} duration={duration} sha256={backup.sha256 or '-'}"
    )
    if backup.error or backup.error_code:
        line += f" error={backup.error_message()}"
    return line
