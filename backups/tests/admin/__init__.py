"""Tests of the consoles (backups/admin/) through Django's test client: the clinic's console
and the platform's pages."""
