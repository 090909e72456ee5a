"""Tests of the archive keys: the platform's (backups/keys.py) and each clinic's (backups/clinic_keys.py)."""
