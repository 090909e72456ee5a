"""Secrets never reach a log: the signature of a download link (``?sig=…``) is cut from every record.

A signed link is a credential for five minutes; the request line that ``runserver`` logs
(``django.server``) and any other record that quotes a URL would otherwise hand it to whoever
reads the logs. gunicorn's access log leaves the query string out altogether (``gunicorn.conf.py``).
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMETER = re.compile(r"([?&](?:sig|signature)=)[^&\s\"']+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every ``sig=`` query parameter replaced by ``[redacted]``."""
    return SECRET_PARAMETER.sub(rf"\g<1>{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """A logging filter that formats the record's message once and redacts it (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
