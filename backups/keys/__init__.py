"""The archive keys: the deployment's (``deployment``) and each clinic's (``clinic``).

* ``backups.keys.deployment`` -- the deployment's keys, read from configuration at call time:
  the one that encrypts new archives (and wraps clinic keys) and the old ones that only open.
* ``backups.keys.clinic`` -- one key per clinic, stored wrapped in the backup storage, so
  that erasing it makes every copy of the clinic's archives unreadable (crypto-erasure).

This package re-exports the deployment names only: importing ``backups.keys`` loads no
Django model. Import the per-clinic functions from ``backups.keys.clinic``.
"""

from backups.keys.deployment import (
    DEV_KEY_HEADER,
    archive_identities,
    check_key_configuration,
    development_key_in_use,
    encryption_identity,
    old_identities,
)

__all__ = [
    "DEV_KEY_HEADER",
    "archive_identities",
    "check_key_configuration",
    "development_key_in_use",
    "encryption_identity",
    "old_identities",
]
