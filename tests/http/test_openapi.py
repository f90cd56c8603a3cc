"""docs/openapi.yaml, the OpenAPI description of the HTTP API, is valid OpenAPI 3.1 and
true of the server: it has exactly the routes and methods the app serves, each request
schema has exactly the fields the server's decoder knows, the extensions it marks are
the ones ``/api/extensions`` lists, Go's fields agree with docs/api.md §4, and the real
server answers each endpoint's example as the spec says.

As endpoints and fields are added, these tests fail until the spec describes them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import Client

from setec_core import Database, wire
from setec_core.http import make_app
from setec_core.testing import SUPERUSER, FixedAuthorizer, new_database
from setec_core.testing.server import LocalServer
from setec_core.wire.extensions import FIELD_EXTENSIONS, offered
from setec_core.wire.request import FIELDS

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
#: The base URI the spec is registered under, so that its own "#/components/..."
#: references resolve when part of it is validated against.
SPEC_URI = "urn:setec:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
OPERATION_KEYS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
EXTENSION_KEY = "x-setec-extension"
GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
ENDPOINT_IDS = [e.name for e in wire.ENDPOINTS]

#: The state the spec's examples describe (the comment at the top of docs/openapi.yaml).
EXAMPLE_NAME = "prod/db/password"
EXAMPLE_VALUES = (b"hunter1", b"hunter2", b"hunter3")
EXAMPLE_ACTIVE = 2
#: Endpoints whose 200 example shows part of the real answer, not all of it: the
#: extensions this server offers grow, and the example names one.
PARTIAL_EXAMPLES = {"extensions"}
#: A time as the API writes it (RFC 3339 in UTC, Go's time.Time): examples show some
#: time, the server the time it is.
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")

#: The types docs/api.md §4 writes in its table of request bodies, as schema keywords.
WIRE_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "uint32": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "bool": {"type": "boolean"},
    "base64": {"type": "string", "contentEncoding": "base64"},
}


# --- reading the spec --------------------------------------------------------------


def join(pointer: str, *tokens: str) -> str:
    """``pointer`` with ``tokens`` appended, escaped as JSON Pointer needs."""
    return pointer + "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def node(pointer: str) -> Any:
    """The part of the spec at JSON Pointer ``pointer``."""
    found: Any = SPEC
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        found = found[int(token)] if isinstance(found, list) else found[token]
    return found


def follow(pointer: str) -> str:
    """``pointer``, or where the chain of ``$ref`` starting there ends."""
    while isinstance(target := node(pointer), dict) and "$ref" in target:
        ref = target["$ref"]
        assert ref.startswith("#/"), f"{pointer}: only local references are expected"
        pointer = ref[1:]
    return pointer


def validator(pointer: str) -> Draft202012Validator:
    """A JSON Schema validator for the schema at ``pointer``."""
    return Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=REGISTRY)


def operation(path: str, method: str = "post") -> str:
    """The pointer of the operation ``method`` of ``path``."""
    return join("/paths", path, method)


def request_media(path: str) -> str:
    """The pointer of an API operation's ``application/json`` request body."""
    body = follow(join(operation(path), "requestBody"))
    return join(body, "content", "application/json")


def request_schema(path: str) -> str:
    """The pointer of an API operation's request body schema, references followed."""
    return follow(join(request_media(path), "schema"))


def walk(value: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Every object of the spec, with its pointer."""
    if isinstance(value, dict):
        yield pointer, value
        for key, item in value.items():
            yield from walk(item, join(pointer, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, join(pointer, str(i)))


def seed_examples(db: Database) -> None:
    """Put ``db`` in the state the spec's examples describe."""
    for value in EXAMPLE_VALUES:
        db.put(SUPERUSER, EXAMPLE_NAME, value)
    db.activate(SUPERUSER, EXAMPLE_NAME, EXAMPLE_ACTIVE)


def put_aside(db: Database) -> None:
    """Delete the examples' secret under a recovery window, so that it is pending
    deletion (the state of the recoverable-delete examples)."""
    db.recovery_window = 7 * 24 * 3600
    db.delete(SUPERUSER, EXAMPLE_NAME)


#: What an endpoint's example needs besides :func:`seed_examples`, by endpoint name.
EXAMPLE_SETUP = {"undelete": put_aside, "list-deleted": put_aside}


def without_times(value: Any) -> Any:
    """``value`` with every time string replaced by one placeholder."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    if isinstance(value, str) and TIME.fullmatch(value):
        return "<time>"
    return value


def section_4_requests() -> dict[str, dict[str, str]]:
    """docs/api.md §4's table of request bodies: path -> field -> type."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## 4 Endpoints\n", 1)[1].split("\n### 4.1 ", 1)[0]
    rows = re.findall(r"^\| `(/api/[a-z-]+)` \| `(\{.*?\})` \|", section, re.M)
    return {path: dict(re.findall(r'"(\w+)": (\w+)', body)) for path, body in rows}


@pytest.fixture(scope="module")
def routes() -> dict[str, set[str]]:
    """What the app routes: path -> the methods it accepts there (lower case)."""
    with new_database() as db:
        app = make_app(db, FixedAuthorizer(SUPERUSER))
        return {path: {m.lower() for m in r.methods} for path, r in app.url_map.items()}


# --- the file --------------------------------------------------------------------------


def test_spec_is_valid_openapi_3_1() -> None:
    """docs/openapi.yaml is a valid OpenAPI 3.1 document."""
    assert str(SPEC["openapi"]).startswith("3.1.")
    validate(SPEC)


def test_examples_match_their_schemas() -> None:
    """Every example in the spec, of a request or an answer, fits the schema beside it."""
    checked = 0
    for pointer, obj in walk(SPEC):
        if "schema" in obj and "example" in obj:
            validator(join(pointer, "schema")).validate(obj["example"])
            checked += 1
        if pointer.startswith("/components/schemas/") and "examples" in obj:
            for example in obj["examples"]:
                validator(pointer).validate(example)
                checked += 1
    assert checked > len(wire.ENDPOINTS)


# --- routes -----------------------------------------------------------------------------


def test_every_route_is_described(routes: dict[str, set[str]]) -> None:
    """Every path the app routes is in the spec with exactly the methods it accepts, and
    the spec has no path the app does not route."""
    described = {
        path: {key for key in item if key in OPERATION_KEYS} for path, item in SPEC["paths"].items()
    }
    assert described == routes


def test_every_endpoint_is_routed(routes: dict[str, set[str]]) -> None:
    """The API paths of the spec are exactly the endpoints of setec_core.wire, and the
    app routes each with POST alone."""
    api_paths = {path for path in SPEC["paths"] if path.startswith("/api/")}
    assert api_paths == {e.path for e in wire.ENDPOINTS}
    assert all(routes[e.path] == {"post"} for e in wire.ENDPOINTS)


# --- requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=ENDPOINT_IDS)
def test_request_fields_are_the_decoders(endpoint: wire.Endpoint[Any, Any]) -> None:
    """An endpoint's request schema has exactly the fields its request class decodes,
    under their wire names."""
    decoded = {FIELDS[f.name].wire for f in dataclasses.fields(endpoint.request)}
    described = set(node(request_schema(endpoint.path)).get("properties", {}))
    assert described == decoded


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=ENDPOINT_IDS)
def test_request_needs_the_browser_guard(endpoint: wire.Endpoint[Any, Any]) -> None:
    """Every API operation requires the browser guard header, and a JSON body."""
    op = node(operation(endpoint.path))
    headers = [
        node(follow(join(operation(endpoint.path), "parameters", str(i))))
        for i in range(len(op["parameters"]))
    ]
    guard = [
        p for p in headers if p["in"] == "header" and p["name"] == "Sec-X-Tailscale-No-Browsers"
    ]
    assert len(guard) == 1
    assert guard[0]["required"] is True
    assert guard[0]["schema"]["const"] == "setec"
    body = node(follow(join(operation(endpoint.path), "requestBody")))
    assert body["required"] is True
    assert list(body["content"]) == ["application/json"]


def test_go_fields_agree_with_section_4() -> None:
    """Go's endpoints take the fields docs/api.md §4's table lists, with its types; every
    other field of theirs is marked as an extension the server lists in
    FIELD_EXTENSIONS."""
    table = section_4_requests()
    go = {e.path for e in wire.ENDPOINTS if e.extension is None}
    assert set(table) == go
    for path, fields in table.items():
        schema = request_schema(path)
        properties = {
            name: node(follow(join(schema, "properties", name)))
            for name in node(schema).get("properties", {})
        }
        unmarked = {name for name, prop in properties.items() if EXTENSION_KEY not in prop}
        assert unmarked == set(fields), path
        for name in set(properties) - unmarked:
            assert properties[name][EXTENSION_KEY] in offered(wire.ENDPOINTS), f"{path} {name}"
        for name, kind in fields.items():
            prop = node(follow(join(schema, "properties", name)))
            assert WIRE_TYPES[kind].items() <= prop.items(), f"{path} {name}"


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=ENDPOINT_IDS)
def test_go_field_names_keep_their_types(endpoint: wire.Endpoint[Any, Any]) -> None:
    """A field named as one of Go's (Name, Version, UpdateIfChanged, Value) has Go's type
    in every request, ours included."""
    kinds: dict[str, str] = {}
    for fields in section_4_requests().values():
        kinds.update(fields)
    schema = request_schema(endpoint.path)
    for name in set(node(schema).get("properties", {})) & set(kinds):
        prop = node(follow(join(schema, "properties", name)))
        assert WIRE_TYPES[kinds[name]].items() <= prop.items(), name


# --- extensions -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=ENDPOINT_IDS)
def test_extension_marks_the_endpoint(endpoint: wire.Endpoint[Any, Any]) -> None:
    """An operation beyond Go carries ``x-setec-extension``, its Endpoint's extension,
    and the tag ``beyond-go``; Go's carry neither."""
    op = node(operation(endpoint.path))
    assert op.get(EXTENSION_KEY) == endpoint.extension
    assert ("beyond-go" in op["tags"]) == (endpoint.extension is not None)


def test_every_extension_is_described() -> None:
    """The extensions the spec marks are exactly those /api/extensions lists, and every
    field-level extension marks at least one field."""
    on_operations = set()
    on_fields = set()
    for pointer, obj in walk(SPEC):
        if EXTENSION_KEY in obj:
            on_operations_here = pointer.split("/")[-1] in OPERATION_KEYS
            (on_operations if on_operations_here else on_fields).add(obj[EXTENSION_KEY])
    assert on_operations == {e.extension for e in wire.ENDPOINTS if e.extension}
    assert on_operations | on_fields == set(offered(wire.ENDPOINTS))
    assert set(FIELD_EXTENSIONS) <= on_fields


# --- answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=ENDPOINT_IDS)
def test_example_answers_as_described(endpoint: wire.Endpoint[Any, Any], db: Database) -> None:
    """The real app answers each endpoint's request example 200, with the media type,
    headers and body schema the spec gives, and the spec's example answer."""
    seed_examples(db)
    EXAMPLE_SETUP.get(endpoint.name, lambda db: None)(db)
    client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
    example = node(request_media(endpoint.path))["example"]
    response = client.post(endpoint.path, data=json.dumps(example), headers=GUARD)
    assert response.status_code == 200, response.text

    ok = follow(join(operation(endpoint.path), "responses", "200"))
    (media_type,) = node(ok)["content"]
    assert response.mimetype == media_type
    body = json.loads(response.data)
    validator(join(ok, "content", media_type, "schema")).validate(body)
    for name in node(ok).get("headers", {}):
        header = follow(join(ok, "headers", name))
        if node(header).get("required"):
            assert name in response.headers
        if name in response.headers:
            validator(join(header, "schema")).validate(response.headers[name])

    expected = node(join(ok, "content", media_type)).get("example")
    if endpoint.name in PARTIAL_EXAMPLES:
        assert set(expected["Extensions"]) <= set(body["Extensions"])
    else:
        assert without_times(body) == without_times(expected)


# --- the server against the spec --------------------------------------------------------

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)


@pytest.fixture(scope="module")
def example_server() -> Iterator[LocalServer]:
    """A real server on loopback holding the examples' secret, whose watches wait at
    most 0.2 s (a generated ``Timeout`` would otherwise hold a request for a minute)."""
    with LocalServer(app_options={"watch_timeout_cap": 0.2}) as server:
        seed_examples(server.db)
        yield server


@SCHEMA.parametrize()
@settings(
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_server_conforms(case: schemathesis.Case, example_server: LocalServer) -> None:
    """Requests generated from the spec get no 5xx, and only statuses, media types,
    headers and bodies the spec describes."""
    case.call_and_validate(
        base_url=example_server.url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )
