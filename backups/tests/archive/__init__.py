"""Tests of the archive format (backups/archive/) and of its document, docs/archive-format.md."""
