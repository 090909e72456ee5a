"""Fixtures for the operations tests: a real HTTP receiver of webhooks, the deliveries queued."""

from __future__ import annotations

import pytest

from backups.operations import webhooks
from backups.tests.operations.helpers import Receiver


@pytest.fixture
def receiver(settings):
    """A real HTTP receiver of webhooks on 127.0.0.1, allowed as a destination for this test."""
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Deliveries handed to the workers (recorded instead of queued in django-q2)."""
    ids: list[int] = []
    monkeypatch.setattr(webhooks, "enqueue", ids.append)
    return ids
