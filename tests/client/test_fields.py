"""Dataclass fields filled with secrets (Go's ``setec:"..."`` struct tags): which fields
and types parse_fields accepts, the names it derives, and how Fields.apply fills them
from a real Store over a local server, all or nothing, without quoting a value.

This module uses ``from __future__ import annotations``, so every dataclass below has
string annotations that parse_fields must resolve."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from setec_core.client import (
    Client,
    Fields,
    NoFieldsError,
    Secret,
    Store,
    parse_fields,
    secret_field,
    static_secret,
)
from setec_core.client.fields import FieldsApplyError, FieldsError
from setec_core.errors import ConfigError, NotFound, SetecError
from setec_core.testing import SUPERUSER
from setec_core.testing.server import LocalServer

SU = SUPERUSER
LEAK = "fields-secret-4c8a"  # grepped for in every error message and log line below


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert LEAK not in caplog.text


def put_all(server: LocalServer, secrets: dict[str, bytes]) -> None:
    for name, value in secrets.items():
        server.db.put(SU, name, value)


class Lookup:
    """A SecretLookup over fixed values: Fields.apply needs only lookup_secret."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets

    def lookup_secret(self, name: str) -> Secret:
        if name not in self.secrets:
            raise NotFound(f'lookup "{name}": not found')
        return static_secret(self.secrets[name])


# --- types used by the dataclasses below ------------------------------------------------


class BinValue:
    """Go's binValue: "head:tail", with a from_bytes classmethod."""

    def __init__(self, head: str, tail: str) -> None:
        self.head, self.tail = head, tail

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BinValue) and (self.head, self.tail) == (other.head, other.tail)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_bytes(cls, data: bytes) -> BinValue:
        head, sep, tail = data.partition(b":")
        if not sep:
            # A careless message that quotes the value: apply must not repeat it.
            raise ValueError(f"missing ':' in {data!r}")
        return cls(head.decode(), tail.decode())


@dataclass
class JsonObj:
    x: str = ""
    y: bool = False


@dataclass
class Target:
    """Go's testTarget, less the Watcher field."""

    a: str = secret_field("apple")
    b: BinValue = secret_field("bin-value")
    bp: Optional[BinValue] = secret_field("bin-value-ptr")  # noqa: UP045 - Optional is tested
    p: bytes = secret_field("pear")
    plum: Secret = secret_field("plum")
    x: str = "untouched"
    j: JsonObj = secret_field("object-value", json=True)
    z: int = secret_field("int-value", json=True)


GO_SECRETS = {
    "apple": b"1",
    "pear": b"2",
    "plum": b"3",
    "bin-value": b"kumquat:quince",
    "bin-value-ptr": b"peach:durian",
    "object-value": b'{"x":"hello","y":true}',
    "int-value": b"12345",
}


# --- Go's tests -------------------------------------------------------------------------


def test_apply_populates_every_kind_of_field(server: LocalServer, client: Client) -> None:
    """A Store fills str, from_bytes, Optional[from_bytes], bytes,
    Secret, JSON dataclass and JSON int fields; the untagged field is untouched."""
    put_all(server, {f"test/{k}": v for k, v in GO_SECRETS.items()})
    obj = Target()
    with Store(client, structs=[(obj, "test")], poll_interval=None):
        pass
    assert obj.a == "1"
    assert obj.b == BinValue("kumquat", "quince")
    assert obj.bp == BinValue("peach", "durian")
    assert obj.p == b"2"
    assert obj.plum() == b"3"
    assert obj.x == "untouched"
    assert obj.j == JsonObj(x="hello", y=True)
    assert obj.z == 12345


def test_secrets_are_prefixed_in_field_order() -> None:
    """secrets() lists the prefixed names in field order."""
    assert parse_fields(Target(), "test").secrets() == [
        "test/apple",
        "test/bin-value",
        "test/bin-value-ptr",
        "test/pear",
        "test/plum",
        "test/object-value",
        "test/int-value",
    ]


@dataclass
class NoTags:
    x: str = ""


@dataclass
class FloatField:
    x: float = secret_field("x")  # not marked json


@pytest.mark.parametrize(
    ("obj", "error", "message"),
    [
        (object(), FieldsError, "value is not a dataclass instance: got object"),
        ("text", FieldsError, "value is not a dataclass instance: got str"),
        (Target, FieldsError, "value is not a dataclass instance: got the class Target"),
        (NoTags(), NoFieldsError, "type NoTags: no setec-tagged fields"),
        (FloatField(), FieldsError, 'unsupported type float for tagged field "x"'),
    ],
    ids=["object", "str", "dataclass-type", "no-tags", "unsupported"],
)
def test_parse_errors(obj: object, error: type[Exception], message: str) -> None:
    """Not a dataclass instance, a dataclass type, no tagged fields
    (NoFieldsError, by class), an unsupported type without json: each a clear
    ConfigError."""
    with pytest.raises(error, match=message) as info:
        parse_fields(obj)
    assert isinstance(info.value, ConfigError)


def test_example(server: LocalServer, client: Client) -> None:
    """Go's example: with prefix "dev", bytes, str, Secret and a JSON
    time fill in; the untagged int keeps its value."""
    put_all(
        server,
        {
            "dev/alpha": b"dev-alpha",
            "prod/alpha": b"prod-alpha",
            "dev/bravo": b"dev-bravo",
            "prod/bravo": b"prod-bravo",
            "dev/charlie": b"dev-charlie",
            "prod/charlie": b"prod-charlie",
            "dev/delta": b'"2023-10-06T12:34:56Z"',
            "prod/delta": b'"2023-10-05T01:23:45Z"',
        },
    )
    secrets = Example()
    secrets.other = 25
    with Store(client, structs=[(secrets, "dev")], poll_interval=None):
        assert secrets.alpha == b"dev-alpha"
        assert secrets.bravo == "dev-bravo"
        assert secrets.charlie() == b"dev-charlie"
        assert secrets.delta == datetime.datetime(2023, 10, 6, 12, 34, 56, tzinfo=datetime.UTC)
        assert secrets.other == 25


@dataclass
class Example:
    alpha: bytes = secret_field("alpha")
    bravo: str = secret_field("bravo")
    charlie: Secret = secret_field("charlie")
    delta: datetime.datetime = secret_field("delta", json=True)
    other: int = 0  # not touched by setec


# --- parse_fields -----------------------------------------------------------------------


@dataclass
class EmptyName:
    ok: bytes = secret_field("ok")
    blank: bytes = secret_field("")


def test_empty_name_names_the_field() -> None:
    """An empty base name is an error naming the field."""
    with pytest.raises(FieldsError, match='empty secret name for tagged field "blank"'):
        parse_fields(EmptyName())


@dataclass
class One:
    key: bytes = secret_field("alpha")


@pytest.mark.parametrize(
    ("prefix", "base", "full"),
    [
        ("dev/prog", "alpha", "dev/prog/alpha"),
        ("", "alpha", "alpha"),
        ("", "./a//b/", "a/b"),
        ("dev/", "alpha", "dev/alpha"),
        ("dev", "/alpha", "dev/alpha"),
        ("/dev//x/", "../alpha", "/dev/alpha"),
        ("//", "alpha", "/alpha"),
        ("dev", "..", "."),
    ],
)
def test_names_join_like_go_path_join(prefix: str, base: str, full: str) -> None:
    """The full name is Go's path.Join(prefix, base): empty parts dropped, the
    result cleaned (a leading "//" too, unlike posixpath)."""

    @dataclass
    class Named:  # local, but its annotation names a builtin: it resolves
        key: bytes = secret_field(base)

    assert parse_fields(Named(), prefix).secrets() == [full]


@dataclass
class Base:
    first: bytes = secret_field("first")
    plain: int = 1


@dataclass
class Derived(Base):
    second: str = secret_field("second")


def test_inherited_fields_count_base_first() -> None:
    """Fields inherited from dataclass bases count, and come first."""
    assert parse_fields(Derived(), "p").secrets() == ["p/first", "p/second"]


@dataclass
class Unions:
    a: bytes | None = secret_field("a")
    b: Optional[str] = secret_field("b")  # noqa: UP045 - Optional is tested
    c: Secret | None = secret_field("c")
    d: bytearray = secret_field("d")
    e: int | None = secret_field("e", json=True)
    f: list[int] = secret_field("f", json=True, default_factory=list)


def test_optional_and_bytearray(server: LocalServer, client: Client) -> None:
    """Optional[X] and X | None are read as X; bytearray gets a mutable copy that does
    not reach back into the Store."""
    put_all(server, {"a": b"A", "b": b"B", "c": b"C", "d": b"D", "e": b"null", "f": b"[1,2]"})
    obj = Unions()
    assert obj.f == []
    with Store(client, structs=[obj], poll_interval=None) as store:
        assert (obj.a, obj.b, obj.e, obj.f) == (b"A", "B", None, [1, 2])
        assert obj.c is not None
        assert obj.c() == b"C"
        assert obj.d == bytearray(b"D")
        obj.d[0] = ord("X")
        handle = store.secret("d")
        assert handle is not None
        assert handle() == b"D"


@dataclass
class IntNoJson:
    port: int = secret_field("port")


@dataclass
class BytesJson:
    raw: bytes = secret_field("raw", json=True)


@dataclass
class TupleJson:
    pair: tuple[int, int] = secret_field("pair", json=True)


@dataclass
class IntKeys:
    table: dict[int, str] = secret_field("table", json=True)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (IntNoJson(), r'unsupported type int for tagged field "port" \(use bytes, .*json=True\)'),
        (BytesJson(), r'unsupported type bytes for tagged field "raw" \(with json=True: Any'),
        (TupleJson(), r'unsupported type tuple\[int, int\] for tagged field "pair"'),
        (IntKeys(), r'unsupported type dict\[int, str\] for tagged field "table"'),
    ],
    ids=["int-without-json", "bytes-with-json", "tuple-json", "int-keys"],
)
def test_unsupported_types_say_what_is_supported(obj: object, message: str) -> None:
    """An unsupported type names the type and the field, and lists what would do.
    int.from_bytes does not make int a from_bytes type: a secret is text."""
    with pytest.raises(FieldsError, match=message):
        parse_fields(obj)


@dataclass(frozen=True)
class Frozen:
    key: bytes = secret_field("key")


def test_frozen_dataclass_is_refused() -> None:
    """A frozen dataclass cannot be filled: refused at parse time."""
    with pytest.raises(FieldsError, match="Frozen is a frozen dataclass"):
        parse_fields(Frozen())


def test_unresolvable_annotation_is_explained() -> None:
    """A string annotation naming a type parse_fields cannot see (a class local to a
    function) is a FieldsError naming the field and the fix."""

    class Local:
        @classmethod
        def from_bytes(cls, data: bytes) -> Local:
            return cls()

    @dataclass
    class UsesLocal:
        key: Local = secret_field("key")

    with pytest.raises(FieldsError, match=r'"Local" of tagged field "key" \(NameError: .*module'):
        parse_fields(UsesLocal())


def test_secret_field_defaults_and_repr() -> None:
    """A secret field defaults to None (the dataclass builds empty), takes a default or
    default_factory, and is left out of the dataclass's repr."""

    @dataclass
    class Conf:
        key: Any = secret_field("key")
        token: Any = secret_field("token", default=b"dev-token")
        items: Any = secret_field("items", json=True, default_factory=list)
        port: int = 80

    conf = Conf()
    assert (conf.key, conf.token, conf.items) == (None, b"dev-token", [])
    conf.key = LEAK.encode()
    assert repr(conf) == "test_secret_field_defaults_and_repr.<locals>.Conf(port=80)"
    field = {f.name: f for f in dataclasses.fields(conf)}["items"]
    assert field.metadata["setec"].json is True
    with pytest.raises(TypeError, match="a secret name must be a str, not int"):
        secret_field(5)  # type: ignore[arg-type]


def test_fields_repr() -> None:
    """A Fields shows the class and the names."""
    fields = parse_fields(One(), "dev")
    assert isinstance(fields, Fields)
    assert repr(fields) == "Fields(One, ['dev/alpha'])"


# --- apply ------------------------------------------------------------------------------


@dataclass
class Mixed:
    good: bytes = secret_field("good")
    bad_json: JsonObj = secret_field("bad-json", json=True)
    bad_bin: BinValue = secret_field("bad-bin")
    bad_text: str = secret_field("bad-text")
    wrong_type: int = secret_field("wrong-type", json=True)
    missing: bytes = secret_field("missing")
    untouched: str = "keep"


def test_apply_collects_every_error_and_sets_nothing(server: LocalServer, client: Client) -> None:
    """apply reports every failing field as apply "<name>" to field "<f>": <cause>,
    with causes by kind (lookup, unmarshal, json), never quoting a value; and no field
    is set, not even the good one."""
    put_all(
        server,
        {
            "m/good": LEAK.encode(),
            "m/bad-json": f'{{"x": "{LEAK}",'.encode(),
            "m/bad-bin": LEAK.encode(),
            "m/bad-text": b"\xff" + LEAK.encode(),
            "m/wrong-type": f'"{LEAK}"'.encode(),
        },
    )
    obj = Mixed()
    store = Store(client, ["m/good"], allow_lookup=True, poll_interval=None)
    with store, pytest.raises(FieldsApplyError) as info:
        parse_fields(obj, "m").apply(store)
    error = info.value
    message = str(error)
    assert LEAK not in message
    assert "xff" not in message
    assert error.failures == {
        "bad_json": "json error: the value is not valid JSON (line 1, column 28)",
        "bad_bin": "unmarshal error: BinValue.from_bytes raised ValueError",
        "bad_text": "unmarshal error: the value is not UTF-8 text",
        "wrong_type": "json error: cannot decode a string into int",
        "missing": 'secret lookup error: lookup "m/missing": not found',
    }
    assert message.startswith(
        'apply "m/bad-json" to field "bad_json": json error: the value is not valid JSON'
    )
    assert 'apply "m/missing" to field "missing": secret lookup error: ' in message
    assert isinstance(error, SetecError)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert obj == Mixed()


def test_lookup_needs_allow_lookup_for_undeclared_names(
    server: LocalServer, client: Client
) -> None:
    """apply uses lookup_secret, so a name the Store did not declare needs
    allow_lookup; the Store's error is the cause."""
    put_all(server, {"other": b"x", "alpha": b"y"})
    with (
        Store(client, ["other"], poll_interval=None) as store,
        pytest.raises(FieldsApplyError, match='field "key": secret lookup error: lookup is'),
    ):
        parse_fields(One()).apply(store)


def test_store_fails_when_a_struct_cannot_be_filled(server: LocalServer, client: Client) -> None:
    """A struct whose secret does not fit its field fails the Store's
    construction; a struct that does not parse is a ConfigError."""
    put_all(server, {"port": b"8080", "z/int-value": f"[{LEAK}]".encode()})
    with pytest.raises(FieldsApplyError, match='apply "z/int-value" to field "z"'):
        Store(client, structs=[(IntJson(), "z")], poll_interval=None)
    with pytest.raises(ConfigError, match="unsupported type int"):
        Store(client, structs=[IntNoJson()], poll_interval=None)


@dataclass
class IntJson:
    z: int = secret_field("int-value", json=True)


def test_secret_field_follows_new_versions(server: LocalServer, client: Client) -> None:
    """A Secret field is the Store's handle and follows new versions; a bytes field is
    the value when the Store was built."""

    @dataclass
    class Both:
        handle: Secret = secret_field("k")
        copy: bytes = secret_field("k")

    server.db.put(SU, "k", b"v1")
    obj = Both()
    with Store(client, structs=[obj], poll_interval=None) as store:
        server.db.activate(SU, "k", server.db.put(SU, "k", b"v2"))
        store.refresh()
        assert obj.handle() == b"v2"
        assert obj.copy == b"v1"


# --- json=True conversions --------------------------------------------------------------


@dataclass
class Inner:
    name: str = ""
    port: int = 0


@dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    tags: list[str] = dataclasses.field(default_factory=list)
    when: datetime.date | None = None


@dataclass
class JsonTarget:
    any_: Any = secret_field("any", json=True)
    num: float = secret_field("num", json=True)
    flag: bool = secret_field("flag", json=True)
    either: int | str = secret_field("either", json=True)
    table: dict[str, int] = secret_field("table", json=True)
    outer: Outer = secret_field("outer", json=True)
    day: datetime.date = secret_field("day", json=True)


GOOD_JSON = {
    "any": b'{"a": [1, null]}',
    "num": b"3",
    "flag": b"true",
    "either": b'"text"',
    "table": b'{"a": 1, "b": 2}',
    "outer": b'{"INNER": {"Name": "db", "port": 5432, "extra": 1}, "tags": ["x"],'
    b' "when": "2024-02-29", "unknown": true}',
    "day": b'"2024-01-02"',
}


def test_json_conversions() -> None:
    """json=True decodes into Any, float (from an integer too), bool, a union, a typed
    dict, nested dataclasses (member names case-insensitive, unknown members ignored)
    and ISO 8601 dates."""
    obj = JsonTarget()
    parse_fields(obj).apply(Lookup(GOOD_JSON))
    assert obj.any_ == {"a": [1, None]}
    assert obj.num == 3.0
    assert isinstance(obj.num, float)
    assert obj.flag is True
    assert obj.either == "text"
    assert obj.table == {"a": 1, "b": 2}
    assert obj.outer == Outer(Inner("db", 5432), ["x"], datetime.date(2024, 2, 29))
    assert obj.day == datetime.date(2024, 1, 2)


@pytest.mark.parametrize(
    ("name", "value", "cause"),
    [
        ("num", b'"3"', "cannot decode a string into float"),
        ("flag", b"1", "cannot decode a number into bool"),
        ("either", b"1.5", "cannot decode a number into int | str"),
        ("table", b'{"a": "x"}', "cannot decode a string at {} into int"),
        ("outer", b'{"inner": {"port": 1.5}}', "cannot decode a number at .inner.port into int"),
        ("outer", b'{"tags": ["a", 2]}', "cannot decode a number at .tags[1] into str"),
        ("outer", b'{"when": "' + LEAK.encode() + b'"}', "a string at .when is not an ISO 8601"),
        ("outer", b"[]", "cannot decode an array into Outer"),
        ("day", b'"' + LEAK.encode() + b'"', "json error: a string is not an ISO 8601 date"),
        ("day", b"", "json error: the value is not valid JSON (line 1, column 1)"),
    ],
)
def test_json_mismatches_say_where_without_values(name: str, value: bytes, cause: str) -> None:
    """A JSON value of the wrong kind is reported by kind and position in the document,
    never by its text."""
    obj = JsonTarget()
    with pytest.raises(FieldsApplyError) as info:
        parse_fields(obj).apply(Lookup({**GOOD_JSON, name: value}))
    assert cause in str(info.value)
    assert LEAK not in str(info.value)
    assert obj == JsonTarget()


@dataclass
class Strict:
    port: int = 0

    def __post_init__(self) -> None:
        if self.port < 0:
            raise ValueError(f"bad port {self.port} from {LEAK}")


@dataclass
class NeedsStrict:
    s: Strict = secret_field("s", json=True)


def test_json_dataclass_errors_name_the_exception_type_only() -> None:
    """A dataclass whose __post_init__ rejects the JSON is reported by exception type."""
    with pytest.raises(FieldsApplyError) as info:
        parse_fields(NeedsStrict()).apply(Lookup({"s": b'{"port": -1}'}))
    assert "cannot build Strict from the JSON object (ValueError)" in str(info.value)
    assert LEAK not in str(info.value)


# --- the docs example (docs/client.md, dataclass fields) --------------------------


class ApiToken:
    """A type with a from_bytes classmethod: the field holds what it returns."""

    def __init__(self, user: str, key: bytes) -> None:
        self.user, self.key = user, key

    @classmethod
    def from_bytes(cls, data: bytes) -> ApiToken:
        user, _, key = data.partition(b":")
        return cls(user.decode(), key)


@dataclass
class BillingSecrets:
    alpha: bytes = secret_field("alpha")
    bravo: str = secret_field("bravo")
    charlie: Secret = secret_field("charlie")  # a handle, kept current
    delta: datetime.datetime = secret_field("delta", json=True)  # a JSON string, ISO 8601
    token: ApiToken = secret_field("token")
    other: int = 25  # not a secret: untouched


def test_docs_example(server: LocalServer, client: Client) -> None:
    """docs/client.md: the dataclass fields example, as written."""
    admin = server.client()
    for name, value in {
        "dev/billing/alpha": b"dev-alpha",
        "dev/billing/bravo": b"dev-bravo",
        "dev/billing/charlie": b"dev-charlie",
        "dev/billing/delta": b'"2023-10-06T12:34:56Z"',
        "dev/billing/token": b"billing-bot:k-123",
    }.items():
        admin.put(name, value)

    billing = BillingSecrets()
    with Store(client, structs=[(billing, "dev/billing")], poll_interval=None):
        assert billing.alpha == b"dev-alpha"
        assert billing.bravo == "dev-bravo"
        assert billing.charlie() == b"dev-charlie"
        assert billing.delta == datetime.datetime(2023, 10, 6, 12, 34, 56, tzinfo=datetime.UTC)
        assert billing.token.user == "billing-bot"
        assert billing.other == 25
    assert "dev-alpha" not in repr(billing)  # secret fields stay out of repr
