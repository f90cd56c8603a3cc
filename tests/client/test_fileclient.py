"""FileClient: secrets from a JSON file, as Go's, with its strict decoding, its errors
(which name the file and the entry, never a value), and reading a Store's cache blob."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from setec_core.client import FileClient, Store, StoreClient, cacheblob
from setec_core.errors import ConfigError, NotFound, SetecError, ValueNotChanged
from setec_core.model import SecretValue

# Values grepped for in every error message and log line below.
SAUCE = "c2F1Y2U="  # "sauce"
LEAK_TEXT = "filesecret-9f3e"
LEAK_B64 = "ZmlsZXNlY3JldC05ZjNl"  # base64 of LEAK_TEXT

# Go's client_test.go testSecrets.
GO_SECRETS = """{
  "big/bad/apple": {
     "secret": {"Version": 1, "Value": "c2F1Y2U="}
  },
  "pear": {
     "unrelated": true
  },
  "plum": {
     "secret": {"Version": 2, "TextValue": "tartlet"}
  },
  "little/tasty/cherry": {
     "secret": {"Version": 3, "Value": "cGll"}
  },
  "": {"secret": {"Version": 10, "Value": "dW5zZWVu"}},
  "durian": {
     "secret": {"Version": 0}
  }
}"""


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for value in (LEAK_TEXT, LEAK_B64, "sauce", "tartlet"):
        assert value not in caplog.text


def write(tmp_path: Path, text: str | bytes, name: str = "secrets.json") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def load(tmp_path: Path, doc: object) -> FileClient:
    return FileClient(write(tmp_path, json.dumps(doc)))


def decode_error(tmp_path: Path, text: str | bytes) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        FileClient(path)
    error = info.value
    message = str(error)
    assert str(path) in message
    for value in (LEAK_TEXT, LEAK_B64):
        assert value not in message
    # Nothing chained either: a JSONDecodeError carries the whole document.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


# --- Go's tests --------------------------------------------------------------------------


@pytest.fixture
def go_client(tmp_path: Path) -> FileClient:
    return FileClient(write(tmp_path, GO_SECRETS))


def test_get_decodes_base64_value(go_client: FileClient) -> None:
    """A base64 Value entry yields the decoded bytes."""
    assert go_client.get("big/bad/apple") == SecretValue(b"sauce", 1)


def test_entry_without_secret_is_not_found(go_client: FileClient) -> None:
    """An entry with no "secret" member is skipped: NotFound."""
    with pytest.raises(NotFound):
        go_client.get("pear")


def test_entry_with_version_zero_is_not_found(go_client: FileClient) -> None:
    """An entry with Version 0 is skipped: NotFound."""
    with pytest.raises(NotFound):
        go_client.get("durian")


def test_entry_with_empty_name_is_ignored(go_client: FileClient) -> None:
    """The entry named "" is ignored."""
    with pytest.raises(NotFound):
        go_client.get("")
    assert go_client.names() == ["big/bad/apple", "little/tasty/cherry", "plum"]


def test_get_if_changed(go_client: FileClient) -> None:
    """The stored version is ValueNotChanged; another version (or 0)
    gets the value; an absent name is NotFound."""
    with pytest.raises(ValueNotChanged):
        go_client.get_if_changed("little/tasty/cherry", 3)
    assert go_client.get_if_changed("little/tasty/cherry", 2) == SecretValue(b"pie", 3)
    assert go_client.get_if_changed("little/tasty/cherry", 0).value == b"pie"
    with pytest.raises(NotFound):
        go_client.get_if_changed("pear", 1)


def test_text_value(go_client: FileClient) -> None:
    """A TextValue entry yields the text's bytes."""
    assert go_client.get("plum") == SecretValue(b"tartlet", 2)


def test_is_a_store_client(go_client: FileClient) -> None:
    """FileClient provides StoreClient (get, get_if_changed) and nothing more."""
    assert isinstance(go_client, StoreClient)
    assert not hasattr(go_client, "get_version")


def test_not_found_names_the_file(go_client: FileClient) -> None:
    """A NotFound says which file lacked the secret."""
    with pytest.raises(NotFound, match=r"not found in secrets file .*secrets\.json"):
        go_client.get("red/cabbage")


# --- the entry rules ---------------------------------------------------------------------


def test_text_value_wins_over_value(tmp_path: Path) -> None:
    """A non-empty TextValue wins over Value; an empty one does not."""
    fc = load(
        tmp_path,
        {
            "both": {"secret": {"Version": 1, "Value": SAUCE, "TextValue": "text"}},
            "empty-text": {"secret": {"Version": 1, "Value": SAUCE, "TextValue": ""}},
            "unicode": {"secret": {"Version": 1, "TextValue": "päss"}},
        },
    )
    assert fc.get("both").value == b"text"
    assert fc.get("empty-text").value == b"sauce"
    assert fc.get("unicode").value == "päss".encode()


def test_member_names_match_case_insensitively(tmp_path: Path) -> None:
    """Members "secret", "VERSION", "value", "textvalue" match as Go's decoder does
    (docs/api.md §3.1); of repeated members the last wins; unknown members are
    ignored."""
    fc = load(
        tmp_path,
        {
            "upper": {"SECRET": {"VERSION": 4, "VALUE": SAUCE}, "note": 1},
            "lower": {"Secret": {"version": 5, "textvalue": "low"}},
        },
    )
    assert fc.get("upper") == SecretValue(b"sauce", 4)
    assert fc.get("lower") == SecretValue(b"low", 5)
    repeated = FileClient(
        write(tmp_path, '{"a": {"secret": {"Version": 1, "Version": 2, "Value": "cGll"}}}', "r")
    )
    assert repeated.get("a").version == 2


@pytest.mark.parametrize(
    "entry",
    [
        None,
        {},
        {"secret": None},
        {"secret": {}},
        {"secret": {"Value": SAUCE}},
        {"secret": {"Version": None, "Value": SAUCE}},
        {"secret": {"Version": 1}},
        {"secret": {"Version": 1, "Value": None}},
        {"secret": {"Version": 1, "TextValue": ""}},
        {"secret": {"Version": 1, "TextValue": None, "Value": None}},
    ],
    ids=repr,
)
def test_skipped_entries(tmp_path: Path, entry: object) -> None:
    """Null entries, no or null secret, Version 0 or absent, and no Value nor
    non-empty TextValue: skipped, silently."""
    fc = load(tmp_path, {"skipped": entry, "kept": {"secret": {"Version": 1, "Value": SAUCE}}})
    with pytest.raises(NotFound):
        fc.get("skipped")
    assert fc.names() == ["kept"]


def test_explicit_empty_value_is_an_empty_secret(tmp_path: Path) -> None:
    """Unlike Go, an entry with a "Value" member of "" holds the empty secret
    (Go cannot represent one); Version 0 still skips it."""
    fc = load(
        tmp_path,
        {
            "empty": {"secret": {"Version": 2, "Value": ""}},
            "empty-v0": {"secret": {"Version": 0, "Value": ""}},
        },
    )
    assert fc.get("empty") == SecretValue(b"", 2)
    with pytest.raises(NotFound):
        fc.get("empty-v0")


def test_largest_version_and_line_breaks_in_base64(tmp_path: Path) -> None:
    """Version 4294967295 is a uint32; \\r and \\n inside base64 are ignored;
    non-zero trailing bits are accepted, as Go's (non-strict) StdEncoding does."""
    fc = load(
        tmp_path,
        {
            "a": {"secret": {"Version": 4294967295, "Value": "c2F1\r\nY2U=\n"}},
            "bits": {"secret": {"Version": 1, "Value": "YR=="}},
            "one": {"secret": {"Version": 1, "Value": "YWI="}},
        },
    )
    assert fc.get("a") == SecretValue(b"sauce", 4294967295)
    assert fc.get("bits").value == b"a"
    assert fc.get("one").value == b"ab"


def test_file_is_read_once(tmp_path: Path) -> None:
    """Later changes to the file are not observed."""
    path = write(tmp_path, json.dumps({"a": {"secret": {"Version": 1, "Value": SAUCE}}}))
    fc = FileClient(path)
    path.write_text(json.dumps({"a": {"secret": {"Version": 2, "TextValue": "new"}}}))
    assert fc.get("a") == SecretValue(b"sauce", 1)
    os.remove(path)
    assert fc.get("a").value == b"sauce"


def test_accepts_path_objects_and_strings(tmp_path: Path) -> None:
    """A FileClient takes a str or a PathLike."""
    path = write(tmp_path, GO_SECRETS)
    assert FileClient(str(path)).path == FileClient(path).path == str(path)


def test_repr_shows_no_names_or_values(go_client: FileClient) -> None:
    """repr names the file and counts the secrets; no name, no value."""
    text = repr(go_client)
    assert text.endswith("secrets.json', 3 secrets)")
    for hidden in ("sauce", "apple", SAUCE):
        assert hidden not in text


# --- a Store's cache blob is valid input ------------------------------------------------


def test_reads_a_store_cache_blob(tmp_path: Path) -> None:
    """A cache blob is FileClient input: active values are served, entries
    holding only explicit versions ("secret": null) are skipped, an empty secret in the
    cache reads back empty."""
    blob = cacheblob.encode(
        {
            "alpha": cacheblob.CachedEntry(SecretValue(b"bazquux", 2), last_access=1),
            "apple": cacheblob.CachedEntry(
                SecretValue(b"a2", 2), versions={1: b"a1", 2: b"a2"}, last_access=7
            ),
            "only-versions": cacheblob.CachedEntry(None, versions={3: b"v3"}),
            "blank": cacheblob.CachedEntry(SecretValue(b"", 1)),
        }
    )
    fc = FileClient(write(tmp_path, blob, "cache.json"))
    assert fc.get("alpha") == SecretValue(b"bazquux", 2)
    assert fc.get("apple") == SecretValue(b"a2", 2)
    assert fc.get("blank") == SecretValue(b"", 1)
    with pytest.raises(NotFound):
        fc.get("only-versions")


def test_reads_the_exact_go_cache_example(tmp_path: Path) -> None:
    """The cache example from Go's tests, verbatim."""
    path = write(
        tmp_path, '{"alpha":{"secret":{"Value":"YmF6cXV1eA==","Version":2},"lastAccess":"1"}}'
    )
    assert FileClient(path).get("alpha") == SecretValue(b"bazquux", 2)


# --- bad input: errors name the file and the entry, never a value ------------------------


@pytest.mark.parametrize(
    "version",
    ["-1", "1.5", "1.0", "1e2", "4294967296", '"5"', "true", "[]", "{}", "1E400"],
)
def test_version_must_be_a_uint32(tmp_path: Path, version: str) -> None:
    """Version must be an integer in 0..4294967295; anything else fails the whole
    file, naming the entry."""
    text = f'{{"svc/key": {{"secret": {{"Version": {version}, "Value": "{LEAK_B64}"}}}}}}'
    error = decode_error(tmp_path, text)
    assert 'entry "svc/key"' in str(error)
    assert "Version must be an integer in 0..4294967295" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        LEAK_B64.rstrip("=") + "_-",  # URL-safe alphabet
        LEAK_B64 + "=",  # padding after a complete quantum
        LEAK_B64 + "====",  # a whole quantum of padding
        "ZmlsZXNlY3JldC05Zg===",  # too much padding
        "ZmlsZXNlY3JldC05Zj",  # missing padding
        "ZmlsZXNl Y3JldC05ZjNl",  # a space
        "ZmlsZXNlY3JldC05ZjNl\t",  # a tab (only \r and \n are ignored)
        "=ZmlsZXNlY3JldC05ZjNl",  # leading padding
        "ZmlsZXNlY3JldC05ZjNl" + "é",  # not ASCII
        LEAK_TEXT,  # plain text where base64 belongs
    ],
)
def test_value_must_be_padded_standard_base64(tmp_path: Path, value: str) -> None:
    """Value is padded standard base64; the error names the entry and
    suggests TextValue, without echoing the value."""
    error = decode_error(
        tmp_path, json.dumps({"svc/key": {"secret": {"Version": 1, "Value": value}}})
    )
    assert 'entry "svc/key"' in str(error)
    assert "not standard padded base64" in str(error)
    assert value not in str(error)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"k": {"secret": {"Version": 1, "Value": 5}}}, "Value must be a base64 string"),
        ({"k": {"secret": {"Version": 1, "Value": [1, 2]}}}, "Value must be a base64 string"),
        ({"k": {"secret": {"Version": 1, "TextValue": 5}}}, "TextValue must be a string"),
        ({"k": {"secret": {"Version": 1, "TextValue": True}}}, "TextValue must be a string"),
        ({"k": {"secret": "c2F1Y2U="}}, "secret: expected a JSON object, found a string"),
        ({"k": {"secret": [1]}}, "secret: expected a JSON object, found an array"),
        ({"k": 5}, "expected a JSON object, found an integer"),
        ({"k": "c2F1Y2U="}, "expected a JSON object, found a string"),
    ],
)
def test_malformed_entries(tmp_path: Path, doc: object, expected: str) -> None:
    """A member of the wrong JSON type fails the whole file, naming the entry."""
    error = decode_error(tmp_path, json.dumps(doc))
    assert 'entry "k": ' in str(error)
    assert expected in str(error)


@pytest.mark.parametrize(
    "doc",
    [
        {"": {"secret": {"Version": 10, "Value": LEAK_TEXT}}},
        {"zero": {"secret": {"Version": 0, "Value": LEAK_TEXT}}},
        {"zero": {"secret": {"Version": -3, "TextValue": LEAK_TEXT}}},
    ],
)
def test_entries_that_would_be_skipped_are_still_checked(tmp_path: Path, doc: object) -> None:
    """Go decodes the whole file first, so bad base64 or a bad version fails it
    even in an entry that would then be skipped."""
    decode_error(tmp_path, json.dumps(doc))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("[]", "an array"),
        ("1", "an integer"),
        ('"' + LEAK_TEXT + '"', "a string"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_top_level_must_be_an_object(tmp_path: Path, text: str, found: str) -> None:
    """A file that is not a JSON object is an error (null included: Go would read it as
    an empty file)."""
    error = decode_error(tmp_path, text)
    assert f"expected a JSON object of secret name -> entry, found {found}" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        '{"a": {"secret": {"Version": 1, "TextValue": "' + LEAK_TEXT + '"}}',  # truncated
        '{"a": {"secret": {"Version": 1, "TextValue": "' + LEAK_TEXT + '\\q"}}}',  # bad escape
        '{"a": {"secret": {"Version": 1, "TextValue": "\\u' + LEAK_TEXT[:2] + '"}}}',
        "\ufeff{}",  # a byte order mark
        '{"' + LEAK_TEXT + "}",
    ],
)
def test_invalid_json(tmp_path: Path, text: str) -> None:
    """Invalid JSON names the file and the position, never the decoder's message or
    the document."""
    error = decode_error(tmp_path, text)
    assert "not valid JSON" in str(error)


def test_invalid_json_gives_line_and_column(tmp_path: Path) -> None:
    """The position of a JSON error is given, so it can be found without a value."""
    error = decode_error(tmp_path, '{\n  "a": {"secret": {"Version": 1,, }}\n}')
    assert "not valid JSON (line 2, column 33)" in str(error)


def test_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is an error that does not quote the offending byte."""
    error = decode_error(tmp_path, b'{"a": {"secret": {"Version": 1, "TextValue": "\xff\xfe"}}}')
    assert "not UTF-8" in str(error)
    assert "xff" not in str(error)


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file, or a directory, is a ConfigError naming the path."""
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=r"cannot read secrets file .*missing.json: No such file"):
        FileClient(missing)
    with pytest.raises(ConfigError, match="cannot read secrets file"):
        FileClient(tmp_path)


def test_path_through_a_file(tmp_path: Path) -> None:
    """An OS error other than a missing file (here ENOTDIR, which root meets too; a
    permission error needs a non-root user) is a ConfigError naming the path and the
    cause."""
    path = write(tmp_path, GO_SECRETS)
    with pytest.raises(ConfigError, match=r"cannot read secrets file .*: Not a directory"):
        FileClient(path / "inside.json")


def test_errors_are_setec_errors(tmp_path: Path) -> None:
    """Every FileClient error is a SetecError a caller can catch."""
    with pytest.raises(SetecError):
        FileClient(write(tmp_path, "[]"))


# --- the docs example (docs/client.md, FileClient) --------------------------------


def test_docs_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/client.md: the FileClient example, as written, with a Store over it."""
    monkeypatch.chdir(tmp_path)
    import tempfile

    path = os.path.join(tempfile.mkdtemp(dir=tmp_path), "secrets.json")
    with open(path, "w") as f:
        f.write("""{
  "svc/api-key":  {"secret": {"Version": 3, "Value": "c2VjcmV0LWJ5dGVz"}},
  "svc/password": {"secret": {"Version": 7, "TextValue": "hunter2"}},
  "svc/ignored":  {"note": "no secret key, skipped"}
}""")

    files = FileClient(path)
    assert files.get("svc/api-key").value == b"secret-bytes"
    assert files.get("svc/api-key").version == 3
    with Store(files, ["svc/api-key", "svc/password"], poll_interval=None) as from_file:
        # secret() returns Optional, though never None for a declared name: hence the ignore
        assert from_file.secret("svc/password")() == b"hunter2"  # type: ignore[misc]
