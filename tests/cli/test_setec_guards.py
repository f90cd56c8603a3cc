"""The guard options of the ``setec`` write commands (docs/cli.md, "Guarded writes"):
``--if-active-version N``, ``--if-versions N,N,...`` and ``--if-absent`` on put,
create-version, activate, delete-version and delete, run as the console script against
a real server: a failed guard is one ``Error:`` line with the current state and exit 3;
bad option values are usage errors; a server without guards is refused before anything
is sent or read; no value is ever printed."""

from __future__ import annotations

import itertools

import pytest
from console_scripts import run_setec
from go_like_server import GoLikeServer

from setec_core.testing import SUPERUSER
from setec_core.testing.server import LocalServer

VALUE = b"cli-guarded-value-0e7f"
_names = itertools.count()


def fresh() -> str:
    """A secret name no other test of the module uses."""
    return f"guarded/{next(_names)}"


def setec(server: LocalServer | str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run ``setec ARGS``; return (exit status, stdout, stderr), after checking that the
    value shows in neither."""
    url = server if isinstance(server, str) else server.url
    proc = run_setec(*args, server=url, stdin=stdin)
    assert VALUE not in proc.stdout
    assert VALUE not in proc.stderr
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_put_if_absent_creates_once(server: LocalServer) -> None:
    """--if-absent: the first put creates the secret, the second exits 3 saying what is
    there now, and the value stays the first."""
    name = fresh()
    code, out, _ = setec(server, "put", "--if-absent", name, stdin=VALUE)
    assert (code, out) == (0, f'Secret saved as "{name}", version 1\n')
    code, out, err = setec(server, "put", name, "--if-absent", stdin=VALUE + b"2")
    assert (code, out) == (3, "")
    assert err == (
        "Read 23 bytes from stdin\n"
        f"Error: failed to write secret: guard failed for secret {name!r}: it exists "
        "(active version 1, versions 1); nothing was written\n"
    )
    assert server.db.get(SUPERUSER, name).value == VALUE


def test_an_empty_version_list_means_absent(server: LocalServer) -> None:
    """--if-versions "" is "must not exist", as --if-absent."""
    name = fresh()
    assert setec(server, "put", "--if-versions", "", name, stdin=VALUE)[0] == 0
    code, _, err = setec(server, "put", "--if-versions", "", name, stdin=VALUE + b"2")
    assert code == 3
    assert "it exists (active version 1, versions 1)" in err


def test_each_command_takes_the_guards(server: LocalServer) -> None:
    """create-version, activate, delete-version and delete go through when their guard
    holds and exit 3 with the current state when it does not."""
    name = fresh()
    assert setec(server, "put", name, stdin=VALUE)[0] == 0
    assert setec(server, "put", name, stdin=VALUE + b"2")[0] == 0
    code, _, err = setec(server, "activate", "--if-active-version", "2", name, "2")
    assert code == 3
    assert "its active version is 1 (expected 2); nothing was written" in err
    assert err.startswith("Error: failed to set active version: guard failed for secret")
    assert setec(server, "activate", "--if-active-version", "1", name, "2")[0] == 0

    code, _, err = setec(server, "create-version", "--if-versions", "1", name, "5", stdin=VALUE)
    assert code == 3
    assert f'Error: failed to create secret "{name}" version 5: guard failed' in err
    assert "its versions are 1, 2 (expected 1)" in err
    code, out, _ = setec(server, "create-version", "--if-versions", "2,1", name, "5", stdin=VALUE)
    assert (code, out) == (0, f'Secret saved as "{name}", version 5 (now active)\n')

    code, _, err = setec(server, "delete-version", "-y", "--if-versions", "1,2", name, "1")
    assert code == 3
    assert f'Error: failed to delete secret "{name}" version 1: guard failed' in err
    assert setec(server, "delete-version", "-y", "--if-versions", "1,2,5", name, "1")[0] == 0

    code, _, err = setec(server, "delete", "-y", "--if-active-version", "2", name)
    assert code == 3
    assert f'Error: failed to delete secret "{name}": guard failed' in err
    code, _, err = setec(
        server, "delete", "-y", "--if-active-version", "5", "--if-versions", "2,5", name
    )
    assert code == 0
    assert err == f'Deleted secret "{name}" (versions 2, 5)\n'


def test_a_missing_secret_is_said_to_be_missing(server: LocalServer) -> None:
    """A guard expecting a secret that is not there says it does not exist."""
    code, _, err = setec(server, "activate", "--if-active-version", "1", fresh(), "2")
    assert code == 3
    assert "it does not exist; nothing was written" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--if-active-version", "x"), '"x" is not a version: give a whole number from 0'),
        (("--if-active-version", "-1"), '"-1" is not a version'),
        (("--if-active-version", "4294967296"), '"4294967296" is not a version'),
        (("--if-versions", "1,x"), '"x" in "1,x" is not a version'),
        (("--if-versions", "0"), '"0" in "0" is not a version'),
        (("--if-versions", "1,2,1"), '"1,2,1" names version 1 twice'),
        (("--if-absent", "--if-versions", "1"), "--if-absent cannot be combined"),
    ],
)
def test_bad_guard_options_are_usage_errors(
    server: LocalServer, args: tuple[str, ...], message: str
) -> None:
    """A guard option that is not a version (list) is exit 2, naming the value, before
    anything is sent."""
    code, _, err = setec(server, "activate", *args, fresh(), "1")
    assert code == 2
    assert message in err


def test_a_server_without_guards_is_refused_before_the_value_is_read(
    go_like_server: GoLikeServer,
) -> None:
    """Against a Go server a guarded put exits 1 with the UnsupportedError line, having
    asked only /api/extensions and read no value."""
    code, out, err = setec(go_like_server.url, "put", "--if-absent", "x", stdin=VALUE)
    assert (code, out) == (1, "")
    assert err == (
        f"Error: {go_like_server.url} does not offer a write guarded by an expected version "
        "(its API has no 'cas' extension: a Go setec server, or an older setec for "
        "Python); nothing was sent\n"
    )
    assert go_like_server.seen == ["/api/extensions"]
