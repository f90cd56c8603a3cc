"""The 413 reasons (docs/api.md §2 step 6, §4.4): a put or create-version body over the
limit is told about how large a value fits, from the app under any WSGI server and from
the HTTP front; other requests get the limit alone."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import pytest
import requests
from werkzeug.test import Client

from setec_core import Database
from setec_core.http import make_app
from setec_core.http.front import Front, Listener
from setec_core.http.status import too_large, value_capacity
from setec_core.testing import SUPERUSER, FixedAuthorizer, new_database

HEADERS = {"Content-Type": "application/json", "Sec-X-Tailscale-No-Browsers": "setec"}


@pytest.fixture
def db() -> Iterator[Database]:
    """A new in-memory database."""
    with new_database() as db:
        yield db


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        (
            1 << 20,
            "request body too large: the limit is 1048576 bytes (about 768 KiB of secret value)",
        ),
        (4096, "request body too large: the limit is 4096 bytes (about 3 KiB of secret value)"),
        (1000, "request body too large: the limit is 1000 bytes (about 750 bytes of secret value)"),
        (
            4 << 20,
            "request body too large: the limit is 4194304 bytes (about 3.0 MiB of secret value)",
        ),
        (
            64 << 20,
            "request body too large: the limit is 67108864 bytes (about 48 MiB of secret value)",
        ),
    ],
)
def test_reason_for_a_value_says_how_large_a_value_fits(limit: int, reason: str) -> None:
    """The reason for put and create-version gives the limit and three quarters of it
    (base64 takes four bytes for every three), in the unit a user thinks in."""
    assert too_large(limit, carries_value=True) == reason


def test_reason_without_a_value_is_the_limit_alone() -> None:
    """Requests that carry no value are told the limit only, as before."""
    assert too_large(16384) == "request body too large: the limit is 16384 bytes"


@pytest.mark.parametrize("limit", [4096, 1 << 20])
def test_value_capacity_is_close_to_what_fits(limit: int, db: Database) -> None:
    """A value a little under value_capacity fits in a put with a short name; one at it
    does not (the JSON around it takes a few dozen bytes), so it is "about"."""
    app = Client(make_app(db, FixedAuthorizer(SUPERUSER), max_request_bytes=limit))

    def put(size: int) -> int:
        body = {"Name": "n", "Value": base64.b64encode(b"x" * size).decode()}
        return app.post("/api/put", data=json.dumps(body), headers=HEADERS).status_code

    assert put(value_capacity(limit) - 30) == 200
    assert put(value_capacity(limit)) == 413


@pytest.mark.parametrize("chunked", [False, True])
def test_app_says_how_large_a_value_fits(db: Database, chunked: bool) -> None:
    """The app's own 413 (under a WSGI server other than the front), framed by
    Content-Length or chunked, carries the value hint on put and create-version."""
    app = Client(make_app(db, FixedAuthorizer(SUPERUSER), max_request_bytes=4096))
    value = base64.b64encode(b"x" * 5000).decode()
    for path, body in [
        ("/api/put", {"Name": "n", "Value": value}),
        ("/api/create-version", {"Name": "n", "Version": 5, "Value": value}),
    ]:
        data = json.dumps(body).encode()
        if chunked:
            response = app.post(
                path,
                input_stream=io.BytesIO(data),
                headers={**HEADERS, "Transfer-Encoding": "chunked"},
                environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
            )
        else:
            response = app.post(path, data=data, headers=HEADERS)
        assert (response.status_code, response.get_data(as_text=True)) == (
            413,
            "request body too large: the limit is 4096 bytes (about 3 KiB of secret value)\n",
        )


def test_front_says_how_large_a_value_fits(db: Database) -> None:
    """The front refuses a Content-Length over the limit before reading the body, with
    the app's reason: the value hint on put, the limit alone on get."""
    front = Front(
        make_app(db, FixedAuthorizer(SUPERUSER), max_request_bytes=8192),
        [Listener("127.0.0.1", 0)],
        threads=2,
    )
    url = front.start()[0]
    try:
        put = requests.post(
            f"{url}/api/put", data=b"{" + b" " * 9000 + b"}", headers=HEADERS, timeout=5
        )
        get = requests.post(
            f"{url}/api/get", data=b"{" + b" " * 20000 + b"}", headers=HEADERS, timeout=5
        )
    finally:
        front.stop()
    assert (put.status_code, put.text) == (
        413,
        "request body too large: the limit is 8192 bytes (about 6 KiB of secret value)\n",
    )
    assert (get.status_code, get.text) == (413, "request body too large: the limit is 8192 bytes\n")
