""".env and JSON secret files (the parser and writer in process), and ``setec import``
and ``setec export`` as subprocesses against a real server: round trips, dry runs,
malformed files, and values that never appear in any output."""

from __future__ import annotations

import itertools
import json
import os
import pty
import stat
import subprocess
from pathlib import Path

import pytest
from console_scripts import run_setec
from hypothesis import given
from hypothesis import strategies as st

from setec_cli.dotenv import Entry, SecretFileError, parse_env, parse_json, render_env, render_json
from setec_cli.transfer import guess_format
from setec_core.testing.server import LocalServer

SECRET = "s3cret-d0-not-print-5d2a"


def setec(
    *args: str, server: str, stdin: bytes = b"", stdout: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` against ``server``; never a traceback."""
    return run_setec(*args, server=server, stdin=stdin, stdout=stdout)


_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """A secret-name prefix no other test uses."""
    return f"transfer/t{next(_prefixes)}"


def values(server: LocalServer, prefix: str) -> dict[str, bytes]:
    client = server.client()
    return {
        info.name[len(prefix) + 1 :]: client.get(info.name).value
        for info in client.list()
        if info.name.startswith(prefix + "/")
    }


# --- .env parsing -------------------------------------------------------------------


ENV_CASES = [
    ("KEY=value", {"KEY": "value"}),
    ("export KEY=value", {"KEY": "value"}),
    ("  KEY = spaced value   ", {"KEY": "spaced value"}),
    ("KEY=", {"KEY": ""}),
    ("KEY=a#b", {"KEY": "a#b"}),
    ("KEY=a #comment", {"KEY": "a"}),
    ("KEY=a\t# comment", {"KEY": "a"}),
    ("# comment\n\n   # indented comment\nKEY=v", {"KEY": "v"}),
    ("KEY='single $HOME \\n \"x\"'", {"KEY": 'single $HOME \\n "x"'}),
    ("KEY='#not a comment' # a comment", {"KEY": "#not a comment"}),
    ('KEY="a\\nb\\tc\\\\d\\"e\\$f\\\'g"', {"KEY": "a\nb\tc\\d\"e$f'g"}),
    ('KEY="\\a\\b\\f\\v\\r"', {"KEY": "\a\b\f\v\r"}),
    ('KEY="unknown \\q escape"', {"KEY": "unknown \\q escape"}),
    ('KEY="$HOME ${X}"', {"KEY": "$HOME ${X}"}),
    ('KEY=""', {"KEY": ""}),
    ('KEY="multi\nline"\nNEXT=1', {"KEY": "multi\nline", "NEXT": "1"}),
    ("KEY='multi\n\nline'", {"KEY": "multi\n\nline"}),
    ("A=1\r\nB='2'\r\n", {"A": "1", "B": "2"}),
    ("\ufeffA=1", {"A": "1"}),
    ("_under_9=x", {"_under_9": "x"}),
    ("KEY=caf\u00e9 \u2603", {"KEY": "caf\u00e9 \u2603"}),
]


@pytest.mark.parametrize(("text", "expected"), ENV_CASES)
def test_parse_env(text: str, expected: dict[str, str]) -> None:
    """.env: comments, export, quotes, escapes in double quotes only, no interpolation."""
    entries = parse_env(text, "app.env")
    assert {e.key: e.value.decode() for e in entries} == expected
    assert [e.key for e in entries] == list(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"A=1\n{SECRET}\n", "app.env:2: expected KEY=value"),
        (f"1KEY={SECRET}", "app.env:1: expected KEY=value"),
        (f"KEY-NAME={SECRET}", "app.env:1: expected KEY=value"),
        (f"export {SECRET}", "app.env:1: expected KEY=value"),
        (f"A=1\nKEY='{SECRET}\nmore", "app.env:2: the single-quoted value of KEY is not closed"),
        (f'KEY="{SECRET}', "app.env:1: the double-quoted value of KEY is not closed"),
        (
            f'KEY="{SECRET}" {SECRET}',
            "app.env:1: unexpected text after the closing quote of KEY's value",
        ),
        (f"KEY='x\n{SECRET}' {SECRET}", "app.env:2: unexpected text after the closing quote"),
        (f"KEY=1\nKEY={SECRET}", "app.env:2: KEY is set again (first on line 1)"),
    ],
)
def test_malformed_env_names_the_line_not_the_value(text: str, message: str) -> None:
    """A malformed line is reported by file and line number; its text is never shown."""
    with pytest.raises(SecretFileError) as info:
        parse_env(text, "app.env")
    assert str(info.value).startswith(message)
    assert SECRET not in str(info.value)


KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


@given(st.dictionaries(KEYS, st.text(), max_size=5))
def test_env_round_trip(secrets: dict[str, str]) -> None:
    """Whatever the text, render_env writes what parse_env reads back exactly."""
    text = render_env(secrets.items())
    assert {e.key: e.value.decode() for e in parse_env(text, "x.env")} == secrets


def test_render_env_quotes_literally() -> None:
    """Single quotes where possible (every dotenv reader takes them literally), else
    double quotes with $ escaped too."""
    rendered = render_env([("A", "plain $HOME"), ("B", "it's\n"), ("C", "")])
    assert rendered == "A='plain $HOME'\nB=\"it's\\n\"\nC=''\n"
    with pytest.raises(ValueError, match=r"'a-b' is not a valid \.env key"):
        render_env([("a-b", "x")])


# --- JSON ---------------------------------------------------------------------------------


def test_parse_json() -> None:
    """JSON: an object of strings, and {"base64": ...} for bytes that are not text."""
    entries = parse_json('{"A": "x\\ny", "B": {"base64": "AP8="}, "c/d": ""}', "s.json")
    assert entries == [Entry("A", b"x\ny"), Entry("B", b"\x00\xff"), Entry("c/d", b"")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f'["{SECRET}"]', 's.json: expected a JSON object, {"KEY": "value", ...}'),
        (
            '{"A": 1}',
            's.json: the value of "A" must be a string or {"base64": "..."}, not a number',
        ),
        ('{"A": null}', "not null"),
        ('{"A": {"base64": "!!"}}', 's.json: the value of "A" is not valid base64'),
        ('{"A": {"base64": "YWJj="}}', 's.json: the value of "A" is not valid base64'),
        ("[" * 100_000, "s.json: not valid JSON: nested too deeply"),
        ('{"A": ' + "9" * 5000 + "}", "s.json: not valid JSON: a number is too long"),
        ('{"A": {"base64": "YWJj\u00e9"}}', 's.json: the value of "A" is not valid base64'),
        ('{"A": {"base64": "AA==", "x": 1}}', "not an object"),
        (f'{{"A": "{SECRET}", "A": "2"}}', 's.json: "A" is set twice'),
        (f'{{"A": "{SECRET}",\n "B" "x"}}', "s.json:2:6: not valid JSON: Expecting ':' delimiter"),
        ('{"": "x"}', "s.json: a key is empty"),
        ('{"\\udc00": "x"}', "s.json: a key holds an unpaired surrogate escape"),
        ('{"A": "\\ud800"}', 's.json: the value of "A" holds an unpaired surrogate escape'),
    ],
)
def test_malformed_json(text: str, message: str) -> None:
    """A bad JSON file says where and what, never a value."""
    with pytest.raises(SecretFileError) as info:
        parse_json(text, "s.json")
    assert message in str(info.value)
    assert SECRET not in str(info.value)


@given(st.dictionaries(st.text(min_size=1), st.binary(), max_size=5))
def test_json_round_trip(secrets: dict[str, bytes]) -> None:
    """render_json writes text as strings and other bytes as base64; parse_json agrees."""
    entries = parse_json(render_json(secrets.items()), "x.json")
    assert {e.key: e.value for e in entries} == secrets


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        (".env", "env"),
        ("prod.env", "env"),
        ("dir/.env.local", "env"),
        ("secrets.json", "json"),
        ("SECRETS.JSON", "json"),
        ("secrets.txt", None),
        ("-", None),
    ],
)
def test_guess_format(path: str, fmt: str | None) -> None:
    """The format comes from the file name unless --format says."""
    assert guess_format(path) == fmt


# --- import and export, end to end --------------------------------------------------------

ENV_FILE = """\
# The app's secrets
export DB_PASS='p@ss w0rd $HOME'
API_KEY="line1\\nline2 \\"quoted\\" \\\\ tab\\t"   # a comment
PLAIN = value with spaces   # another comment
PEM="-----BEGIN KEY-----
abc
-----END KEY-----"
"""

ENV_VALUES = {
    "DB_PASS": b"p@ss w0rd $HOME",
    "API_KEY": b'line1\nline2 "quoted" \\ tab\t',
    "PLAIN": b"value with spaces",
    "PEM": b"-----BEGIN KEY-----\nabc\n-----END KEY-----",
}


def test_import_and_export_env_round_trip(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """import stores each KEY as PREFIX/KEY; export writes a .env that imports back to
    the same values; a second import changes nothing."""
    source = tmp_path / "app.env"
    source.write_text(ENV_FILE)
    imported = setec("import", str(source), "--prefix", prefix, server=server.url)
    assert (imported.returncode, imported.stderr) == (0, b"")
    assert (
        imported.stdout
        == (
            f'Imported 4 secrets from "{source}" under "{prefix}/" '
            "(4 created, 0 new versions, 0 unchanged)\n"
        ).encode()
    )
    assert values(server, prefix) == ENV_VALUES

    exported = setec("export", "--prefix", prefix + "/", server=server.url)
    assert exported.returncode == 0
    assert exported.stderr == f'Exported 4 secrets under "{prefix}/"\n'.encode()
    copy = tmp_path / "copy.env"
    copy.write_bytes(exported.stdout)
    again = setec("import", str(copy), "--prefix", prefix, server=server.url)
    assert again.stdout.endswith(b"(0 created, 0 new versions, 4 unchanged)\n")
    assert values(server, prefix) == ENV_VALUES


def test_import_new_versions_and_activate(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """A changed value becomes a new, inactive version, and the summary says so;
    --activate activates it."""
    client = server.client()
    client.put(f"{prefix}/A", b"old")
    source = tmp_path / "new.env"
    source.write_text("A=new\nB=fresh\n")
    proc = setec("import", str(source), "--prefix", prefix, server=server.url)
    assert (
        proc.stdout
        == (
            f'Imported 2 secrets from "{source}" under "{prefix}/" '
            "(1 created, 1 new version, 0 unchanged)\n"
            "  New versions are not active yet: run 'setec activate NAME VERSION', "
            "or import again with --activate\n"
        ).encode()
    )
    assert client.get(f"{prefix}/A").value == b"old"
    proc = setec("import", str(source), "--prefix", prefix, "--activate", server=server.url)
    assert proc.stdout.endswith(b"(0 created, 0 new versions, 2 unchanged, 1 activated)\n")
    assert client.get(f"{prefix}/A").value == b"new"


def test_json_round_trip_with_binary(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """JSON export writes a non-text value as {"base64": ...}; importing it restores it."""
    client = server.client()
    client.put(f"{prefix}/src/TEXT", SECRET.encode())
    client.put(f"{prefix}/src/BIN", b"\x00\xff\xfe")
    client.put(f"{prefix}/src/nested/key", b"n")
    out = tmp_path / "dump.json"
    proc = setec(
        "export", "--prefix", f"{prefix}/src", "--format", "json", "-o", str(out), server=server.url
    )
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text()) == {
        "BIN": {"base64": "AP/+"},
        "TEXT": SECRET,
        "nested/key": "n",
    }
    setec("import", str(out), "--prefix", f"{prefix}/dst", server=server.url)
    assert values(server, f"{prefix}/dst") == values(server, f"{prefix}/src")


def test_dry_run_lists_names_only(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """--dry-run names the secrets it would write, never a value, and writes nothing."""
    server.client().put(f"{prefix}/DB_PASS", b"x")
    source = tmp_path / "app.env"
    source.write_text(ENV_FILE)
    proc = setec("import", str(source), "--prefix", prefix, "--dry-run", server=server.url)
    assert proc.stdout.decode() == (
        f'Dry run: would write 4 secrets from "{source}":\n'
        f"  {prefix}/DB_PASS exists, active version 1\n"
        f"  {prefix}/API_KEY new secret\n"
        f"  {prefix}/PLAIN   new secret\n"
        f"  {prefix}/PEM     new secret\n"
    )
    assert set(values(server, prefix)) == {"DB_PASS"}


def test_malformed_file_writes_nothing(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """A malformed line stops the import before anything is written; the message names
    the file and line and not the value."""
    source = tmp_path / "bad.env"
    source.write_text(f"GOOD=1\n{SECRET}\n")
    proc = setec("import", str(source), "--prefix", prefix, server=server.url)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: {source}:2: expected KEY=value".encode())
    assert SECRET.encode() not in proc.stdout + proc.stderr
    assert values(server, prefix) == {}
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"A=1\nB=\xff" + SECRET.encode())
    proc = setec("import", str(binary), "--prefix", prefix, server=server.url)
    assert proc.stderr == f"Error: {binary}:2: not UTF-8 text\n".encode()


def test_import_format_from_flag_or_name(server: LocalServer, prefix: str, tmp_path: Path) -> None:
    """A name that says nothing needs --format; "-" reads standard input."""
    source = tmp_path / "secrets.txt"
    source.write_text('{"K": "v"}')
    unknown = setec("import", str(source), "--prefix", prefix, server=server.url)
    assert unknown.returncode == 2
    assert unknown.stderr.endswith(
        f'Error: cannot tell the format of "{source}" from its name; '
        "pass --format env or --format json\n".encode()
    )
    piped = setec(
        "import", "-", "--format", "env", "--prefix", prefix, server=server.url, stdin=b"K=v\n"
    )
    assert piped.stdout.startswith(b'Imported 1 secret from "<stdin>"')
    assert values(server, prefix) == {"K": b"v"}


def test_export_env_refuses_what_env_cannot_hold(server: LocalServer, prefix: str) -> None:
    """A value that is not text, or a name that is not a variable name, cannot go in a
    .env file: the error names the secret and points to --format json."""
    client = server.client()
    client.put(f"{prefix}/bin/B", b"\xff" + SECRET.encode())
    proc = setec("export", "--prefix", f"{prefix}/bin", server=server.url)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert (
        proc.stderr
        == (
            f'Error: secret "{prefix}/bin/B" is not UTF-8 text, so it cannot be written to a '
            '.env file; use --format json, which writes it as {"base64": "..."}\n'
        ).encode()
    )
    client.put(f"{prefix}/name/a-b", b"x")
    proc = setec("export", "--prefix", f"{prefix}/name", server=server.url)
    assert b'"a-b" is not a valid key' in proc.stderr


def test_export_refuses_a_terminal_unless_forced(server: LocalServer, prefix: str) -> None:
    """Secret values are not printed to a terminal unless --force."""
    server.client().put(f"{prefix}/K", SECRET.encode())
    master, slave = pty.openpty()
    try:
        refused = setec("export", "--prefix", prefix, server=server.url, stdout=slave)
        forced = setec("export", "--prefix", prefix, "--force", server=server.url, stdout=slave)
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert refused.returncode == 1
    assert refused.stderr.startswith(b"Error: refusing to print secret values to a terminal")
    assert forced.returncode == 0
    assert shown.replace(b"\r\n", b"\n") == f"K='{SECRET}'\n".encode()


def test_export_output_replaces_a_symlink_never_follows_it(
    server: LocalServer, prefix: str, tmp_path: Path
) -> None:
    """-o onto a symlink: the link is replaced by a new 0600 file; what it pointed at
    (which could be anyone's file) is untouched."""
    server.client().put(f"{prefix}/K", b"v")
    target = tmp_path / "someone-elses-file"
    target.write_text("precious")
    target.chmod(0o644)
    link = tmp_path / "out.env"
    link.symlink_to(target)
    proc = setec("export", "--prefix", prefix, "-o", str(link), server=server.url)
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "precious"
    assert not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert link.read_text() == "K='v'\n"
