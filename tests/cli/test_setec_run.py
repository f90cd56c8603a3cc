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
from setec_cli.run import environment_value, parse_secret_option
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
            'secret "{name}" is not UTF-8 text, so it cannot be the environment variable V',
        ),
        (
            SECRET + b"\0",
            'secret "{name}" contains a NUL byte, which the environment variable V cannot hold',
        ),
    ],
)
def test_values_that_cannot_be_environment_variables(value: bytes, message: str) -> None:
    """A value that is not text, or holds a NUL, is an error naming the secret."""
    with pytest.raises(CommandError) as info:
        environment_value("app/key", "V", value)
    assert info.value.message == message.format(name="app/key")


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


def test_usage_errors(server: LocalServer) -> None:
    """A VAR given twice, no --secret or no program are usage errors (exit 2)."""
    twice = setec("run", "--secret", "V=a", "--secret", "V=b", "--", "true", server=server.url)
    assert twice.returncode == 2
    assert b"V is given twice" in twice.stderr
    assert setec("run", "--", "true", server=server.url).returncode == 2
    assert setec("run", "--secret", "V=a", server=server.url).returncode == 2


def test_program_not_found_exits_127(server: LocalServer, name: str) -> None:
    """A program that does not exist: exit 127, as a shell would."""
    server.client().put(name, SECRET)
    proc = setec("run", "--secret", f"V={name}", "--", "no-such-program-x", server=server.url)
    assert (proc.returncode, proc.stderr) == (
        127,
        b'Error: cannot run "no-such-program-x": No such file or directory\n',
    )
