"""The committed OpenAPI document is the one the code generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.contacts.service import ContactRejected, contact_message
from app.errors import PROBLEM_JSON
from app.main import create_app
from app.openapi import render
from tests.helpers import Documented

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_openapi_document_is_up_to_date() -> None:
    assert DOCUMENT.exists(), "run `make openapi` to generate openapi/openapi.json"
    assert DOCUMENT.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_every_operation_is_in_a_declared_section() -> None:
    document = create_app().openapi()
    declared = [tag["name"] for tag in document["tags"]]
    used = {
        tag for path in document["paths"].values() for op in path.values() for tag in op["tags"]
    }
    assert used == set(declared)


def test_every_error_answer_is_documented_as_a_problem() -> None:
    document = create_app().openapi()
    errors = {
        f"{method.upper()} {path} {status}": response["content"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    }
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert len(errors) > 100  # every operation's
    assert {name: problem for name in errors} == errors
    schemas = document["components"]["schemas"]
    required = {"type", "title", "status", "detail", "code", "message"}
    assert required <= set(schemas["Problem"]["required"])
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 body, which is not sent


def _answer(method: str, path: str, status: int, media_type: str, body: bytes) -> httpx.Response:
    request = httpx.Request(method, "http://percorso.test" + path)
    headers = {"content-type": media_type}
    return httpx.Response(status, headers=headers, content=body, request=request)


_PROBLEM_404 = (
    b'{"type": "https://percorso.dev/problems/not-found", "title": "t", "status": 404,'
    b' "detail": "d", "code": "not-found", "message": "d"}'
)
# As answered before `code` and `message`, which tracking libraries read.
_UNCODED_404 = b'{"type": "t/not-found", "title": "t", "status": 404, "detail": "d"}'


async def test_the_tests_check_each_answer_against_the_document() -> None:
    """The test clients' check (tests.helpers.Documented), against this app's document."""
    check = Documented(create_app().openapi()).check
    customer = "/v1/customers/0b7e0c6c-3d0e-4d43-9c3e-8d0d5f8f8f8f"
    await check(_answer("GET", customer, 404, PROBLEM_JSON, _PROBLEM_404))
    await check(_answer("GET", "/v1/customers/lookup", 200, "application/json", b"{}"))
    await check(_answer("GET", "/nowhere", 404, "text/plain", b""))  # no operation: unchecked
    await check(_answer("OPTIONS", "/v1/track", 204, "text/plain", b""))  # a CORS preflight
    wrong = [
        (_answer("GET", customer + "/journey", 409, PROBLEM_JSON, b"{}"), "not documented"),
        (_answer("GET", customer, 404, "application/json", _PROBLEM_404), "as application/json"),
        (_answer("GET", customer, 404, PROBLEM_JSON, b'{"status": 404}'), "answered 404"),
        (_answer("GET", customer, 404, PROBLEM_JSON, _UNCODED_404), "answered 404"),
        (_answer("GET", "/v1/customers/lookup", 200, "text/html", b""), "as text/html"),
    ]
    for response, message in wrong:
        with pytest.raises(AssertionError, match=message):
            await check(response)


def test_operations_taking_a_write_key_declare_it() -> None:
    """As HTTP Basic or X-Write-Key, or (the empty alternative) in the request itself; the
    operations that take none, or a read token, declare no write key."""
    document = create_app().openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["WriteKey"]["type"] == "http"
    assert schemes["WriteKey"]["scheme"] == "basic"
    assert (schemes["WriteKeyHeader"]["in"], schemes["WriteKeyHeader"]["name"]) == (
        "header",
        "X-Write-Key",
    )
    declared = {
        f"{method.upper()} {path}": operation.get("security")
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    writes = {
        name
        for name in declared
        if name.startswith("POST ") and "tracking" in _tags(document, name)
    } | {"POST /v1/contacts", "GET /sourceConfig/"}
    assert len(writes) == 18  # 6 calls, their short paths, 3 batch paths, the beacon, 2 more
    either = [{"WriteKey": []}, {"WriteKeyHeader": []}, {}]
    assert {name: declared[name] for name in writes} == dict.fromkeys(writes, either)
    others = {str(declared[name]) for name in set(declared) - writes}
    assert others == {"None", str([{"HTTPBearer": []}])}


def _tags(document: dict[str, Any], name: str) -> list[str]:
    method, path = name.split(" ", 1)
    tags: list[str] = document["paths"][path][method.lower()]["tags"]
    return tags


def test_a_contact_is_documented_as_the_api_checks_it() -> None:
    """Its fields (no reference left dangling), no others, and at least one of the
    identifiers that `contact_message` asks for: each one alone makes a valid contact."""
    document = create_app().openapi()
    body = document["paths"]["/v1/contacts"]["post"]["requestBody"]["content"]
    contact = body["application/json"]["schema"]["properties"]["contacts"]["items"]
    assert "$ref" not in str(contact)
    assert contact["additionalProperties"] is False
    assert contact["properties"]["external_ids"]["items"]["required"] == ["id", "type"]
    alone = {
        "crm_id": "CRM-1",
        "email": "ada@example.com",
        "phone": "+39 333 123 4567",
        "external_ids": [{"id": "LC-1", "type": "loyalty_card"}],
    }
    assert [rule["required"] for rule in contact["anyOf"]] == [[name] for name in alone]
    for name, value in alone.items():
        contact_message({name: value})  # valid
    with pytest.raises(ContactRejected):
        contact_message({"traits": {"name": "Nobody"}})
