"""Test fixtures shared by every app.

The test database is a real PostgreSQL (embedded, or ``DATABASE_URL``). At session start
it gets the demo platform and two small demo clinics, committed, so tests can use them
inside their own rolled-back transactions.
"""

import pytest
from django.db import connection
from django.test import Client

from clinics.demo import seed_demo

DEMO_PATIENTS = 8


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        seed_demo(clinics=2, patients=DEMO_PATIENTS)
    yield


@pytest.fixture(autouse=True)
def _public_schema_after_test():
    """A test that enters a clinic's schema must not leak it into the next test."""
    yield
    if connection.connection is not None:
        connection.set_schema_to_public()


def host_client(host: str) -> Client:
    """A test client whose requests go to ``host`` (a clinic's domain or the platform's)."""
    return Client(HTTP_HOST=host)


@pytest.fixture
def clinic_client(db):
    """Client for the ``clinica`` demo clinic."""
    return host_client("clinica.localhost")


@pytest.fixture
def platform_client(db):
    """Client for the platform (public schema)."""
    return host_client("localhost")
