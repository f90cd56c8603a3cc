"""Request decoding and response encoding, rule by rule (docs/api.md §3)."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from setec_core import MAX_VERSION, InvalidRequestError, SecretInfo, SecretValue
from setec_core.errors import ResponseError
from setec_core.http.status import status_for
from setec_core.wire import (
    ENDPOINTS,
    SENTINELS,
    BadRequestError,
    CreateVersionRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    VersionRequest,
    decode,
    encode_request,
    sentinel_error,
)
from setec_core.wire import reply as replies

KINDS: list[type[Any]] = [
    ListRequest,
    NameRequest,
    GetRequest,
    PutRequest,
    VersionRequest,
    CreateVersionRequest,
]

# --- Accepted bodies -------------------------------------------------------------------

ACCEPTED = [
    # Keys: matched case-insensitively, by Go's Unicode simple folding.
    pytest.param(
        b'{"Name":"a","Version":3,"UpdateIfChanged":true}',
        GetRequest("a", 3, True),
        id="exact-case-keys",
    ),
    pytest.param(b'{"name":"a"}', NameRequest("a"), id="lower-case-key"),
    pytest.param(b'{"NAME":"a"}', NameRequest("a"), id="upper-case-key"),
    pytest.param(b'{"nAmE":"a","vErSiOn":2}', VersionRequest("a", 2), id="mixed-case-keys"),
    pytest.param(b'{"updateifchanged":true}', GetRequest(update_if_changed=True), id="lower-flag"),
    pytest.param(b'{"value":"YQ=="}', PutRequest(value=b"a"), id="lower-value-key"),
    pytest.param(b'{"N\\u0061me":"a"}', NameRequest("a"), id="escaped-key"),
    pytest.param('{"Ver\u017fion":5}'.encode(), VersionRequest(version=5), id="long-s-folds-to-s"),
    pytest.param(
        '{"Update\u0131fChanged":true}'.encode(), GetRequest(), id="dotless-i-does-not-fold"
    ),
    # Duplicates: every matching key is applied in order, so the last one wins.
    pytest.param(b'{"Name":"a","Name":"b"}', NameRequest("b"), id="duplicate-last-wins"),
    pytest.param(b'{"Name":"a","name":"b"}', NameRequest("b"), id="folded-duplicate-last"),
    pytest.param(b'{"name":"b","Name":"a"}', NameRequest("a"), id="exact-duplicate-last"),
    pytest.param(b'{"Version":1,"VERSION":2}', VersionRequest(version=2), id="version-dup"),
    # null: leaves a string, number or bool as it was; sets the byte slice to empty.
    pytest.param(b'{"Name":"a","name":null}', NameRequest("a"), id="null-keeps-name"),
    pytest.param(b'{"Version":5,"Version":null}', VersionRequest(version=5), id="null-keeps-v"),
    pytest.param(
        b'{"UpdateIfChanged":true,"UpdateIfChanged":null}',
        GetRequest(update_if_changed=True),
        id="null-keeps-flag",
    ),
    pytest.param(b'{"Value":"YQ==","value":null}', PutRequest(), id="null-clears-value"),
    pytest.param(
        b'{"Name":null,"Version":null,"UpdateIfChanged":null}', GetRequest(), id="null-fields"
    ),
    pytest.param(b'{"Value":null}', CreateVersionRequest(), id="null-value"),
    # Unknown keys are ignored, whatever they hold.
    pytest.param(
        b'{"Name":"a","Other":[1,{"x":null}],"Nombre":"\\u00ff"}',
        NameRequest("a"),
        id="unknown-keys",
    ),
    pytest.param(b'{"Extra":1.5e999}', NameRequest(), id="unknown-huge-float"),
    pytest.param(b'{"Extra":' + b"9" * 10_000 + b"}", NameRequest(), id="unknown-huge-int"),
    pytest.param(b'{"Value":"YQ=="}', GetRequest(), id="field-of-another-request"),
    pytest.param(b'{"Name":1,"Version":"x","Value":true}', ListRequest(), id="list-ignores-all"),
    # Missing fields and a top-level null give zero values.
    pytest.param(b"{}", GetRequest(), id="empty-object"),
    pytest.param(b"{}", CreateVersionRequest(), id="empty-object-create"),
    pytest.param(b"{}", ListRequest(), id="list-empty-object"),
    pytest.param(b"null", PutRequest(), id="top-level-null"),
    pytest.param(b"null", ListRequest(), id="list-null"),
    # Whitespace before the value; only the first value is read.
    pytest.param(b' \t\r\n{"Name":"a"}', NameRequest("a"), id="leading-whitespace"),
    pytest.param(b'{ "Name" : "a" }\n', NameRequest("a"), id="inner-trailing-whitespace"),
    pytest.param(b'{"Name":"x"} junk', NameRequest("x"), id="trailing-junk"),
    pytest.param(b'{"Name":"x"}{"Name":"y"}', NameRequest("x"), id="second-value-ignored"),
    pytest.param(b'{"Name":"x"}\xff\xfe', NameRequest("x"), id="trailing-invalid-utf8"),
    pytest.param(b"nullx", NameRequest(), id="null-then-junk"),
    # Version: an integer in uint32 range.
    pytest.param(b'{"Version":0}', VersionRequest(), id="version-zero"),
    pytest.param(b'{"Version":4294967295}', VersionRequest(version=MAX_VERSION), id="version-max"),
    # UpdateIfChanged: a boolean.
    pytest.param(b'{"UpdateIfChanged":false}', GetRequest(), id="flag-false"),
    # Name: any string, raw UTF-8 or escaped.
    pytest.param('{"Name":"café/ü"}'.encode(), NameRequest("café/ü"), id="name-raw-utf8"),
    pytest.param(b'{"Name":"caf\\u00e9"}', NameRequest("café"), id="name-escaped"),
    pytest.param(b'{"Name":"\\ud83d\\ude00"}', NameRequest("\U0001f600"), id="surrogate-pair"),
    pytest.param(b'{"Name":"a<b>&c"}', NameRequest("a<b>&c"), id="name-html-chars"),
    pytest.param(b'{"Name":""}', NameRequest(""), id="name-empty"),
    # Value: standard padded base64; CR and LF skipped; or an array of octets.
    pytest.param(b'{"Value":""}', PutRequest(), id="value-empty"),
    pytest.param(b'{"Value":"YQ=="}', PutRequest(value=b"a"), id="value-two-pad"),
    pytest.param(b'{"Value":"YWI="}', PutRequest(value=b"ab"), id="value-one-pad"),
    pytest.param(b'{"Value":"YWJj"}', PutRequest(value=b"abc"), id="value-no-pad-needed"),
    pytest.param(b'{"Value":"//4="}', PutRequest(value=b"\xff\xfe"), id="value-std-alphabet"),
    pytest.param(b'{"Value":"YW\\r\\nJj\\n"}', PutRequest(value=b"abc"), id="value-crlf"),
    pytest.param(b'{"Value":"YQ=\\n="}', PutRequest(value=b"a"), id="value-lf-in-padding"),
    pytest.param(b'{"Value":"\\n"}', PutRequest(), id="value-only-lf"),
    pytest.param(b'{"Value":"YQ\\u003d\\u003d"}', PutRequest(value=b"a"), id="value-escaped"),
    pytest.param(b'{"Value":"YR=="}', PutRequest(value=b"a"), id="value-nonzero-pad-bits"),
    pytest.param(b'{"Value":[97,98,99]}', PutRequest(value=b"abc"), id="value-octet-array"),
    pytest.param(b'{"Value":[0,255]}', PutRequest(value=b"\x00\xff"), id="value-octet-bounds"),
    pytest.param(b'{"Value":[]}', PutRequest(), id="value-empty-array"),
    pytest.param(b'{"Value":[1,null,3]}', PutRequest(value=b"\x01\x00\x03"), id="value-null-0"),
    pytest.param(
        b'{"Name":"n","Version":7,"Value":"c2VjcmV0"}',
        CreateVersionRequest("n", 7, b"secret"),
        id="create-version",
    ),
]


@pytest.mark.parametrize(("body", "expected"), ACCEPTED)
def test_decode_accepts(body: bytes, expected: object) -> None:
    """Go's decoder accepts this body and yields exactly these fields (docs/api.md §3)."""
    assert decode(body, type(expected)) == expected


# --- Rejected bodies -------------------------------------------------------------------

VERSION_RULE = '"Version" must be an integer from 0 to 4294967295'
BASE64_RULE = '"Value" must be standard base64 with padding'
BYTES_RULE = '"Value" must be a base64 string or an array of integers from 0 to 255'

REJECTED = [
    # Empty, or not one JSON value.
    pytest.param(b"", NameRequest, "body is empty", id="empty"),
    pytest.param(b" \t\r\n", NameRequest, "body is empty", id="whitespace-only"),
    pytest.param(b"\x0c{}", NameRequest, "not valid JSON (line 1 column 1)", id="form-feed"),
    pytest.param(b"\xef\xbb\xbf{}", NameRequest, "not valid JSON", id="byte-order-mark"),
    pytest.param(b'{"Name":"x"', NameRequest, "not valid JSON (line 1 column 12)", id="unclosed"),
    pytest.param(b'{"Name" "x"}', NameRequest, "not valid JSON (line 1 column 9)", id="no-colon"),
    pytest.param(b"{'Name':'x'}", NameRequest, "not valid JSON", id="single-quotes"),
    pytest.param(b'{"Name":"x",}', NameRequest, "not valid JSON", id="trailing-comma"),
    pytest.param(b'{\n"Name":\n}', NameRequest, "not valid JSON (line 3 column 1)", id="line-no"),
    pytest.param(b"nul", NameRequest, "not valid JSON", id="truncated-null"),
    pytest.param(b'{"Name":"a\x01"}', NameRequest, "not valid JSON", id="raw-control-char"),
    pytest.param(b'{"Name":"\\x"}', NameRequest, "not valid JSON", id="bad-escape"),
    pytest.param(b'{"Name":"\\u12"}', NameRequest, "not valid JSON", id="short-u-escape"),
    pytest.param(b'{"Extra":NaN}', NameRequest, "NaN and Infinity", id="nan"),
    pytest.param(b'{"Extra":Infinity}', NameRequest, "NaN and Infinity", id="infinity"),
    pytest.param(b'{"Version":-Infinity}', VersionRequest, "NaN and Infinity", id="-infinity"),
    pytest.param(b"[" * 100_000, NameRequest, "nested too deeply", id="deep-arrays"),
    pytest.param(b'{"a":' * 100_000, NameRequest, "nested too deeply", id="deep-objects"),
    # Invalid UTF-8 anywhere in the value.
    pytest.param(b'{"Name":"\xff"}', NameRequest, "not valid UTF-8", id="utf8-bad-byte"),
    pytest.param(b'{"\xc3\x28":1}', NameRequest, "not valid UTF-8", id="utf8-bad-key"),
    pytest.param(b'{"Name":"\xc0\xaf"}', NameRequest, "not valid UTF-8", id="utf8-overlong"),
    pytest.param(b'{"Name":"\xed\xa0\x80"}', NameRequest, "not valid UTF-8", id="utf8-surrogate"),
    pytest.param(b'{"Name":"\xe2\x82"}', NameRequest, "not valid UTF-8", id="utf8-truncated"),
    # The top level must be an object (or null), for list too.
    pytest.param(b"[]", ListRequest, "body must be a JSON object", id="list-array"),
    pytest.param(b"1", ListRequest, "body must be a JSON object", id="list-number"),
    pytest.param(b'"x"', ListRequest, "body must be a JSON object", id="list-string"),
    pytest.param(b"true", ListRequest, "body must be a JSON object", id="list-bool"),
    pytest.param(b'[{"Name":"a"}]', NameRequest, "body must be a JSON object", id="array"),
    # Version: a JSON integer from 0 to 4294967295, nothing else.
    pytest.param(b'{"Version":-1}', VersionRequest, VERSION_RULE, id="version-negative"),
    pytest.param(b'{"Version":-0}', VersionRequest, VERSION_RULE, id="version-minus-zero"),
    pytest.param(b'{"Version":1.5}', VersionRequest, VERSION_RULE, id="version-fraction"),
    pytest.param(b'{"Version":1.0}', GetRequest, VERSION_RULE, id="version-point-zero"),
    pytest.param(b'{"Version":1e2}', CreateVersionRequest, VERSION_RULE, id="version-exponent"),
    pytest.param(b'{"Version":1E2}', VersionRequest, VERSION_RULE, id="version-upper-exp"),
    pytest.param(b'{"Version":4294967296}', VersionRequest, VERSION_RULE, id="version-2-32"),
    pytest.param(b'{"Version":99999999999}', VersionRequest, VERSION_RULE, id="version-11-digit"),
    pytest.param(
        b'{"Version":' + b"9" * 10_000 + b"}", VersionRequest, VERSION_RULE, id="version-huge"
    ),
    pytest.param(b'{"Version":01}', VersionRequest, "not valid JSON", id="version-leading-0"),
    pytest.param(b'{"Version":+1}', VersionRequest, "not valid JSON", id="version-plus"),
    pytest.param(b'{"Version":.5}', VersionRequest, "not valid JSON", id="version-bare-fraction"),
    pytest.param(b'{"Version":1.}', VersionRequest, "not valid JSON", id="version-bare-point"),
    pytest.param(b'{"Version":"5"}', VersionRequest, VERSION_RULE, id="version-string"),
    pytest.param(b'{"Version":true}', VersionRequest, VERSION_RULE, id="version-bool"),
    pytest.param(b'{"Version":[5]}', VersionRequest, VERSION_RULE, id="version-array"),
    pytest.param(b'{"version":{"a":1}}', GetRequest, VERSION_RULE, id="version-object"),
    pytest.param(b'{"Version":1,"Version":-1}', GetRequest, VERSION_RULE, id="version-later-bad"),
    # UpdateIfChanged: a JSON boolean only.
    pytest.param(b'{"UpdateIfChanged":"true"}', GetRequest, '"UpdateIfChanged"', id="flag-str"),
    pytest.param(b'{"UpdateIfChanged":1}', GetRequest, '"UpdateIfChanged"', id="flag-number"),
    pytest.param(b'{"updateIfChanged":[]}', GetRequest, '"UpdateIfChanged"', id="flag-array"),
    # Name: a JSON string only, of valid Unicode.
    pytest.param(b'{"Name":1}', NameRequest, '"Name" must be a string', id="name-number"),
    pytest.param(b'{"Name":true}', PutRequest, '"Name" must be a string', id="name-bool"),
    pytest.param(b'{"name":["a"]}', GetRequest, '"Name" must be a string', id="name-array"),
    pytest.param(b'{"Name":{"a":"b"}}', NameRequest, '"Name" must be a string', id="name-obj"),
    pytest.param(b'{"Name":"\\ud800"}', NameRequest, "unpaired surrogate", id="name-lone-high"),
    pytest.param(b'{"Name":"a\\udc00"}', NameRequest, "unpaired surrogate", id="name-lone-low"),
    # Value: padded standard base64, or an array of integers 0..255.
    pytest.param(b'{"Value":"YQ"}', PutRequest, BASE64_RULE, id="value-no-padding"),
    pytest.param(b'{"Value":"YQ="}', PutRequest, BASE64_RULE, id="value-short-padding"),
    pytest.param(b'{"Value":"YQ==="}', PutRequest, BASE64_RULE, id="value-extra-padding"),
    pytest.param(b'{"Value":"-_8="}', PutRequest, BASE64_RULE, id="value-url-safe"),
    pytest.param(b'{"Value":"Y Q=="}', PutRequest, BASE64_RULE, id="value-space"),
    pytest.param(b'{"Value":"Y\\tQ=="}', PutRequest, BASE64_RULE, id="value-tab"),
    pytest.param(b'{"Value":"=="}', PutRequest, BASE64_RULE, id="value-only-padding"),
    pytest.param(b'{"Value":"Y==="}', PutRequest, BASE64_RULE, id="value-one-char"),
    pytest.param(b'{"Value":"YQ==YQ=="}', PutRequest, BASE64_RULE, id="value-after-padding"),
    # Padding after a complete quantum: binascii's strict mode takes it, Go does not.
    pytest.param(b'{"Value":"YWJj="}', PutRequest, BASE64_RULE, id="value-pad-after-full"),
    pytest.param(b'{"Value":"YWJj===="}', PutRequest, BASE64_RULE, id="value-pads-after-full"),
    pytest.param('{"Value":"YQé="}'.encode(), PutRequest, BASE64_RULE, id="value-non-ascii"),
    pytest.param(b'{"Value":"\\ud800"}', PutRequest, BASE64_RULE, id="value-lone-surrogate"),
    pytest.param(b'{"Value":5}', PutRequest, BYTES_RULE, id="value-number"),
    pytest.param(b'{"Value":true}', CreateVersionRequest, BYTES_RULE, id="value-bool"),
    pytest.param(b'{"Value":{"a":1}}', PutRequest, BYTES_RULE, id="value-object"),
    pytest.param(b'{"Value":[256]}', PutRequest, BYTES_RULE, id="value-octet-256"),
    pytest.param(b'{"Value":[-1]}', PutRequest, BYTES_RULE, id="value-octet-negative"),
    pytest.param(b'{"Value":[1.0]}', PutRequest, BYTES_RULE, id="value-octet-float"),
    pytest.param(b'{"Value":["a"]}', PutRequest, BYTES_RULE, id="value-octet-string"),
    pytest.param(b'{"Value":[[1]]}', PutRequest, BYTES_RULE, id="value-octet-nested"),
    pytest.param(b'{"Value":[true]}', PutRequest, BYTES_RULE, id="value-octet-bool"),
]


@pytest.mark.parametrize(("body", "kind", "fragment"), REJECTED)
def test_decode_rejects(body: bytes, kind: type[Any], fragment: str) -> None:
    """Go's decoder refuses this body (400); the reason is one line and says why."""
    with pytest.raises(BadRequestError) as info:
        decode(body, kind)
    message = str(info.value)
    assert message.startswith("bad request: ")
    assert fragment in message
    assert "\n" not in message
    assert len(message) < 120  # a reason, never an echo of the body


def test_bad_request_is_an_invalid_request() -> None:
    """The HTTP edge maps BadRequestError to 400 through InvalidRequestError."""
    assert issubclass(BadRequestError, InvalidRequestError)
    assert BadRequestError("x").reason == "x"


SECRET = b"hunter2-s3cret"
SECRET_B64 = base64.b64encode(SECRET)


@pytest.mark.parametrize(
    "body",
    [
        b'{"Value":"' + SECRET + b'"}',
        b'{"Value":"' + SECRET_B64 + b'","Version":-1}',
        b'{"Value":"' + SECRET_B64 + b'"',
        b'{"Value":"' + SECRET_B64 + b'\xff"}',
        b'{"Value":"' + SECRET_B64 + b'",NaN}',
        b'{"Name":"' + SECRET + b'\\ud800"}',
        b'{"Value":[' + b",".join(str(c).encode() for c in SECRET) + b",256]}",
        b'{"Value":"' + SECRET_B64 + b'"' + b"[" * 100_000,
    ],
)
def test_errors_never_carry_the_body(body: bytes) -> None:
    """A rejected body's secret appears neither in the message nor in a chained exception."""
    with pytest.raises(BadRequestError) as info:
        decode(body, CreateVersionRequest)
    for text in (SECRET, SECRET_B64, b"hunter"):
        assert text.decode() not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


@pytest.mark.parametrize(
    "request_", [PutRequest("n", b"hunter2"), CreateVersionRequest("n", 1, b"hunter2")]
)
def test_request_repr_hides_value(request_: object) -> None:
    """A request holding a value never shows it in its repr."""
    assert "hunter2" not in repr(request_)
    assert "'n'" in repr(request_)


# --- Encoding --------------------------------------------------------------------------

ENCODED = [
    pytest.param(
        replies.VALUE, SecretValue(b"abc", 3), b'{"Value":"YWJj","Version":3}', id="value"
    ),
    pytest.param(replies.VALUE, SecretValue(b"", 1), b'{"Value":"","Version":1}', id="value-empty"),
    pytest.param(
        replies.VALUE,
        SecretValue(b"\xff\xfe", 2),
        b'{"Value":"//4=","Version":2}',
        id="value-std-b64",
    ),
    pytest.param(
        replies.INFO,
        SecretInfo("a", (1, 2, 3), 2),
        b'{"Name":"a","Versions":[1,2,3],"ActiveVersion":2}',
        id="info",
    ),
    pytest.param(
        replies.INFO,
        SecretInfo("a", (10, 2, 1), 2),
        b'{"Name":"a","Versions":[1,2,10],"ActiveVersion":2}',
        id="info-versions-ascending",
    ),
    pytest.param(
        replies.INFO_LIST,
        [SecretInfo("a", (1,), 1), SecretInfo("b", (4, 5), 5)],
        b'[{"Name":"a","Versions":[1],"ActiveVersion":1},'
        b'{"Name":"b","Versions":[4,5],"ActiveVersion":5}]',
        id="list",
    ),
    pytest.param(replies.INFO_LIST, [], b"null", id="empty-list-is-null"),
    pytest.param(replies.INFO_LIST, (), b"null", id="empty-tuple-is-null"),
    pytest.param(replies.VERSION, 4, b"4", id="put-version"),
    pytest.param(replies.VERSION, MAX_VERSION, b"4294967295", id="put-max-version"),
    pytest.param(replies.EMPTY, None, b"{}", id="void-is-empty-object"),
    # Strings: Go's escaping, byte for byte.
    pytest.param(
        replies.INFO,
        SecretInfo("a<b>&c", (1,), 1),
        b'{"Name":"a\\u003cb\\u003e\\u0026c","Versions":[1],"ActiveVersion":1}',
        id="html-escaped",
    ),
    pytest.param(
        replies.INFO,
        SecretInfo("café", (1,), 1),
        b'{"Name":"caf\xc3\xa9","Versions":[1],"ActiveVersion":1}',
        id="non-ascii-raw-utf8",
    ),
    pytest.param(
        replies.INFO,
        SecretInfo('"\\\n\t\b\f\x01\u2028\u2029', (1,), 1),
        b'{"Name":"\\"\\\\\\n\\t\\b\\f\\u0001\\u2028\\u2029","Versions":[1],"ActiveVersion":1}',
        id="control-and-separators",
    ),
    pytest.param(
        replies.INFO,
        SecretInfo("a\ud800", (1,), 1),
        b'{"Name":"a\\ufffd","Versions":[1],"ActiveVersion":1}',
        id="lone-surrogate-as-go-invalid-utf8",
    ),
]


@pytest.mark.parametrize(("reply", "result", "expected"), ENCODED)
def test_encode(reply: replies.Reply[Any], result: object, expected: bytes) -> None:
    """Responses, as each endpoint's reply kind encodes them for the server, are Go's
    compact JSON, byte for byte, without a trailing newline."""
    assert reply.encode(result) == expected


@pytest.mark.parametrize(
    ("reply", "result", "keys"),
    [
        (replies.VALUE, SecretValue(b"x", 1), ["Value", "Version"]),
        (replies.INFO, SecretInfo("x", (1,), 1), ["Name", "Versions", "ActiveVersion"]),
    ],
)
def test_encode_key_order(reply: replies.Reply[Any], result: object, keys: list[str]) -> None:
    """Object keys come in Go's struct declaration order (docs/api.md §3)."""
    assert list(json.loads(reply.encode(result))) == keys


@pytest.mark.parametrize("reply", [replies.INFO, replies.INFO_LIST, replies.VERSION])
@pytest.mark.parametrize("result", [True, "4", b"x", {"Name": "x"}, 1.5, None])
def test_encode_refuses_unknown_results(reply: replies.Reply[Any], result: object) -> None:
    """Anything that is not an API result is a programming error, not a response."""
    with pytest.raises(TypeError):
        reply.encode(result)


# --- Properties ------------------------------------------------------------------------

WIRE_NAMES = ["Name", "Version", "UpdateIfChanged", "Value"]


@st.composite
def wire_keys(draw: st.DrawFn) -> str:
    """A wire field name in random case, or some other key."""
    name = draw(st.sampled_from(WIRE_NAMES))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    cased = "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))
    return draw(st.one_of(st.just(cased), st.text(max_size=6)))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and infinities included: json.dumps writes them as bare words
    | st.text(max_size=12)
    | st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON-ish body: an object of wire fields of any type, sometimes damaged."""
    top = draw(st.one_of(st.dictionaries(wire_keys(), JSON_VALUES, max_size=5), JSON_VALUES))
    body = json.dumps(top, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "truncate", "append", "replace"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "append":
        body += draw(st.binary(max_size=8))
    elif damage == "replace" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + draw(st.binary(min_size=1, max_size=1)) + body[at + 1 :]
    return body


def check_decodes_or_refuses(body: bytes) -> None:
    """Every request kind either decodes to well-typed fields or raises BadRequestError."""
    for kind in KINDS:
        try:
            request = decode(body, kind)
        except BadRequestError as e:
            message = str(e)
        else:
            message = ""
        if message:
            assert message.startswith("bad request: ")
            assert "\n" not in message
            continue
        assert type(request) is kind
        fields = {
            "name": str,
            "version": int,
            "update_if_changed": bool,
            "value": bytes,
        }
        for attr, typ in fields.items():
            if hasattr(request, attr):
                assert type(getattr(request, attr)) is typ
        assert 0 <= getattr(request, "version", 0) <= MAX_VERSION


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_refuse(body: bytes) -> None:
    """decode() on arbitrary bytes raises nothing but BadRequestError."""
    check_decodes_or_refuses(body)


@given(json_bodies())
def test_random_json_decode_or_refuse(body: bytes) -> None:
    """decode() on JSON of any shape (fields of the wrong type, damaged) raises nothing but
    BadRequestError, and whatever it accepts is well typed."""
    check_decodes_or_refuses(body)


@given(
    name=st.text(),
    version=st.integers(min_value=0, max_value=MAX_VERSION),
    value=st.binary(),
    flag=st.booleans(),
    ascii_only=st.booleans(),
)
def test_go_client_bodies_round_trip(
    name: str, version: int, value: bytes, flag: bool, ascii_only: bool
) -> None:
    """What a Go client sends (json.Marshal of its request struct) decodes to its fields."""
    doc = {"Name": name, "Version": version, "Value": base64.b64encode(value).decode()}
    body = json.dumps(doc, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    assert decode(body, CreateVersionRequest) == CreateVersionRequest(name, version, value)
    assert decode(body, PutRequest) == PutRequest(name, value)
    get = json.dumps({"Name": name, "Version": version, "UpdateIfChanged": flag}).encode()
    assert decode(get, GetRequest) == GetRequest(name, version, flag)


@given(name=st.text(), versions=st.sets(st.integers(1, MAX_VERSION), min_size=1), value=st.binary())
def test_encoded_results_parse_back(name: str, versions: set[int], value: bytes) -> None:
    """Encoded results are JSON whose fields are exactly the result's (clients need only that)."""
    active = min(versions)
    info = json.loads(replies.INFO_LIST.encode([SecretInfo(name, tuple(versions), active)]))
    assert info == [{"Name": name, "Versions": sorted(versions), "ActiveVersion": active}]
    got = json.loads(replies.VALUE.encode(SecretValue(value, active)))
    assert base64.b64decode(got["Value"], validate=True) == value
    assert got["Version"] == active


# --- One description, both ways ------------------------------------------------------------


def test_the_endpoint_table() -> None:
    """Go's endpoints of docs/api.md §4, in its order, then ours (§9), each at
    /api/<name>; only Go's lack an extension name. Of Go's, only put and create-version
    carry a value, and only list, get and info just read."""
    go = [e for e in ENDPOINTS if e.extension is None]
    assert [e.name for e in go] == [
        "list",
        "get",
        "info",
        "put",
        "create-version",
        "activate",
        "delete-version",
        "delete",
    ]
    assert list(ENDPOINTS[: len(go)]) == go
    assert all(e.path == f"/api/{e.name}" for e in ENDPOINTS)
    assert [e.name for e in go if e.carries_value] == ["put", "create-version"]
    assert [e.name for e in go if e.read_only] == ["list", "get", "info"]
    assert "extensions" in {e.extension for e in ENDPOINTS}


def test_the_large_body_limits_are_set_where_a_request_needs_them() -> None:
    """The body caps above the small one are set on each endpoint, not read from the
    request's fields: the large cap exactly where the request has a value to carry, and
    a limit of its own exactly where it asks for a batch of secrets (sized for its most
    names at their longest: tests/http/test_get_many.py). So a new endpoint with a value
    or a batch cannot be left with the small cap, nor one without get a larger one."""
    for endpoint in ENDPOINTS:
        fields = {f.name for f in dataclasses.fields(endpoint.request)}
        assert endpoint.carries_value == ("value" in fields), endpoint.name
        assert (endpoint.body_bytes is not None) == ("asked" in fields), endpoint.name


@given(
    name=st.text(),
    version=st.integers(min_value=0, max_value=MAX_VERSION),
    value=st.binary(),
    flag=st.booleans(),
)
def test_the_server_reads_what_the_client_writes(
    name: str, version: int, value: bytes, flag: bool
) -> None:
    """Every request the client encodes decodes, on the server, to the same request."""
    requests = [
        ListRequest(),
        NameRequest(name),
        GetRequest(name, version, flag),
        PutRequest(name, value),
        VersionRequest(name, version),
        CreateVersionRequest(name, version, value),
    ]
    for request in requests:
        try:
            body = encode_request(request)
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, nothing to send
            continue
        assert decode(body, type(request)) == request


@given(
    name=st.text(),
    versions=st.sets(st.integers(1, MAX_VERSION), min_size=1, max_size=5),
    value=st.binary(),
)
def test_the_client_reads_what_the_server_writes(
    name: str, versions: set[int], value: bytes
) -> None:
    """Every reply the server encodes decodes, in the client, to the same result."""
    info = SecretInfo(name, tuple(sorted(versions)), min(versions))
    for reply, result in [
        (replies.VALUE, SecretValue(value, max(versions))),
        (replies.INFO, info),
        (replies.INFO_LIST, [info, info]),
        (replies.INFO_LIST, []),
        (replies.VERSION, max(versions)),
        (replies.EMPTY, None),
    ]:
        assert reply.decode(reply.encode(result)) == result


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        (replies.VALUE, b'{"Value":"eA==","Version":1} x'),
        (replies.VALUE, b'{"Value":"eA==","Version":1,"Version":"1"}'),
        (replies.VALUE, b'{"Value":NaN}'),
        (replies.INFO, b'{"Name":"a","Versions":[1,null]}'),
        (replies.INFO_LIST, b"[null]"),
        (replies.VERSION, b"0"),
        (replies.EMPTY, b""),
    ],
    ids=["trailing-data", "bad-duplicate", "nan", "null-version", "null-info", "zero", "empty"],
)
def test_replies_the_client_refuses(reply: replies.Reply[Any], body: bytes) -> None:
    """A client refuses what Go's json.Unmarshal refuses: more than one value, a key of
    the wrong type even when a later one is right, NaN; and what no server sends."""
    with pytest.raises(ResponseError, match=r"^unmarshaling response: "):
        reply.decode(body)


@pytest.mark.parametrize("sentinel", SENTINELS, ids=lambda s: s.error.__name__)
def test_sentinels_both_ways(sentinel: Any) -> None:
    """The server answers a sentinel error with its status and Go's text, and a client
    turns that status back into the same error (docs/api.md §2)."""
    assert status_for(sentinel.error()) == (sentinel.status, sentinel.body, False)
    assert type(sentinel_error(sentinel.status)) is sentinel.error
    assert sentinel_error(200) is None
    assert sentinel_error(400) is None
