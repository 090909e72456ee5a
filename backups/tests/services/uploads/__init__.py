"""Tests of uploads becoming backups (backups/services/upload.py and the json reader it uses):
what is accepted, what is refused, and how refusals read."""
