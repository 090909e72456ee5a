"""Helpers shared by the clinics' and dental tests."""

from conftest import host_client


def logged_in(host: str, username: str, password: str):
    """A test client of ``host`` logged in as ``username``."""
    client = host_client(host)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    assert response.status_code == 302, f"{username} could not log in at {host}"
    return client
