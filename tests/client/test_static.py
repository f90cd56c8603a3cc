"""Static helpers: fixed secrets as Secret handles, as Go's."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from setec_core.client import Secret, static_file, static_secret, static_text_file
from setec_core.errors import ConfigError

LEAK = b"static-secret-2e6f"


def test_static_secret_bytes_and_text() -> None:
    """static_secret returns a handle that always gives the same bytes; text is
    encoded as UTF-8."""
    key = static_secret(b"test-key")
    assert isinstance(key, Secret)
    assert key() == key.get() == b"test-key"
    assert key.get_string() == "test-key"
    assert static_secret("päss")() == "päss".encode()
    assert static_secret(b"")() == b""


def test_static_secret_copies_mutable_input() -> None:
    """A bytearray given to static_secret is copied: changing it later does not change
    the secret."""
    buffer = bytearray(b"abc")
    secret = static_secret(buffer)
    buffer[0] = ord("X")
    assert secret() == b"abc"
    assert static_secret(memoryview(b"mv"))() == b"mv"


def test_static_secret_rejects_other_types() -> None:
    """Anything but bytes or str is a TypeError naming the type, not the value."""
    with pytest.raises(TypeError, match="must be bytes or str, not int"):
        static_secret(1234)  # type: ignore[arg-type]


def test_static_file_exact_bytes_read_once(tmp_path: Path) -> None:
    """static_file gives the file's exact bytes (whitespace included), read once."""
    path = tmp_path / "secret.bin"
    path.write_bytes(b"  \x00\xffkey\n")
    secret = static_file(path)
    path.write_bytes(b"changed")
    assert secret() == b"  \x00\xffkey\n"
    os.remove(path)
    assert secret() == b"  \x00\xffkey\n"
    path.write_bytes(b"by name")
    assert static_file(str(path))() == b"by name"


def test_static_text_file_trims_whitespace(tmp_path: Path) -> None:
    """static_text_file trims leading and trailing whitespace (not inner)."""
    path = tmp_path / "password.txt"
    path.write_bytes(b"\r\n\t hunter 2 \n\n")
    assert static_text_file(path)() == b"hunter 2"
    path.write_bytes(b" \n ")
    assert static_text_file(path)() == b""


@pytest.mark.parametrize("helper", [static_file, static_text_file])
def test_unreadable_file_names_the_path(tmp_path: Path, helper: Callable[[Path], Secret]) -> None:
    """A file that cannot be read (missing, a directory) is a ConfigError naming
    the path, with the reason."""
    with pytest.raises(
        ConfigError, match=r"reading static secret .*missing.txt: No such file or directory"
    ):
        helper(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="reading static secret"):
        helper(tmp_path)


def test_repr_shows_no_value(tmp_path: Path) -> None:
    """A static handle's repr never shows the value."""
    path = tmp_path / "s"
    path.write_bytes(LEAK)
    for secret in (static_secret(LEAK), static_file(path), static_text_file(path)):
        assert repr(secret) == "Secret(<static>)"
        assert LEAK.decode() not in repr(secret)


# --- the docs example (docs/client.md, static secrets) ----------------------------


def test_docs_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/client.md: the static secrets example, as written."""
    monkeypatch.chdir(tmp_path)

    key = static_secret(b"test-key")  # or a str, encoded as UTF-8
    assert key() == b"test-key"
    assert key.get_string() == "test-key"

    with open("db-password.txt", "w") as f:
        f.write("hunter2\n")
    assert static_file("db-password.txt")() == b"hunter2\n"  # exact bytes, read once
    assert static_text_file("db-password.txt")() == b"hunter2"  # whitespace trimmed
