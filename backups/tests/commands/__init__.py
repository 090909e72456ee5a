"""Tests of the management commands (backups/management/)."""
