"""Malformed input never makes the API answer HTML or 500: every bad parameter or body is a JSON 400.

The named cases come from the security review (an impossible date, extreme date-times, a NUL
in a search, a deeply nested body); Hypothesis then throws arbitrary query strings at every
GET route of the OpenAPI document and arbitrary JSON at every JSON body.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from backups import storage
from backups.models import Restore
from backups.tests.api.openapi_check import SPEC
from backups.tests.helpers import API, api, clinica_tables, error_of, fake_backup, make_token

pytestmark = pytest.mark.django_db

FUZZ = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture
def client(settings):
    settings.BACKUPS_API_REQUESTS_PER_MINUTE = settings.BACKUPS_API_CLINIC_REQUESTS_PER_MINUTE = 1_000_000
    return api(make_token())


@pytest.fixture
def ids():
    name = f"clinics/clinica/inputs-{uuid.uuid4().hex}.respaldo"
    storage.store_bytes(name, b"bytes")
    backup = fake_backup(manifest={"tables": clinica_tables()}, storage_name=name)
    restore = Restore.objects.create(clinic=backup.clinic, backup=backup, status="failed", requested_by="admin")
    return {"backup_id": backup.pk, "restore_id": restore.pk}


def url_of(path: str, ids: dict[str, int]) -> str:
    return path.replace("{backup_id}", str(ids["backup_id"])).replace("{restore_id}", str(ids["restore_id"]))


def assert_json_answer(response, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.content[:300]!r}"
    assert response["Content-Type"].startswith("application/json") or response.status_code in (200, 302), where
    if response.status_code == 400:
        assert response.json()["error"]["code"].startswith(("api_", "restore_", "unknown")), where


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-13-45",
        "until=2026-02-30",
        "since=2026-12-07T25:61:00",
        "since=0001-01-01",
        "until=9999-12-31T23:59:59.999999",
        "since=9999-12-31T23:59:59-23:59",
        "since=0001-01-01T00:00:00%2B23:59",
        "since=99999-01-01",
        "q=%00",
        "q=abc%00def",
        "status=%00",
        "page=%00",
        "page=99999999999999999999999",
        "page_size=-1",
    ],
)
def test_each_malformed_parameter_is_a_json_400(client, query):
    response = client.get(f"{API}/backups/?{query}")
    assert error_of(response) == (400, "api_bad_parameter"), response.content


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"confirm": "clinica\\u0000"}',
        b'{"note": "\\ud800"}',
        b"\xff\xfe not utf-8",
        b'{"note": "' + b"x" * 200_000 + b'"}',
    ],
    ids=["deep-list", "deep-object", "nul", "lone-surrogate", "not-utf8", "huge"],
)
def test_each_malformed_body_is_a_json_400(client, ids, body):
    for path in (f"{API}/backups/", f"{API}/backups/{ids['backup_id']}/restore/"):
        response = client.generic("POST", path, body, content_type="application/json")
        assert response.status_code == 400, (path, response.status_code, response.content[:200])
        assert response.json()["error"]["code"] in ("api_bad_json", "api_invalid"), response.content


GET_PATHS = [path for path, item in SPEC["paths"].items() if "get" in item]
NAMES = sorted(
    {
        p["name"]
        for item in SPEC["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for p in op.get("parameters", [])
        if p.get("in") == "query"
    }
)
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
VALUES = st.one_of(
    TEXT,
    st.integers().map(str),
    st.datetimes().map(lambda moment: moment.isoformat()),
    st.dates().map(str),
    st.sampled_from(["9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00", "2026-00-00", "\x00", "1e400"]),
)
QUERIES = st.dictionaries(st.one_of(st.sampled_from(NAMES), TEXT), VALUES, max_size=5)


@pytest.mark.parametrize("path", GET_PATHS)
def test_any_query_string_on_every_get_route_is_answered_in_json(client, ids, path):
    url = url_of(path, ids)

    @FUZZ
    @given(query=QUERIES)
    def check(query):
        response = client.get(url, query)
        assert_json_answer(response, f"GET {url} {query!r}")

    check()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {}, optional={"confirm": JSON_VALUES, "format": JSON_VALUES, "note": JSON_VALUES, "accept_emptied": JSON_VALUES}
    ),
)


def test_any_json_body_on_every_action_is_answered_in_json(client, ids):
    targets = [
        f"{API}/backups/",
        f"{API}/backups/{ids['backup_id']}/restore/",
        f"{API}/backups/{ids['backup_id']}/link/",
    ]

    @FUZZ
    @given(body=BODIES, target=st.sampled_from(targets))
    def check(body, target):
        response = client.generic("POST", target, json.dumps(body), content_type="application/json")
        assert_json_answer(response, f"POST {target} {body!r}")

    check()
