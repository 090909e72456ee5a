"""Tests of the operations (backups/operations/): drills, retention, schedules, notifications,
webhooks, health, trends, the worker."""
