"""Tests of the JSON API (backups/api/), each answer checked against its OpenAPI document (openapi_check.py)."""
