"""``setec run``: the program starts with the secrets in its environment, or not at all.

The child never prints a value: it prints a hash, or compares and exits with a code.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import click
import pytest
from console_scripts import run_setec

from setec_cli.options import CommandError
from setec_cli.run import (
    Binding,
    environment_value,
    parse_env_file,
    parse_secret_option,
    variable_name,
)
from setec_core.testing import audit_entries
from setec_core.testing.server import LocalServer

SECRET = b"s3cret-d0-not-print-9b4f"


# The child prints the SHA-256 of each variable named in its arguments ("-" if unset).
HASH_ENV = (
    "import hashlib, os, sys\n"
    "for var in sys.argv[1:]:\n"
    "    value = os.environ.get(var)\n"
    "    print(var, '-' if value is None else hashlib.sha256(value.encode()).hexdigest())\n"
)


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def setec(*args: str, server: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` against ``server``; never a traceback, never the secret."""
    proc = run_setec(*args, server=server, env=env)
    assert SECRET not in proc.stdout + proc.stderr
    return proc


_names = itertools.count()


@pytest.fixture
def name() -> str:
    """A secret name no other test uses."""
    return f"run/secret-{next(_names)}"


def test_child_sees_the_secrets(server: LocalServer, name: str) -> None:
    """Each --secret VAR=NAME becomes VAR; each secret is fetched once; SETEC_TOKEN is
    not passed on; the program's arguments, options included, reach it unchanged."""
    client = server.client()
    client.put(name, SECRET)
    other = "caf\u00e9 \u2603\n".encode()
    client.put(name + "-2", other)
    before = len(audit_entries(server.db))
    proc = setec(
        "run",
        "--secret", f"FIRST={name}",
        "--secret", f"AGAIN={name}",
        "--secret", f"OTHER={name}-2",
        "--", sys.executable, "-c", HASH_ENV, "FIRST", "AGAIN", "OTHER", "SETEC_TOKEN",
        server=server.url,
        SETEC_TOKEN="not-for-the-child",
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [
        f"FIRST {sha(SECRET)}",
        f"AGAIN {sha(SECRET)}",
        f"OTHER {sha(other)}",
        "SETEC_TOKEN -",
    ]
    gets = [e for e in audit_entries(server.db)[before:] if e["action"] == "get"]
    assert [e["secret"] for e in gets] == [name, name + "-2"]


def test_exit_code_is_the_programs(server: LocalServer, name: str) -> None:
    """setec becomes the program (exec), so its exit code is the program's."""
    server.client().put(name, SECRET)
    check = f"import os, sys; sys.exit(7 if os.environ['V'] == {SECRET.decode()!r} else 1)"
    proc = setec("run", "--secret", f"V={name}", sys.executable, "-c", check, server=server.url)
    assert proc.returncode == 7


def test_failed_fetch_runs_nothing(server: LocalServer, name: str, tmp_path: Path) -> None:
    """If any secret cannot be fetched, the message names it and the program never runs."""
    server.client().put(name, SECRET)
    marker = tmp_path / "ran"
    proc = setec(
        "run",
        "--secret", f"A={name}",
        "--secret", "B=run/missing",
        "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr == b'Error: failed to get secret "run/missing" for B: not found\n'
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            b"\xff" + SECRET,
            "{secret} is not UTF-8 text, so it cannot be the environment variable V",
        ),
        (
            SECRET + b"\0",
            "{secret} contains a NUL byte, which the environment variable V cannot hold",
        ),
    ],
)
@pytest.mark.parametrize(
    ("binding", "secret"),
    [
        (Binding("V", "app/key", "--secret"), 'secret "app/key"'),
        (Binding("V", "app/key", "app.env:3", hidden=True), "the secret on app.env:3"),
    ],
)
def test_values_that_cannot_be_environment_variables(
    value: bytes, message: str, binding: Binding, secret: str
) -> None:
    """A value that is not text, or holds a NUL, is an error naming the secret; one
    from an env file is named by FILE:LINE, not by its name."""
    with pytest.raises(CommandError) as info:
        environment_value(binding, value)
    assert info.value.message == message.format(secret=secret)


def test_binary_value_is_refused_end_to_end(server: LocalServer, name: str) -> None:
    """The same, through the console script: exit 1 and the program does not run."""
    server.client().put(name, b"\xff" + SECRET)
    proc = setec("run", "--secret", f"V={name}", "--", "true", server=server.url)
    assert (proc.returncode, proc.stderr) == (
        1,
        f'Error: secret "{name}" is not UTF-8 text, so it cannot be the environment '
        "variable V\n".encode(),
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("NAME", '"NAME" is not VAR=NAME'),
        ("V=", '"V=" is not VAR=NAME'),
        ("1V=a", '"1V" is not a variable name'),
        ("MY-VAR=a", '"MY-VAR" is not a variable name'),
    ],
)
def test_secret_option_is_checked(option: str, message: str) -> None:
    """--secret must be VAR=NAME with VAR a variable name."""
    command = click.Command("run")
    with pytest.raises(click.BadParameter, match=message):
        parse_secret_option(click.Context(command), click.Option(["--secret"]), (option,))


def test_name_that_is_not_utf8_is_refused(server: LocalServer) -> None:
    """A --secret name holding a byte that is not UTF-8 is refused in one line, as
    ``setec get`` refuses it, before anything reaches the server."""
    before = len(audit_entries(server.db))
    proc = setec("run", "--secret", "X=\udcff", "--", "true", server=server.url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1,
        b"",
        b'Error: secret name "\\xff" is not valid UTF-8\n',
    )
    assert len(audit_entries(server.db)) == before


def test_usage_errors(server: LocalServer) -> None:
    """A VAR given twice, no --secret, --env-file or --prefix, or no program are usage
    errors (exit 2)."""
    twice = setec("run", "--secret", "V=a", "--secret", "V=b", "--", "true", server=server.url)
    assert twice.returncode == 2
    assert b"V is given twice" in twice.stderr
    nothing = setec("run", "--", "true", server=server.url)
    assert nothing.returncode == 2
    assert b"give at least one of --secret, --env-file or --prefix" in nothing.stderr
    assert setec("run", "--secret", "V=a", server=server.url).returncode == 2


def test_program_not_found_exits_127(server: LocalServer, name: str) -> None:
    """A program that does not exist: exit 127, as a shell would."""
    server.client().put(name, SECRET)
    proc = setec("run", "--secret", f"V={name}", "--", "no-such-program-x", server=server.url)
    assert (proc.returncode, proc.stderr) == (
        127,
        b'Error: cannot run "no-such-program-x": No such file or directory\n',
    )


# --- --prefix ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "var"),
    [
        ("DB_PASSWORD", "DB_PASSWORD"),
        ("db/password", "DB_PASSWORD"),
        ("api-key", "API_KEY"),
        ("api.key v2", "API_KEY_V2"),
        ("2fa.seed", "_2FA_SEED"),
        ("_private", "_PRIVATE"),
        ("caf\u00e9", "CAF_"),
        ("stra\u00dfe", "STRA_E"),  # per character: not Python's "SS"
        ("\u0661x", "_X"),  # a non-ASCII digit is not a digit here
        ("", ""),
    ],
)
def test_variable_name_rule(rest: str, var: str) -> None:
    """--prefix's rule: ASCII letters upper-cased, ASCII digits and _ kept, anything else
    _, and a leading digit gets a _ in front."""
    assert variable_name(rest) == var


@pytest.fixture
def prefix() -> str:
    """A prefix no other test uses."""
    return f"run/prefix-{next(_names)}"


def gets_since(server: LocalServer, before: int) -> list[str]:
    """The names of the secrets fetched since audit entry ``before``."""
    return [e["secret"] for e in audit_entries(server.db)[before:] if e["action"] == "get"]


def test_prefix_sets_every_secret_under_it(server: LocalServer, prefix: str) -> None:
    """--prefix sets a variable for each secret under PREFIX/ (not the prefix itself,
    not a sibling sharing its first letters); repeatable; each secret fetched once."""
    client = server.client()
    client.put(f"{prefix}/db/password", SECRET)
    client.put(f"{prefix}/api-key", b"k")
    client.put(f"{prefix}x/OTHER", b"o")
    client.put(prefix, b"p")
    client.put(f"{prefix}-2/2fa", b"z")
    before = len(audit_entries(server.db))
    proc = setec(
        "run", "--prefix", prefix + "/", "--prefix", f"{prefix}-2",
        "--", sys.executable, "-c", HASH_ENV, "DB_PASSWORD", "API_KEY", "_2FA", "OTHER",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [
        f"DB_PASSWORD {sha(SECRET)}",
        f"API_KEY {sha(b'k')}",
        f"_2FA {sha(b'z')}",
        "OTHER -",
    ]
    assert sorted(gets_since(server, before)) == sorted(
        [f"{prefix}/db/password", f"{prefix}/api-key", f"{prefix}-2/2fa"]
    )


def test_prefix_clash_is_refused_before_any_fetch(
    server: LocalServer, prefix: str, tmp_path: Path
) -> None:
    """Two secrets making one variable: one line naming both, before any value is
    fetched and without running the program."""
    client = server.client()
    client.put(f"{prefix}/db-url", SECRET)
    client.put(f"{prefix}/db_url", SECRET)
    marker = tmp_path / "ran"
    before = len(audit_entries(server.db))
    proc = setec(
        "run", "--prefix", prefix, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert (
        proc.stderr
        == (
            f'Error: secrets "{prefix}/db-url" and "{prefix}/db_url" both become the variable '
            "DB_URL; rename one, or choose with --secret DB_URL=NAME\n"
        ).encode()
    )
    assert gets_since(server, before) == []
    assert not marker.exists()


def test_secret_settles_a_clash_and_wins_over_prefix(server: LocalServer, prefix: str) -> None:
    """An explicit --secret VAR wins over --prefix's VAR (even a clashing one), and the
    secrets it displaces are not fetched."""
    client = server.client()
    client.put(f"{prefix}/db-url", b"dash")
    client.put(f"{prefix}/db_url", b"underscore")
    client.put(f"{prefix}/token", b"from-prefix")
    client.put(f"{prefix}-override", SECRET)
    before = len(audit_entries(server.db))
    proc = setec(
        "run", "--prefix", prefix,
        "--secret", f"DB_URL={prefix}/db_url", "--secret", f"TOKEN={prefix}-override",
        "--", sys.executable, "-c", HASH_ENV, "DB_URL", "TOKEN",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [
        f"DB_URL {sha(b'underscore')}",
        f"TOKEN {sha(SECRET)}",
    ]
    assert sorted(gets_since(server, before)) == sorted([f"{prefix}/db_url", f"{prefix}-override"])


def test_prefix_refusals(server: LocalServer, prefix: str) -> None:
    """A prefix with nothing under it (likely a typo) and a secret with no name after
    the prefix are refused, naming them; an empty prefix is a usage error."""
    empty = setec("run", "--prefix", prefix, "--", "true", server=server.url)
    assert (empty.returncode, empty.stderr) == (
        1,
        f'Error: no secrets under "{prefix}/" (that you may list); check the prefix with '
        "'setec list'\n".encode(),
    )
    server.client().put(f"{prefix}/", SECRET)
    nameless = setec("run", "--prefix", prefix, "--", "true", server=server.url)
    assert (nameless.returncode, nameless.stderr) == (
        1,
        f'Error: secret "{prefix}/" has no name after the prefix "{prefix}", so it cannot '
        "become an environment variable; rename it, or use --secret VAR=NAME for the "
        "secrets under that prefix\n".encode(),
    )
    slash = setec("run", "--prefix", "/", "--", "true", server=server.url)
    assert slash.returncode == 2
    assert b"must name a prefix" in slash.stderr


# --- --env-file -------------------------------------------------------------------------


def test_env_file_sets_its_variables(server: LocalServer, name: str, tmp_path: Path) -> None:
    """VAR=NAME lines, with blank lines, # comments, spaces around the parts and CRLF
    line ends; a # after the name is part of it."""
    client = server.client()
    client.put(name, SECRET)
    client.put(name + " #2", b"hash")
    env_file = tmp_path / "run.env"
    env_file.write_bytes(
        f"# which secret is which\n\n  FIRST = {name}  \r\nSECOND={name} #2\n".encode()
    )
    proc = setec(
        "run", "--env-file", str(env_file), "--", sys.executable, "-c", HASH_ENV, "FIRST", "SECOND",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [f"FIRST {sha(SECRET)}", f"SECOND {sha(b'hash')}"]


def test_precedence_secret_env_file_prefix(
    server: LocalServer, prefix: str, tmp_path: Path
) -> None:
    """--secret wins over --env-file, which wins over --prefix, for the same variable."""
    client = server.client()
    for key in ("A", "B", "C"):
        client.put(f"{prefix}/{key}", f"prefix-{key}".encode())
        client.put(f"{prefix}-file/{key}", f"file-{key}".encode())
    client.put(f"{prefix}-flag", b"flag-A")
    env_file = tmp_path / "run.env"
    env_file.write_text(f"A={prefix}-file/A\nB={prefix}-file/B\n")
    proc = setec(
        "run", "--prefix", prefix, "--env-file", str(env_file), "--secret", f"A={prefix}-flag",
        "--", sys.executable, "-c", HASH_ENV, "A", "B", "C",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines() == [
        f"A {sha(b'flag-A')}",
        f"B {sha(b'file-B')}",
        f"C {sha(b'prefix-C')}",
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            ["A=x\n" + SECRET.decode() + "\n"],  # a value pasted where a name belongs
            "{0}:2: expected VAR=SECRET-NAME, where VAR is a letter or _ followed by letters, "
            "digits or _ (the line is not shown: it may hold a secret)",
        ),
        (["A=\n"], "{0}:1: expected VAR=SECRET-NAME"),
        (["A " + SECRET.decode() + "\n"], "{0}:1: expected VAR=SECRET-NAME"),
        (["1A=x\n"], "{0}:1: expected VAR=SECRET-NAME"),
        (["A=x\n# c\nA=y\n"], "{0}:3: A is set again (first on line 1)"),
        (
            ['A=x\nB="' + SECRET.decode() + '"\n'],  # dotenv's syntax for a value
            "{0}:2: B is given a quoted value, so this file holds values; --env-file takes "
            "VAR=secret-name lines (the line is not shown: it may hold a secret)",
        ),
        (["A = '" + SECRET.decode() + "'\n"], "{0}:1: A is given a quoted value"),
        (["A=x\n", "\nA=y\n"], "{1}:2: A is set again (first on {0}:1)"),
    ],
)
def test_env_file_refusals(
    server: LocalServer, tmp_path: Path, files: list[str], message: str
) -> None:
    """A malformed line or a VAR set twice (in one file or two) is refused, naming the
    file and line, before anything is fetched; the line itself is never quoted (setec()
    checks that SECRET is never printed)."""
    paths = []
    for i, text in enumerate(files):
        path = tmp_path / f"run-{i}.env"
        path.write_text(text)
        paths.append(str(path))
    before = len(audit_entries(server.db))
    args = [arg for path in paths for arg in ("--env-file", path)]
    proc = setec("run", *args, "--", "true", server=server.url)
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"Error: " + message.format(*paths).encode())
    assert gets_since(server, before) == []


def test_env_file_that_cannot_be_read(server: LocalServer, tmp_path: Path) -> None:
    """A missing file or one that is not UTF-8: the message names it (and the line)."""
    missing = setec(
        "run", "--env-file", str(tmp_path / "nope.env"), "--", "true", server=server.url
    )
    assert (missing.returncode, missing.stderr) == (
        1,
        f'Error: cannot read --env-file "{tmp_path}/nope.env": No such file or directory; '
        "check the path and that you may read the file\n".encode(),
    )
    binary = tmp_path / "bin.env"
    binary.write_bytes(b"A=x\nB=\xff\n")
    proc = setec("run", "--env-file", str(binary), "--", "true", server=server.url)
    assert (proc.returncode, proc.stderr) == (1, f"Error: {binary}:2: not UTF-8 text\n".encode())


def test_env_file_of_values_sends_and_shows_none(
    server: LocalServer, name: str, tmp_path: Path
) -> None:
    """A Docker-style .env of values (VAR=value) given to --env-file: the "name" not
    being one ``list`` shows, it is refused naming the variable and FILE:LINE only,
    after one list and no get, so the value reaches neither the output nor the audit
    log (setec() checks the output); the program does not run."""
    server.client().put(name, b"ok")
    env_file = tmp_path / "app.env"
    env_file.write_text(f"# app\nAPP={name}\nDB_PASSWORD={SECRET.decode()}\n")
    marker = tmp_path / "ran"
    before = len(audit_entries(server.db))
    proc = setec(
        "run", "--env-file", str(env_file),
        "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1,
        b"",
        f"Error: failed to get the secret for DB_PASSWORD ({env_file}:3): not found among "
        "the secrets you may list; each line must be VAR=secret-name, not a value\n".encode(),
    )
    entries = audit_entries(server.db)[before:]
    assert [(e["action"], e.get("secret")) for e in entries] == [("info", None)]
    assert not marker.exists()


def test_env_file_secrets_are_named_by_file_and_line(
    server: LocalServer, name: str, tmp_path: Path
) -> None:
    """A secret from an env file whose value cannot be an environment variable is named
    by FILE:LINE, as every message about an env-file name is; with --prefix too, the
    names are listed once."""
    server.client().put(name, b"\xff" + SECRET)
    server.client().put(name + "-p/OTHER", b"o")
    env_file = tmp_path / "run.env"
    env_file.write_text(f"V={name}\n")
    before = len(audit_entries(server.db))
    proc = setec(
        "run", "--env-file", str(env_file), "--prefix", name + "-p", "--", "true",
        server=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (
        1,
        f"Error: the secret on {env_file}:1 is not UTF-8 text, so it cannot be the "
        "environment variable V\n".encode(),
    )
    lists = [e for e in audit_entries(server.db)[before:] if e["action"] == "info"]
    assert len(lists) == 1


def test_parse_env_file() -> None:
    """The parser returns (VAR, NAME, line) in file order, skipping blanks and comments."""
    text = "\ufeff# c\nA=x/y\n\n  # indented comment\nB = a b \n"
    assert parse_env_file(text, "f") == [("A", "x/y", 2), ("B", "a b", 5)]
