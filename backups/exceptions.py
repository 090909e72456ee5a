"""One root error with a stable code and parameters, rendered in the reader's language when shown.

``RespaldoError(code, message_id=None, **params)``: ``code`` is the stable reason a program
reads ("clinic_busy", "other_clinic", "tampered"...); ``message_id`` picks the sentence
(default: the code itself) from the catalogue ``backups.messages.MESSAGES``, whose texts are
marked for translation but only translated by ``render()`` (both re-exported here), i.e. when
a person reads them: the console, the command line, an email. A job row keeps the code and
parameters (``Job.error_code``/``error_params``), never a sentence frozen in one language.
Parameters are plain JSON values; a parameter that is itself an error record
(``{"message_id": ..., "params": ...}``) is rendered the same way.

The modules below the services (archive, storage, dumps, client tools, formats) raise their
own errors with a ``code``; the services turn them into a RespaldoError at their boundary
(``translated()``), so that an adapter only ever catches ``RespaldoError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backups.messages import MESSAGES, render

__all__ = [
    "MESSAGES",
    "BackupRefused",
    "ClinicBusy",
    "ClinicNotFound",
    "RespaldoError",
    "RestoreRefused",
    "UploadRefused",
    "as_respaldo_error",
    "failure_reason",
    "render",
    "translated",
]


class RespaldoError(Exception):
    """Something a person asked for cannot be done; ``str()`` says why in the active language."""

    def __init__(self, code: str, message_id: str | None = None, /, **params: Any) -> None:
        self.code = code
        self.message_id = message_id or code
        self.params = {key: _jsonable(value) for key, value in params.items()}
        super().__init__(code)

    def __str__(self) -> str:
        return render(self.message_id, self.params)

    @property
    def record(self) -> dict[str, Any]:
        """What a job row keeps: code, message and parameters (rendered again when shown)."""
        return {"code": self.code, "message_id": self.message_id, "params": self.params}


def _jsonable(value: Any) -> Any:
    if isinstance(value, RespaldoError):
        return {"message_id": value.message_id, "params": value.params}
    if value is None or isinstance(value, bool | int | float | str | dict):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


class ClinicNotFound(RespaldoError):
    """No such clinic (or the platform's own schema was named)."""


class ClinicBusy(RespaldoError):
    """The clinic already has a backup or restore waiting or running."""


class BackupRefused(RespaldoError):
    """A backup cannot be requested or failed for a reason a person can act on."""


class RestoreRefused(RespaldoError):
    """A restore cannot be requested, or was refused or rolled back; the clinic is unchanged."""


class UploadRefused(RespaldoError):
    """An uploaded file cannot become a backup; nothing was kept."""


_ARCHIVE_CODES = {
    "not_recognized",
    "wrong_key",
    "damaged",
    "tampered",
    "unpacked_too_large",
    "key_config",
    "media_changed",
}


# What the age library says of a damaged archive (backups/archive/reader.py), said in the
# reader's language; the other details of an archive error are a tool's words, kept as they are.
_DECRYPTION_DETAILS = {"encrypted data: ": "detail_encrypted_data", "encryption header: ": "detail_encryption_header"}


def as_respaldo_error(exc: BaseException) -> RespaldoError | None:
    """An error of the pipeline as a RespaldoError, or None for an unexpected one.

    The modules below the services (archive, storage, dumps, client tools, json payload)
    raise their own errors with a ``code`` class attribute: the code picks the translated
    sentence; their detail goes in as it is (a tool's own words, in English), or, for an
    error holding a ``message_id`` and ``params`` (the json format's), as that message,
    rendered in the reader's language when shown.
    """
    if isinstance(exc, RespaldoError):
        return exc
    code = getattr(type(exc), "code", None)
    if not isinstance(code, str):
        return None
    if code in _ARCHIVE_CODES or code == "archive_error":
        detail = getattr(exc, "detail", None)
        for prefix, message_id in _DECRYPTION_DETAILS.items():
            if detail and detail.startswith(prefix):  # the age library's words, in the reader's language
                return RespaldoError(code, detail=RespaldoError("detail", message_id))
        return RespaldoError(code, detail=f" ({detail})" if detail else "")
    message_id = getattr(exc, "message_id", None)
    if isinstance(message_id, str):  # a sentence of the catalogue (the json format's): rendered when shown
        return RespaldoError(code, detail={"message_id": message_id, "params": getattr(exc, "params", None) or {}})
    return RespaldoError(code, detail=str(exc))


@contextmanager
def translated() -> Iterator[None]:
    """A service's boundary: an error of the modules below it leaves as a RespaldoError.

    Used as ``@translated()`` on a service's public function (or ``with translated():``), so
    that its callers (the console, the API, the commands) only ever catch ``RespaldoError``.
    An error that carries a ``code`` (storage, archive, client tools, formats) is converted
    by :func:`as_respaldo_error`, chained to the original; anything else passes unchanged.
    The error raised is still an instance of the original class too (see :func:`_both`), so
    that a caller catching ``StorageError`` or ``KeyConfigError`` keeps working.
    """
    try:
        yield
    except RespaldoError:
        raise
    except Exception as exc:
        error = as_respaldo_error(exc)
        if error is None:
            raise
        raise _both(exc, error) from exc


_TRANSLATED_CLASSES: dict[type[Exception], type[RespaldoError]] = {}


def _both(original: Exception, error: RespaldoError) -> RespaldoError:
    """``error`` (its code, message and parameters) as an instance of ``original``'s class as well."""
    cls = type(original)
    both_class = _TRANSLATED_CLASSES.get(cls)
    if both_class is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
        both_class = _TRANSLATED_CLASSES[cls] = type(cls.__name__, (RespaldoError, cls), namespace)
    both = both_class.__new__(both_class, *error.args)
    both.__dict__.update(original.__dict__)
    both.__dict__.update(error.__dict__)
    return both


def failure_reason(exc: Exception) -> RespaldoError:
    """Why a job failed, from what it raised: an expected error as it is, anything else "unexpected"."""
    return as_respaldo_error(exc) or RespaldoError("unexpected", detail=f"{type(exc).__name__}: {exc}")
