"""Check real API responses against the OpenAPI document the API serves (``backups.api.openapi``)."""

from __future__ import annotations

import json
import re

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from backups.api.openapi import document

SPEC = document()
_REGISTRY = Registry().with_resource("urn:respaldo-api", Resource.from_contents(SPEC, DRAFT202012))


def operation_for(method: str, path: str) -> tuple[str, dict]:
    """The documented operation that serves ``method path`` (a real path, ids and all)."""
    path = path.split("?")[0].rstrip("/") + "/"
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\{[a-z_]+\}", "[0-9]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def check(response, method: str, path: str) -> str:
    """Assert the response's status is documented for the operation and its JSON body matches; its operationId."""
    template, operation = operation_for(method, path)
    status = str(response.status_code)
    documented = operation["responses"]
    assert status in documented, f"{method} {template} answered {status}, not documented ({sorted(documented)})"
    content = documented[status].get("content", {})
    if "application/json" in content:
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        schema = content["application/json"]["schema"]
        if "$ref" in schema:
            schema = {"$ref": "urn:respaldo-api" + schema["$ref"]}
        validator = Draft202012Validator(schema, registry=_REGISTRY)
        body = json.loads(response.content)
        errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(error.path)}: {error.message}" for error in errors[:5]
        )
    return operation["operationId"]


def operation_ids() -> set[str]:
    return {op["operationId"] for item in SPEC["paths"].values() for key, op in item.items() if key != "parameters"}
