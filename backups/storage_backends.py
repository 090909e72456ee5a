"""Kept for settings that name ``backups.storage_backends.BackupS3Storage``: it lives in ``backups.storage.s3``."""

from backups.storage.s3 import BackupS3Storage as BackupS3Storage
