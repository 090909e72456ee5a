"""Tests of the archive keys: the deployment's (backups/keys/deployment.py) and each clinic's
(backups/keys/clinic.py)."""
